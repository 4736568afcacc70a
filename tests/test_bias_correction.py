"""Bias correction of weight rounding: with calibration activity, each layer's integer bias
absorbs the mean current its rounded 8-bit weights add, so the deployed net's mean input
current per neuron equals the source's (up to the bias's own rounding)."""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch

from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.ir.synapses import apply_synapse
from lmh_deploy.models.architectures import build
from lmh_deploy.passes.bias_correction import correctable
from lmh_deploy.passes.compose import synapse_paths
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.pipeline.compile import mean_counts
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
        w = qd.weight_mant / qd.weight_scale if integer else path.weights
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
