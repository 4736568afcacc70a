"""Passes as functions graph -> new graph: delay balancing, and the shared helpers they use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.models.architectures import build
from lmh_deploy.passes.delays import balance_delays, layer_depths, path_delays
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.backends.record import spike_agreement_by_layer


@pytest.fixture(scope="module")
def resnet() -> tuple:
    torch.manual_seed(0)
    model = build("resnet20", (1, 8, 8), 4, timesteps=2, width_mult=0.25).eval()
    graph = export_model(model, input_shape=(1, 8, 8), timesteps=2)
    return graph, quantize_graph(graph)


def test_depths_and_delays_agree_on_float_and_integer_graphs(resnet) -> None:
    graph, (q, report) = resnet
    depth_f, depth_q = layer_depths(graph), layer_depths(q)
    assert depth_f == depth_q and depth_f["input"] == 0
    delays = path_delays(q)
    assert delays == path_delays(graph)  # float chains are named after their last node
    assert {n: q.node(n).delay for n in q.of_kind("q_dense")} == delays
    assert max(delays.values()) >= 1 and min(delays.values()) == 0  # shortcuts wait
    starts = {r["name"]: r["start_step"] for r in report["layers"] if r["kind"] == "lmh"}
    assert starts == {n: depth_q[n] for n in q.of_kind("q_lmh")}
    for name in q.of_kind("q_lmh"):  # every path into a layer arrives at the same step
        arrivals = {depth_q[q.inputs_of(p)[0]] + 1 + delays[p] for p in q.inputs_of(name)}
        assert arrivals == {depth_q[name]}


def test_balance_delays_is_a_pass(resnet) -> None:
    _, (q, _) = resnet
    broken = q.copy()
    for name in broken.of_kind("q_dense"):
        broken.replace(name, delay=0)
    fixed = balance_delays(broken)
    assert {n: fixed.node(n).delay for n in q.of_kind("q_dense")} == {
        n: q.node(n).delay for n in q.of_kind("q_dense")
    }
    assert all(broken.node(n).delay == 0 for n in broken.of_kind("q_dense"))  # input untouched


def test_spike_agreement_by_layer() -> None:
    a = {"l0": np.array([[[1, 0, 1, 1]]], bool), "l1": np.zeros((1, 1, 2), bool)}
    b = {"l0": np.array([[[1, 1, 1, 1]]], bool), "l1": np.zeros((1, 1, 2), bool)}
    per_layer, overall = spike_agreement_by_layer(a, b)
    assert per_layer == {"l0": 0.75, "l1": 1.0} and overall == 5 / 6
    with pytest.raises(ValueError, match="layer 'l1' is missing from the reference run"):
        spike_agreement_by_layer({"l0": a["l0"]}, b)
    with pytest.raises(ValueError, match=r"layer 'l1': reference spikes \(1, 1, 2\) vs \(1, 1, 3\)"):
        spike_agreement_by_layer(a, {"l1": np.zeros((1, 1, 3), bool)})
