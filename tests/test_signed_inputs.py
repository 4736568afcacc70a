"""Signed real-valued inputs (normalised images, values below 0) through every stage.

Calibration inputs with a negative value make the input signed: 16-bit messages
-32767..32767 under profile ``lmh`` (8-bit -127..127 under ``loihi-lif``; any width 2..24 with
``input_bits``) standing for ``[-x_max, x_max]`` (docs/fixed-point.md §7). Each frontend (a
foreign module traced by torch.fx, our own checkpoint, a NIR file) compiles with negative
calibration data; sim/ and Lava fixed_pt agree bit for bit on negative inputs, Lava
floating_pt equals the float IR, netx carries them (tests/test_netx_artifact.py), and the
deployed network agrees with its source model. Non-negative inputs keep their unsigned 8 bits.
The tests that need no Lava (the quantisation rule, non-finite calibration) are in
tests/test_signed_inputs_lava_free.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from lmh_deploy.sim import simulate

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.errors import InputError
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.pipeline.compile import compile_model, load_artifact
from lmh_deploy.pipeline.compile_torch import compile_module
from lmh_deploy.pipeline.inputs import quantize
from lmh_deploy.backends.lava.run import run_lava

sys.path.insert(0, str(Path(__file__).parent))
from shared import digits_mlp_checkpoint, invoke, paper_clone
from test_foreign_torch import randomise
from test_lava_equivalence import assert_bit_exact
from test_golden_vectors import SIGNED_16BIT_TRACE, SIGNED_16BIT_X, signed_16bit_first_layer
from test_nir import hand_made_conv_graph
from test_signed_inputs_lava_free import normalised

T = 4


@pytest.fixture(scope="module")
def fx_build(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """The paper's style residual conv net (zero-padded convs), compiled on normalised inputs."""
    torch.manual_seed(0)
    model = randomise(paper_clone("resnet", width=4))
    out = tmp_path_factory.mktemp("signed") / "fx"
    compile_module(model, out, input_shape=(1, 8, 8), timesteps=T, calibration=normalised(32, (1, 8, 8)))
    return model, out


def test_fx_module_signed_inputs_lava_equals_sim_and_source(fx_build) -> None:
    model, out = fx_build
    art = load_artifact(out)
    q = art.quant_graph
    assert art.float_graph.node("input").signed and q.node("input").signed
    assert q.node("input").bits == art.float_graph.node("input").bits == 16
    assert art.report["input"] == {
        "bits": 16,
        "signed": True,
        "range": [-32767, 32767],
        "unit": pytest.approx(art.float_graph.node("input").x_max / 32767),
    }
    assert art.manifest["input_bits"] == 16
    x = normalised(48, (1, 8, 8), seed=1)
    x_int = quantize(q, x)
    assert x_int.min() < -20000 and x_int.max() > 20000
    assert_bit_exact(q, x_int[:2], T)
    # The float reference backends on the same negative inputs: Lava floating_pt (inputs in
    # units of the input step, unrounded) gives the float IR's spikes.
    lava_float = run_lava(art.float_graph, x[:2] / art.float_graph.node("input").unit, T, "floating_pt")
    ir2 = simulate_float(art.float_graph, x[:2], T)
    for name, spikes in ir2.spikes.items():
        np.testing.assert_array_equal(lava_float.spikes[name], spikes, err_msg=name)
    # The float IR reproduces the source module on the same negative inputs exactly; the
    # deployed integers agree with it up to 8-bit rounding.
    src = run_source(model, x, T, source_neurons=art.float_graph.meta["source_neurons"])
    ir = simulate_float(art.float_graph, x, T)
    for name, spikes in src.spikes.items():
        np.testing.assert_array_equal(ir.spikes[name], spikes, err_msg=name)
    fixed = simulate(q, x_int, T)
    agree = np.mean([np.mean(fixed.spikes[n] == s) for n, s in src.spikes.items()])
    assert agree > 0.95, agree
    assert np.mean(fixed.predictions == src.predictions) >= 0.85


def _agreement(source, fixed) -> tuple[float, float]:
    """Mean spike agreement over the source's layers, and prediction agreement."""
    spikes = float(np.mean([np.mean(fixed.spikes[n] == s) for n, s in source.spikes.items()]))
    return spikes, float(np.mean(fixed.predictions == source.predictions))


def test_own_checkpoint_with_signed_calibration(tmp_path: Path) -> None:
    from lmh_deploy.backends.float.torch_model import run_float

    ckpt = digits_mlp_checkpoint(tmp_path / "m.pt", T)
    np.save(tmp_path / "calib.npy", normalised(16, (64,)))
    report = compile_model(ckpt, tmp_path / "build", calibration=tmp_path / "calib.npy")
    assert report["calibration"]["samples"] == 16
    art = load_artifact(tmp_path / "build")
    q = art.quant_graph
    assert q.node("input").signed and q.node("input").scale == pytest.approx(32767 / (0.52 / 0.2), rel=0.01)
    x = normalised(40, (64,), seed=2)
    assert_bit_exact(q, quantize(q, x[:3]), T)
    spikes, predictions = _agreement(run_float(art.load_model(), x, T), simulate(q, quantize(q, x), T))
    assert spikes > 0.95 and predictions >= 0.85, (spikes, predictions)


def test_nir_file_with_signed_calibration(tmp_path: Path) -> None:
    from lmh_deploy.backends.float.nir_graph import run_nir_reference

    g = hand_made_conv_graph(seed=3)
    nir.write(tmp_path / "conv.nir", g)
    np.save(tmp_path / "calib.npy", normalised(16, (1, 8, 8)))
    compile_model(tmp_path / "conv.nir", tmp_path / "build", timesteps=T, calibration=tmp_path / "calib.npy")
    art = load_artifact(tmp_path / "build")
    q = art.quant_graph
    assert q.node("input").signed
    x = normalised(40, (1, 8, 8), seed=3)
    assert_bit_exact(q, quantize(q, x[:2]), T)
    source = run_nir_reference(
        g, x, T, float(art.float_graph.meta["dt"]), source_neurons=art.float_graph.meta["source_neurons"]
    )
    spikes, predictions = _agreement(source, simulate(q, quantize(q, x), T))
    assert spikes > 0.95 and predictions >= 0.85, (spikes, predictions)
    # The signed input range travels through a NIR export and back.
    from lmh_deploy.frontends.nir import nir_to_graph
    from lmh_deploy.interop.nir_export import write_nir

    write_nir(art.float_graph, tmp_path / "again.nir", dt=float(art.float_graph.meta["dt"]))
    again = nir_to_graph(tmp_path / "again.nir").node("input")
    assert again.signed and again.bits == 16


def test_input_bits_keyword_and_flag(tmp_path: Path) -> None:
    """``input_bits`` (API) / ``--input-bits`` (CLI) sets the width, signed or not; what no
    message can carry is one line, exit 2, nothing written."""
    from lmh_deploy import api

    ckpt = digits_mlp_checkpoint(tmp_path / "m.pt", T)
    x = normalised(16, (64,))
    np.save(tmp_path / "calib.npy", x)
    np.save(tmp_path / "pixels.npy", np.clip(x * 0.2 + 0.48, 0, 1))
    for calib, bits, signed in (("calib.npy", 10, True), ("pixels.npy", 12, False)):
        out = tmp_path / f"b{bits}"
        report = api.compile(ckpt, out, calibration=tmp_path / calib, input_bits=bits)
        art = load_artifact(out)
        q = art.quant_graph
        levels = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        assert (q.node("input").bits, q.node("input").signed, report["input"]["bits"]) == (bits, signed, bits)
        assert q.node("input").scale == pytest.approx(levels / art.float_graph.node("input").x_max)
        x_int = quantize(q, np.load(tmp_path / calib))
        assert levels // 2 < np.abs(x_int).max() <= levels
        assert_bit_exact(q, x_int[:2], T)
    with pytest.raises(
        InputError, match=r"^--input-bits 1: signed inputs \(values below 0\) need at least 2 bits$"
    ):
        api.compile(ckpt, tmp_path / "one", calibration=tmp_path / "calib.npy", input_bits=1)
    assert not (tmp_path / "one").exists()
    res = invoke(
        "compile", ckpt, "--calibration", tmp_path / "calib.npy", "--input-bits", "25", "-o", tmp_path / "x"
    )
    assert res.exit_code == 2 and "--input-bits" in res.output and "24" in res.output, res.output
    assert not (tmp_path / "x").exists()


def test_signed_16bit_first_layer_current_golden_on_lava() -> None:
    """Lava fixed_pt gives the hand-derived readout current of
    test_golden_vectors.py::test_signed_16bit_first_layer_current_golden (-607206 at both
    steps, logit -1214412) from a signed 16-bit input."""
    from lmh_deploy.passes.quantize import quantize_graph

    q, _ = quantize_graph(signed_16bit_first_layer())
    lava = run_lava(q, q.node("input").quantize(SIGNED_16BIT_X), 2)
    assert lava.readout_trace.tolist() == SIGNED_16BIT_TRACE
    assert lava.logits.tolist() == [[-1214412]]
