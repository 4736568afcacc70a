"""Integer graphs are validated at every stage boundary: quantize's output, load_graph,
lower (fixed_pt) and simulate refuse an invalid graph in one line naming the node."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lmh_deploy.backends.lava.lower import lower
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.ir import (
    Dense,
    Graph,
    IRError,
    QDense,
    load_graph,
    save_graph,
    validate_any,
    validate_quantized,
)
from lmh_deploy.models.architectures import build, mlp
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate


@pytest.fixture(scope="module")
def mlp_q() -> Graph:
    torch.manual_seed(3)
    model = mlp((6,), 3, hidden=(5,), timesteps=3, factors="radical").eval()
    q, _ = quantize_graph(export_model(model, input_shape=(6,), timesteps=3))
    return q


@pytest.fixture(scope="module")
def resnet_q() -> Graph:
    torch.manual_seed(0)
    model = build("resnet20", (1, 8, 8), 4, timesteps=2, width_mult=0.25).eval()
    q, _ = quantize_graph(export_model(model, input_shape=(1, 8, 8), timesteps=2))
    return q


def test_quantized_graphs_are_valid(mlp_q: Graph, resnet_q: Graph) -> None:
    validate_quantized(mlp_q)
    validate_quantized(resnet_q)  # convolutions, pooling folded in, delayed shortcuts
    assert any(resnet_q.node(n).delay for n in resnet_q.of_kind("q_dense"))
    assert any(resnet_q.node(n).is_conv for n in resnet_q.of_kind("q_dense"))


def _with(g: Graph, name: str, **changes) -> Graph:
    out = g.copy()
    out.replace(name, **changes)
    return out


def _set(g: Graph, name: str, field: str, index, value) -> Graph:
    arr = getattr(g.node(name), field).copy()
    arr[index] = value
    return _with(g, name, **{field: arr})


BROKEN = {
    "mantissa": (
        lambda g: _set(g, "dense0", "weight_mant", (0, 0), 128),
        r"dense0: weight_mant=128 outside its integer range \[-127, 127\]",
    ),
    "float mantissa": (
        lambda g: _with(g, "dense0", weight_mant=g.node("dense0").weight_mant * 1.0),
        r"dense0: weight_mant must be integer, got float64",
    ),
    "exponent": (
        lambda g: _with(g, "dense1", weight_exp=fx.WEIGHT_EXP_MAX + 1),
        r"dense1: weight_exp=16 outside its integer range \[-8, 15\]",
    ),
    "delay": (lambda g: _with(g, "dense1", delay=-1), r"dense1: delay=-1 outside"),
    "graded": (
        lambda g: _with(g, "dense1", graded=True),
        r"edge 'lmh0' -> 'dense1': graded=True but the source is a q_lmh node",
    ),
    "weight scale": (
        lambda g: _with(g, "dense0", weight_scale=float("nan")),
        r"dense0: weight_scale must be finite and > 0",
    ),
    "theta 0": (lambda g: _with(g, "lmh0", theta=0), r"lmh0: threshold theta=0 outside"),
    "theta wide": (
        lambda g: _with(g, "lmh0", theta=fx.STATE_MAX + 1),
        r"lmh0: threshold theta=8388608 outside its integer range \[1, 8388607\]",
    ),
    "theta float": (
        lambda g: _with(g, "lmh0", theta=1000.5),
        r"lmh0: threshold theta must be integer, got float64",
    ),
    "factor code": (
        lambda g: _set(g, "lmh0", "mu_s", (0, 0), fx.FACTOR_MAX + 1),
        r"lmh0: factor mu_s \(profile lmh\)=2048 outside its integer range "
        r"\[-2048, 2047\]",
    ),
    "lambda code": (
        lambda g: _set(g, "lmh0", "lam_s", (0, 0), 6144),
        r"lmh0: factor lam_s \(profile lmh\)=6144 outside its integer range "
        r"\[2048, 6143\]",
    ),
    "loihi-lif rules": (
        lambda g: _with(g, "lmh0", profile="loihi-lif"),
        r"lmh0: numeric profile loihi-lif cannot express reset 'subtract'",
    ),
    "loihi-lif code": (
        lambda g: _set(
            _with(g, "lmh0", profile="loihi-lif", reset="set", threshold_test=">", v_s_init=0),
            "lmh0",
            "mu_s",
            (0, 0),
            5,
        ),
        r"lmh0: factor mu_s \(profile loihi-lif\)=5 outside .*\[0, 0\]",
    ),
    "profile": (
        lambda g: _with(g, "lmh0", profile="loihi"),
        r"lmh0: unknown numeric profile 'loihi' \(known: lmh, loihi-lif, cuba\)",
    ),
    "rule": (lambda g: _with(g, "lmh0", reset="zero"), r"lmh0: reset 'zero' is not one of subtract \| set"),
    "factor rows": (
        lambda g: _with(g, "lmh0", lam_d=np.full((1, 1), 4096, np.int64)),
        r"lmh0: factor lam_d must be \(K, 1\) or \(K, 5\) with the same K",
    ),
    "bias": (
        lambda g: _set(g, "lmh0", "bias", 2, fx.STATE_MIN - 1),
        r"lmh0: bias=-8388609 outside its integer range",
    ),
    "bias shape": (
        lambda g: _with(g, "lmh0", bias=np.zeros(4, np.int64)),
        r"lmh0: bias shape \(4,\) != \(5,\)",
    ),
    "state scale": (lambda g: _with(g, "lmh0", state_scale=0.0), r"lmh0: state_scale must be finite and > 0"),
    "readout bias": (
        lambda g: _set(g, "readout", "bias", 0, fx.STATE_MAX + 1),
        r"readout: bias=8388608 outside",
    ),
    "input bits": (lambda g: _with(g, "input", bits=25), r"input: bits=25 outside .*\[1, 24\]"),
    "size": (
        lambda g: _with(g, "dense1", weight_mant=np.ones((3, 4), np.int64)),
        r"edge 'lmh0' -> 'dense1': q_dense expects 4 inputs, source gives 5",
    ),
    "float node": (
        lambda g: _float_node(g),
        r"dense1: node kind 'dense' is not supported in an integer graph",
    ),
}


def _float_node(g: Graph) -> Graph:
    out = g.copy()
    out.nx_graph.nodes["dense1"]["node"] = Dense(weight=np.ones((3, 5)))
    return out


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validate_quantized_names_the_node(mlp_q: Graph, case: str) -> None:
    mutate, match = BROKEN[case]
    with pytest.raises(IRError, match=match):
        validate_quantized(mutate(mlp_q))


def test_sparse_and_conv_mantissas_are_range_checked(resnet_q: Graph) -> None:
    conv = next(n for n in resnet_q.of_kind("q_dense") if resnet_q.node(n).is_conv)
    kernel = resnet_q.node(conv).weight_mant.copy()
    kernel[0, 0, 0, 0] = -200
    with pytest.raises(IRError, match=rf"{conv}: weight_mant=-200 outside"):
        validate_quantized(_with(resnet_q, conv, weight_mant=kernel))
    with pytest.raises(
        IRError,
        match=rf"{conv}: conv weight has 1 input channels, input shape "
        r"is \(9, 8, 8\)",
    ):
        validate_quantized(_with(resnet_q, conv, conv_input_shape=(9, 8, 8)))
    m = sp.csr_matrix(np.array([[1, 0], [0, 300]], np.int64))
    node = QDense(weight_mant=m, weight_exp=0, graded=False, weight_scale=1.0)
    with pytest.raises(IRError, match=r"d: weight_mant=300 outside"):
        node.check("d")


def test_load_graph_validates_what_it_reads(tmp_path, mlp_q: Graph) -> None:
    save_graph(mlp_q, tmp_path, "quantized")
    validate_any(load_graph(tmp_path, "quantized"))
    doc = json.loads((tmp_path / "quantized.json").read_text())
    lmh = next(e for e in doc["nodes"] if e["name"] == "lmh0")
    lmh["fields"]["theta"] = -5
    (tmp_path / "quantized.json").write_text(json.dumps(doc))
    with pytest.raises(
        IRError, match=r"quantized\.json: node 'lmh0': theta: input should be greater than or equal to 1"
    ):
        load_graph(tmp_path, "quantized")
    lmh["fields"]["theta"] = "12"
    (tmp_path / "quantized.json").write_text(json.dumps(doc))
    with pytest.raises(
        IRError,
        match=r"quantized\.json: node 'lmh0': theta: input should be a valid integer \(got '12'\)",
    ):
        load_graph(tmp_path, "quantized")
    lmh["fields"]["theta"] = 12
    lmh["inputs"] = ["nowhere"]
    (tmp_path / "quantized.json").write_text(json.dumps(doc))
    with pytest.raises(IRError, match=r"quantized\.json: edge 'nowhere' -> 'lmh0': unknown source"):
        load_graph(tmp_path, "quantized")
    del lmh["fields"]
    (tmp_path / "quantized.json").write_text(json.dumps(doc))
    with pytest.raises(IRError, match=r"quantized\.json: node 'lmh0': fields: field required"):
        load_graph(tmp_path, "quantized")
    # A tampered array file: a mantissa outside 8 bits.
    save_graph(mlp_q, tmp_path, "q2")
    with np.load(tmp_path / "q2.npz") as npz:
        arrays = dict(npz)
    arrays["dense0/weight_mant"] = arrays["dense0/weight_mant"] * 3
    np.savez(tmp_path / "q2.npz", **arrays)
    with pytest.raises(IRError, match=r"q2\.json: dense0: weight_mant=-?\d+ outside"):
        load_graph(tmp_path, "q2")


def test_lower_and_simulate_refuse_an_invalid_graph(mlp_q: Graph) -> None:
    bad = _with(mlp_q, "lmh0", theta=0)
    x = np.zeros((1, 6), np.int64)
    with pytest.raises(IRError, match=r"^lmh0: threshold theta=0 outside"):
        simulate(bad, x, 3)
    with pytest.raises(IRError, match=r"^lmh0: threshold theta=0 outside"):
        simulate(bad, x, 3, device="cpu")
    with pytest.raises(IRError, match=r"^lmh0: threshold theta=0 outside"):
        lower(bad, x, 3, "fixed_pt")
    simulate(mlp_q, x, 3)  # the valid graph runs


def test_float_reference_and_loihi2_map_refuse_invalid_graphs(mlp_q: Graph) -> None:
    from lmh_deploy.backends.float.ir import simulate_float
    from lmh_deploy.passes.loihi2_map import map_to_loihi2

    with pytest.raises(IRError, match=r"^lmh0: threshold theta=0 outside"):
        map_to_loihi2(_with(mlp_q, "lmh0", theta=0))
    torch.manual_seed(3)
    graph = export_model(mlp((6,), 3, hidden=(5,), timesteps=3).eval(), input_shape=(6,), timesteps=3)
    bad = _with(graph, "dense0", weight=np.full((5, 6), np.nan))
    with pytest.raises(IRError, match=r"^dense0: weight has a non-finite value nan"):
        simulate_float(bad, np.zeros((1, 6)), 3)
