"""Bias correction of weight rounding: with calibration activity, each layer's integer bias
absorbs the mean current its rounded 8-bit weights add, so the deployed net's mean input
current per neuron equals the source's (up to the bias's own rounding)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.ir import Dense, Graph, Input, Readout
from lmh_deploy.ir.synapses import MANT_DTYPE, DenseChain, apply_synapse
from lmh_deploy.models.architectures import build
from lmh_deploy.passes.bias_correction import correctable
from lmh_deploy.passes.compose import path_matrix, synapse_paths
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.pipeline.compile import mean_counts
from lmh_deploy.pipeline.inputs import quantize
from lmh_deploy.pipeline.run import run_backend
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import get_profile
from shared import plain_lmh


def _cnn_graph():
    torch.manual_seed(2)
    model = build("cnn", (1, 8, 8), 10, timesteps=4, width_mult=0.25)
    for mod in model.modules():
        if hasattr(mod, "running_mean"):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.1, 0.3)
    return export_model(model.eval(), input_shape=(1, 8, 8), timesteps=4)


def _mean_current(q, graph, layer: str, counts: dict[str, np.ndarray], integer: bool):
    """Mean input current + bias per neuron of ``layer`` (float units) for given counts."""
    total = 0.0
    for path in synapse_paths(graph, layer):
        qd = q.node(path.name)
        w = qd.weight_mant / qd.weight_scale if integer else path_matrix(path.weights)
        x = counts[path.source]
        if path.conv is not None:
            total = total + apply_synapse(dataclasses.replace(path.conv, weight=w), x[None])[0]
        else:
            total = total + np.asarray((sp.csr_matrix(w) if sp.issparse(w) else w) @ x).ravel()
    node = q.node(layer)
    bias = node.bias / node.state_scale if integer else graph.node(layer).bias
    return total + bias


def test_corrected_bias_cancels_the_mean_rounding_current() -> None:
    graph = _cnn_graph()
    x = np.random.default_rng(0).random((16, 1, 8, 8))
    counts = mean_counts(graph, x, 4)
    assert 0 < counts["lmh0"].mean() < 1 and 0 < counts["lmh1"].mean() < 1
    plain, _ = quantize_graph(graph)
    fixed, report = quantize_graph(graph, mean_counts=counts)
    assert set(report["bias_correction"]["layers"]) == {"lmh0", "lmh1", "readout"}
    for name in plain.of_kind("q_dense"):  # only biases change
        a, b = fixed.node(name).weight_mant, plain.node(name).weight_mant
        assert (abs(a - b).max() if sp.issparse(a) else np.abs(a - b).max()) == 0, name
    for layer in ("lmh0", "lmh1"):
        want = _mean_current(fixed, graph, layer, counts, integer=False)
        before = np.abs(_mean_current(plain, graph, layer, counts, integer=True) - want)
        after = np.abs(_mean_current(fixed, graph, layer, counts, integer=True) - want)
        # what is left is the bias's own rounding: half a state unit
        assert after.max() <= 0.5 / fixed.node(layer).state_scale + 1e-12, layer
        assert before.max() > 20 * after.max(), layer


def test_pool_then_dense_in_row_blocks_equals_the_whole_matrix(monkeypatch) -> None:
    """avgpool -> fc composes to a full matrix, which is never held whole as floats (a
    DenseChain, here cut into blocks of 7 rows): the mantissas, rounding currents, corrected
    biases and report equal those of the whole composed CSR bit for bit, the mantissas stored
    dense in int16."""
    import lmh_deploy.passes.compose as compose
    from lmh_deploy.ir import AvgPool
    from lmh_deploy.passes.bias_correction import rounding_current
    from lmh_deploy.passes.weights import quantize_joint

    rng = np.random.default_rng(4)
    graph = Graph(meta={"timesteps": 4})
    graph.add("input", Input(shape=(4, 16, 16), x_max=1.0))
    graph.add("pool", AvgPool(input_shape=(4, 16, 16), kernel=(2, 2), stride=(2, 2)), ("input",))
    graph.add("fc", Dense(weight=rng.normal(size=(60, 256))), ("pool",))
    graph.add("readout", Readout(bias=rng.normal(size=60)), ("fc",))
    counts = {"input": rng.random(1024) * 200}
    monkeypatch.setattr(DenseChain, "BLOCK_ENTRIES", 7 * 1024)
    runs = {}
    for route in ("blocks", "whole"):
        if route == "whole":  # the composed CSR, as a chain without a Dense composes
            monkeypatch.setattr(compose, "composes_dense", lambda graph, chain: False)
        paths = synapse_paths(graph, "readout")
        mants, scale, _ = quantize_joint(paths)
        current = rounding_current(paths, mants, scale, counts)
        runs[route] = (paths[0].weights, mants[0], current, *quantize_graph(graph, mean_counts=counts))
    (chain, mant, current, q, report), (csr, whole_mant, whole_current, q_whole, report_whole) = runs.values()
    assert isinstance(chain, DenseChain) and sp.issparse(csr)
    assert isinstance(mant, np.ndarray) and mant.dtype == MANT_DTYPE
    assert np.array_equal(mant, whole_mant.toarray())
    assert np.array_equal(current, whole_current)  # the same sums, term by term in order
    assert report == report_whole
    assert np.array_equal(q.node("fc").weight_mant, q_whole.node("fc").weight_mant)
    assert np.array_equal(q.node("readout").bias, q_whole.node("readout").bias)


def test_no_calibration_no_correction() -> None:
    graph = _cnn_graph()
    q, report = quantize_graph(graph)
    assert "bias_correction" not in report
    again, _ = quantize_graph(graph, mean_counts=None)
    for name in q.of_kind("q_lmh"):
        np.testing.assert_array_equal(q.node(name).bias, again.node(name).bias)


def test_soma_bias_with_current_decay_is_left_alone() -> None:
    """loihi-lif adds the bias to the soma: exact only without current decay (mu_d = 0)."""
    lif = plain_lmh(3, lam_s=np.full((1, 1), 0.9))
    cuba = dataclasses.replace(lif, mu_d=np.full((1, 1), 0.5))
    assert correctable(lif, get_profile("loihi-lif")) and correctable(cuba, get_profile("lmh"))
    assert not correctable(cuba, get_profile("loihi-lif"))
    assert fx.WEIGHT_MANT_MAX == 127


def test_compile_switches_bias_correction_off(zoo_checkpoint, tmp_path) -> None:
    """`compile --no-bias-correction`: biases are the source's, rounded; the report says
    nothing was corrected. On (the default), at least one integer bias differs."""
    import json

    from typer.testing import CliRunner

    from lmh_deploy.cli import app
    from lmh_deploy.pipeline.compile import load_artifact

    ckpt = zoo_checkpoint("mlp", "lmh")
    biases = {}
    for flag in ("--bias-correction", "--no-bias-correction"):
        out = tmp_path / flag
        res = CliRunner().invoke(app, ["compile", str(ckpt), "-o", str(out), flag])
        assert res.exit_code == 0, res.output
        report = json.loads((out / "compile_report.json").read_text())
        assert ("bias_correction" in report) == (flag == "--bias-correction")
        q = load_artifact(out).quant_graph
        biases[flag] = {n: np.asarray(q.node(n).bias) for n in q.of_kind("q_lmh")}
    assert any(
        not np.array_equal(biases["--bias-correction"][n], biases["--no-bias-correction"][n])
        for n in biases["--no-bias-correction"]
    )


def test_compile_measurements_in_mini_batches_equal_the_whole_set() -> None:
    """Calibration and the bias correction's counts run in mini-batches (memory bounded at
    paper scale): any batch size gives what one pass over every sample gives."""
    from lmh_deploy.backends.float.ir import simulate_float
    from lmh_deploy.pipeline.compile import calibrate

    graph = _cnn_graph()
    x = np.random.default_rng(3).random((10, 1, 8, 8))
    whole = simulate_float(graph, x, 4)
    counts = mean_counts(graph, x, 4, batch_size=3)
    for name, spikes in whole.spikes.items():
        assert spikes.sum() > 0
        np.testing.assert_allclose(counts[name], spikes.reshape(-1, spikes.shape[-1]).mean(0), rtol=1e-12)
    q, _ = quantize_graph(graph, mean_counts=counts)
    one = calibrate(q, x, 4, batch_size=len(x))
    assert calibrate(q, x, 4, batch_size=3) == one and calibrate(q, x, 4, batch_size=1) == one
    assert all(layer["max_abs_v_s"] > 0 for layer in one["layers"].values())


# --------------------------------------------------------------------------- hand-derived corrections


def _two_neuron_graph() -> Graph:
    """2 spike inputs -> 2 LM-H neurons (theta 2) -> 1 readout, weights whose 8-bit roundings
    are derived by hand below."""
    g = Graph(meta={"timesteps": 2})
    g.add("input", Input(shape=(2,), spikes=True))
    g.add("dense0", Dense(weight=np.array([[1.0, 0.3], [0.5, -0.2]])), ("input",))
    g.add("lmh0", plain_lmh(2, theta=2.0, bias=np.array([0.1, -0.1])), ("dense0",))
    g.add("dense1", Dense(weight=np.array([[0.5, 0.15]])), ("lmh0",))  # x theta: [1.0, 0.3]
    g.add("readout", Readout(bias=np.zeros(1)), ("dense1",))
    return g


def test_corrections_by_hand_in_thresholds_and_logits() -> None:
    """Scale 127 / max|W| = 127: mantissas [[127, 38], [64, -25]] (63.5 rounds to even),
    errors [[0, -0.1], [0.5, 0.4]] / 127 per spike; with mean counts (1/2, 1/4) the neurons'
    mean rounding currents are -0.025 / 127 and 0.35 / 127. The exponent is 11 (worst row
    2 * 165 << 11 = 675840 <= 2**20), so the state scale is 2**12 * 127 = 520192."""
    counts = {"input": np.array([0.5, 0.25]), "lmh0": np.array([0.5, 0.5])}
    q, report = quantize_graph(_two_neuron_graph(), mean_counts=counts)
    assert q.node("dense0").weight_mant.tolist() == [[127, 38], [64, -25]]
    assert q.node("lmh0").state_scale == 520192.0
    # (bias - error) * S = [0.1 * S + 0.025 * 4096, -0.1 * S - 0.35 * 4096] = [52121.6, -53452.8]
    assert q.node("lmh0").bias.tolist() == [52122, -53453]
    # the readout's one error: (38 / 127 - 0.3) * 1/2 = -0.05 / 127 logits; bias 0.05 * 4096
    assert q.node("readout").bias.tolist() == [205]
    assert report["bias_correction"]["layers"] == {
        "lmh0": pytest.approx(0.35 / 127 / 2, rel=1e-12),  # in thresholds
        "readout": pytest.approx(0.05 / 127, rel=1e-12),  # in logits
    }
    assert report["bias_correction"]["what"] == (
        "mean rounding current of the 8-bit weights on the calibration inputs, taken off each "
        "layer's bias; largest change per layer, in thresholds (the readout: in logits)"
    )


def _lif_readout_graph(weight: list[list[float]], bias: list[float]) -> Graph:
    """One spike input -> LIF neurons (weight 1, no bias) -> a readout with ``weight``."""
    n = len(weight[0])
    g = Graph(meta={"timesteps": 2})
    g.add("input", Input(shape=(1,), spikes=True))
    g.add("dense0", Dense(weight=np.ones((n, 1))), ("input",))
    g.add("lif", plain_lmh(n, reset="set", threshold_test=">", v_s_init=0.0), ("dense0",))
    g.add("dense1", Dense(weight=np.array(weight)), ("lif",))
    g.add("readout", Readout(bias=np.array(bias)), ("dense1",))
    return g


#: loihi-lif's largest readout weight scale for a bias of 1: the bias mantissa is 12 bits and
#: signed (4095) and the readout's state scale is 2 * weight scale; 0.999 keeps a margin.
_CAP = 0.999 * 4095 / 2


def test_loihi_lif_readout_at_its_bias_cap_is_corrected_in_place() -> None:
    """The 8-bit scale 127 / 0.05 is over the cap, so the weights sit at it: mantissa
    round(0.05 * 2045.45) = 102. Class 0's bias (the largest) has no rounding error, so the
    corrected bias keeps the cap exactly where it was: accepted as is (cap <= cap)."""
    counts = {"input": np.ones(1), "lif": np.ones(2)}
    q, report = quantize_graph(
        _lif_readout_graph([[0.0, 0.0], [0.05, 0.0]], [1.0, 0.0]), "loihi-lif", mean_counts=counts
    )
    assert q.node("dense1").weight_mant.tolist() == [[0, 0], [102, 0]]
    assert q.node("dense1").weight_scale == _CAP
    error = 102 / _CAP - 0.05  # -0.000133 logits
    assert q.node("readout").bias.tolist() == [round(2 * _CAP), round(-error * 2 * _CAP)] == [4091, 1]
    assert report["bias_correction"]["layers"]["readout"] == pytest.approx(-error, rel=1e-12)


def test_loihi_lif_readout_over_its_bias_cap_is_refit_then_corrected() -> None:
    """As above, but class 0 carries both the bias 1 and the rounding error e0 = 102 / cap -
    0.05 < 0: its corrected bias 1 - e0 lowers the cap below the scale. The weights are refit
    at cap / (1 - e0) * (1 - e0) / (1 - e0 + |e0|) = cap / (1 + 2 |e0|): mantissa still 102,
    error e1 = 102 / scale - 0.05, and 1 - e1 fits: the bias is round((1 - e1) * 2 * scale)."""
    counts = {"input": np.ones(1), "lif": np.ones(2)}
    q, report = quantize_graph(
        _lif_readout_graph([[0.05, 0.0], [0.0, 0.0]], [1.0, 0.0]), "loihi-lif", mean_counts=counts
    )
    e0 = 102 / _CAP - 0.05
    scale = _CAP / (1 + 2 * abs(e0))
    e1 = 102 / scale - 0.05
    assert q.node("dense1").weight_mant.tolist() == [[102, 0], [0, 0]]
    assert q.node("dense1").weight_scale == pytest.approx(scale, rel=1e-12)
    assert q.node("readout").bias.tolist() == [round((1 - e1) * 2 * scale), 0] == [4090, 0]
    assert report["bias_correction"]["layers"]["readout"] == pytest.approx(-e1, rel=1e-12)


def test_loihi_lif_readout_whose_refits_keep_failing_stays_uncorrected() -> None:
    """Three refits at most: here each new rounding's correction lifts the largest bias over
    the cap again (found by a random search), so the bias stays the source's, rounded at
    the last scale, and the report lists no correction for the readout. (The third refit
    is not looked at again: a fourth look would accept it here.)"""
    weight = [
        [0.0002268, 0.01372, 0.0092, -0.004984, 0.0174],
        [0.004777, 0.01446, 0.006049, 0.007779, -0.007423],
    ]
    bias = [-0.6986, 0.07707]
    counts = {"input": np.ones(1), "lif": np.array([47.93, 27.01, 0.3844, 31.29, 37.82])}
    q, report = quantize_graph(_lif_readout_graph(weight, bias), "loihi-lif", mean_counts=counts)
    assert "readout" not in report["bias_correction"]["layers"]
    scale = q.node("dense1").weight_scale
    assert scale < _CAP / 0.6986  # refit below the first cap
    assert q.node("readout").bias.tolist() == np.round(np.array(bias) * 2 * scale).astype(int).tolist()


def test_cuba_layer_under_loihi_lif_keeps_its_zero_bias_with_calibration() -> None:
    """A soma bias with current decay is not corrected (it would not act as a constant
    current) and loihi-lif refuses any bias there: calibration must leave the layer alone."""
    g = _lif_readout_graph([[0.5, -0.3]], [0.2])
    g.replace("lif", mu_d=np.full((1, 1), 0.5))
    q, report = quantize_graph(g, "loihi-lif", mean_counts={"input": np.ones(1), "lif": np.array([0.5, 0.5])})
    assert set(report["bias_correction"]["layers"]) == {"readout"}
    assert q.node("lif").bias.tolist() == [0, 0]


# --------------------------------------------------------------------------- a silent input's class


def _spike_readout_graph(weight: list[list[float]], bias: list[float]) -> Graph:
    """2 spike inputs -> a 2-class readout with ``weight`` and ``bias``."""
    g = Graph(meta={"timesteps": 2})
    g.add("input", Input(shape=(2,), spikes=True))
    g.add("dense0", Dense(weight=np.array(weight)), ("input",))
    g.add("readout", Readout(bias=np.array(bias)), ("dense0",))
    return g


#: the readout's state scale below: 8-bit scale 127 / max|W| = 127, exponent 11 (worst row
#: 2 * (127 + 38) << 11 = 675840 <= 2**20 < 2 * 165 << 12), so S = 2 * 2**11 * 127
_S = 520192
#: (38 / 127 - 0.3) * 1/2 * S = -0.05 * 4096 = -204.8: the row with 0.3 gets +204.8, rounded 205
_COUNTS = {"input": np.array([0.5, 0.5])}


@pytest.mark.parametrize(
    "weight, bias_int, corrected, expected",
    [
        # no bias: a silent input ties, class 0 wins; the correction goes to class 0: kept
        ([[1.0, 0.3], [1.0, 0.0]], [0, 0], True, [205, 0]),
        # ... to class 1: class 1 would win the silent input: not corrected, the tie stays
        ([[1.0, 0.0], [1.0, 0.3]], [0, 0], False, [0, 0]),
        # the edge: class 0's bias 205 and class 1's corrected 205 tie, class 0 still wins
        ([[1.0, 0.0], [1.0, 0.3]], [205, 0], True, [205, 205]),
        # one state unit less and class 1 would win: not corrected
        ([[1.0, 0.0], [1.0, 0.3]], [204, 0], False, [204, 0]),
    ],
)
def test_readout_correction_keeps_the_class_of_a_silent_input(
    weight: list[list[float]], bias_int: list[int], corrected: bool, expected: list[int]
) -> None:
    """Where nothing reaches the readout (a silent hidden layer) the source's logits are its
    bias; the corrected integer bias must predict the same class (argmax, the first of
    equal logits), else the readout keeps the source's bias and the report says why."""
    graph = _spike_readout_graph(weight, [b / _S for b in bias_int])
    q, report = quantize_graph(graph, mean_counts=_COUNTS)
    assert q.node("dense0").weight_mant.tolist() == np.round(np.array(weight) * 127).astype(int).tolist()
    assert q.node("readout").state_scale == _S
    assert q.node("readout").bias.tolist() == expected
    layers, skipped = report["bias_correction"]["layers"], report["bias_correction"].get("not_corrected")
    if corrected:
        assert layers == {"readout": pytest.approx(0.05 / 127, rel=1e-12)} and skipped is None
    else:
        assert layers == {}
        assert skipped == {"readout": "its correction would change the class that a silent input predicts"}
    # sim/ on a silent input predicts the float readout's class
    silent = quantize(q, np.zeros((1, 2)))
    assert run_backend(q, silent, 2, "sim").predictions.tolist() == [int(np.argmax(bias_int))]


def test_silent_class_of_a_leaky_readout_follows_its_filter() -> None:
    """A leaky readout (norse's LICell) sums the filtered bias: with a negative gain the
    smallest bias wins a silent input; ties go to the first class."""
    from lmh_deploy.passes.bias_correction import silent_class

    plain = Readout(bias=np.array([0.0, 2.0, 2.0]))
    assert silent_class(plain, plain.bias, 4) == 1
    assert silent_class(plain, np.zeros(3), 4) == 0
    leaky = Readout(bias=plain.bias, leaky=np.array([0.5, 0.9, -1.0]))
    assert silent_class(leaky, leaky.bias, 4) == 0
