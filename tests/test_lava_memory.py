"""The Lava backend's memory check: the estimate against the matrices lowering really builds
and the processes a run really starts, and the one-line refusal (or, for verify's default
Lava share, the note) before Lava starts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import lmh_deploy
from lmh_deploy.backends.lava.memory import (
    KERNEL_ENTRY_BYTES,
    LAVA_COPIES,
    LAVA_PROCESS_BYTES,
    lava_need_bytes,
    lava_processes,
    lava_weight_bytes,
)
from lmh_deploy.backends.lava.plan import plan_lowering
from lmh_deploy.models.architectures import build
from shared import invoke


@pytest.fixture(scope="module")
def cnn_build(tmp_path_factory) -> Path:
    """A small conv net (two convolutions, pooling, a dense readout) compiled to an artifact."""
    import torch

    torch.manual_seed(0)
    model = build("cnn", (1, 8, 8), 10, timesteps=3, width_mult=0.25).eval()
    out = tmp_path_factory.mktemp("lava_memory") / "build"
    x = np.random.default_rng(0).random((8, 1, 8, 8)).astype(np.float32)
    lmh_deploy.compile(model, out, input_shape=(1, 8, 8), timesteps=3, calibration=x)
    np.save(out.parent / "x.npy", x[:3])  # the user's inputs for run and verify
    return out


def test_estimate_equals_the_weights_lowering_builds(cnn_build: Path) -> None:
    """Convolutions on Lava's Conv cost their kernel; one forced off it (a negative weight
    exponent, which Conv cannot apply) and the dense readout hold every synapse."""
    from lmh_deploy.backends.lava.lower import _paths

    q = lmh_deploy.load(cnn_build).artifact.quant_graph.copy()
    assert q.node("conv1").weight_exp > 0
    q.replace("conv1", weight_exp=-1)
    conv = plan_lowering(q, "always").conv
    built = synapses = 0
    kinds = set()
    for name in q.order():
        if q.node(name).kind not in ("q_lmh", "q_readout"):
            continue
        for path in _paths(q, name, "fixed_pt", {}, conv):
            w = path.weights
            if path.conv is not None:  # Lava's Conv holds the kernel alone
                kinds.add("conv")
                assert w.size == q.node(path.name).weight_mant.size
                built += w.size * KERNEL_ENTRY_BYTES
            elif sp.issparse(w):  # Lava's Sparse keeps the CSR: entries and column indices
                kinds.add("sparse")
                built += w.data.nbytes + w.indices.nbytes
                synapses += w.nnz
            else:
                kinds.add("dense")
                w = np.asarray(w)
                built += w.size * 8  # lowering hands Lava's Dense int64 entries
                synapses += w.size
    assert kinds == {"conv", "sparse", "dense"}
    assert lava_weight_bytes(q, conv) == (built, synapses)
    assert lava_need_bytes(q, conv) == LAVA_COPIES * built + LAVA_PROCESS_BYTES * lava_processes(q)


def test_process_count_is_the_runs_own(cnn_build: Path) -> None:
    """:func:`lava_processes` counts the OS processes a Lava run of the net starts: its
    Lava Processes' workers and Lava's own (runtime service, shared-memory manager, resource
    tracker), counted as the run's children while it runs."""
    import multiprocessing

    from lmh_deploy.backends.lava import run as lava_run

    q = lmh_deploy.load(cnn_build).artifact.quant_graph
    seen: list[int] = []
    read_back = lava_run.read_back

    def counting(*args, **kwargs):  # the workers are all up while the run reads back
        seen.append(len(multiprocessing.active_children()) + _resource_tracker())
        return read_back(*args, **kwargs)

    lava_run.read_back = counting
    try:
        lava_run.run_lava(q, np.zeros((1, 1, 8, 8), np.int64), 3)
    finally:
        lava_run.read_back = read_back
    assert seen == [lava_processes(q)]


def _resource_tracker() -> int:
    from multiprocessing import resource_tracker

    return int(getattr(resource_tracker._resource_tracker, "_pid", None) is not None)


def test_a_lava_run_that_cannot_fit_is_refused_in_one_line(
    cnn_build: Path, tmp_path: Path, monkeypatch
) -> None:
    import lmh_deploy.sim.batching as batching

    q = lmh_deploy.load(cnn_build).artifact.quant_graph
    least = plan_lowering(q, "always").conv  # what auto falls back to when memory is short
    need = lava_need_bytes(q, least)
    synapses = lava_weight_bytes(q, least)[1]
    monkeypatch.setattr(batching, "available_memory_bytes", lambda: need - 1)
    report = tmp_path / "run.json"
    res = invoke(
        "run", cnn_build, "--backend", "lava", "--inputs", cnn_build.parent / "x.npy", "--json", report
    )
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert f"{synapses:,} synapses" in lines[0] and "--backend sim" in lines[0]
    assert not report.exists()
    res = invoke(
        "verify", cnn_build, "--inputs", cnn_build.parent / "x.npy", "--lava-samples", "1", "--json", report
    )
    assert res.exit_code == 2 and "--lava-samples 1: Lava holds each" in res.output, res.output
    assert not report.exists()
    # forced off Conv, the matrices need more; the refusal names the route that needs less
    never = lava_need_bytes(q, frozenset())
    assert never > need
    monkeypatch.setattr(batching, "available_memory_bytes", lambda: never - 1)
    res = invoke(
        "run", cnn_build, "--backend", "lava", "--lava-conv", "never", "--inputs", cnn_build.parent / "x.npy"
    )
    assert res.exit_code == 2 and "--lava-conv auto runs convolutions on Lava's Conv" in res.output, (
        res.output
    )
    res = invoke("run", cnn_build, "--lava-conv", "never", "--inputs", cnn_build.parent / "x.npy")
    assert res.exit_code == 2 and "--lava-conv never: only the lava backend" in res.output, res.output


def test_verify_by_default_skips_a_lava_run_that_cannot_fit_and_says_why(
    cnn_build: Path, tmp_path: Path, monkeypatch
) -> None:
    import lmh_deploy.sim.batching as batching

    q = lmh_deploy.load(cnn_build).artifact.quant_graph
    need = lava_need_bytes(q, plan_lowering(q, "always").conv)
    monkeypatch.setattr(batching, "available_memory_bytes", lambda: need - 1)
    report = tmp_path / "verify.json"
    res = invoke("verify", cnn_build, "--inputs", cnn_build.parent / "x.npy", "--json", report)
    assert res.exit_code == 0, res.output
    doc = json.loads(report.read_text())
    assert doc["lava_samples"] == 0
    assert doc["ran"]["lava_vs_sim"].startswith("Lava not run: Lava holds each of this network's")
    # with just enough memory the default share runs Lava as before, and Lava == sim
    monkeypatch.setattr(batching, "available_memory_bytes", lambda: need)
    res = invoke("verify", cnn_build, "--inputs", cnn_build.parent / "x.npy", "--json", report)
    assert res.exit_code == 0, res.output
    doc = json.loads(report.read_text())
    assert doc["lava_samples"] == 3 and doc["ran"]["lava_vs_sim"].startswith("Lava fixed_pt and sim/")
    assert doc["lava_vs_sim"]["mismatched_spikes"] == 0
