"""Intel's netx as the oracle: `train --neuron lif` -> `compile --profile loihi-lif` ->
`export BUILD_DIR --format netx` writes the artifact's integers; the file, loaded by
``netx.hdf5.Network(..., input_message_bits=8)`` and run in Lava fixed_pt, gives the same
hidden spikes (aligned by the netx layer delay), readout values and predictions as sim/."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from lmh_deploy.sim import simulate

from lmh_deploy.interop import InteropError
from lmh_deploy.interop.netx_artifact import artifact_to_netx, run_netx_artifact
from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.semantics import integer as fx
from shared import invoke, invoke_ok

SAMPLES = 6


@pytest.fixture(scope="module")
def lif_build(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("lif")
    model = work / "lif.pt"
    # --norm bn: without it an mlp LIF does not learn digits in a few epochs (BN folds away).
    options = ["--arch", "mlp", "--neuron", "lif", "--norm", "bn", "--timesteps", "4", "--epochs", "2"]
    invoke_ok("train", "--dataset", "digits", *options, "--out", model)
    invoke_ok("compile", model, "--profile", "loihi-lif", "-o", work / "build")
    return work / "build"


def test_compile_records_the_profile(lif_build: Path) -> None:
    report = json.loads((lif_build / "compile_report.json").read_text())
    assert report["profile"]["name"] == "loihi-lif"
    assert report["profile"]["rounding"] == "toward-zero"
    assert json.loads((lif_build / "manifest.json").read_text())["profile"] == "loihi-lif"
    art = load_artifact(lif_build)
    for name in art.quant_graph.of_kind("q_lmh"):
        node = art.quant_graph.node(name)
        assert (node.profile, node.reset, node.threshold_test, node.v_s_init) == ("loihi-lif", "set", ">", 0)


def test_netx_export_of_the_artifact_equals_sim(lif_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "lif.net"
    res = invoke("export", lif_build, "--format", "netx", "-o", out)
    assert res.exit_code == 0, res.output
    art = load_artifact(lif_build)
    q = art.quant_graph
    with h5py.File(out, "r") as f:  # exactly the artifact's integers
        w0 = f["layer"]["0"]["weight"][()]
    dense0 = q.node(q.inputs_of("lmh0")[0])
    np.testing.assert_array_equal(w0, 2 * np.asarray(dense0.weight_mant))
    x, _ = art.dataset_split("test")
    x_int = fx.quantize_input(x[:SAMPLES], q.node("input").scale)
    steps = art.timesteps
    ref = simulate(q, x_int, steps)
    spikes, trace, logits = run_netx_artifact(out, x_int, steps)
    compared = 0
    for name, s in ref.spikes.items():
        np.testing.assert_array_equal(spikes[name], s, err_msg=name)
        compared += s.size
        assert 0 < s.mean() < 1, name
    np.testing.assert_array_equal(trace, ref.readout_trace)
    np.testing.assert_array_equal(logits, ref.logits)
    np.testing.assert_array_equal(logits.argmax(1), ref.logits.argmax(1))
    assert compared == SAMPLES * steps * sum(q.node(n).size for n in q.of_kind("q_lmh"))


def test_netx_export_refuses_other_profiles(tmp_path: Path) -> None:
    from lmh_deploy.models.architectures import mlp

    from lmh_deploy.frontends.pytorch import export_model
    from lmh_deploy.passes.quantize import quantize_graph

    graph = export_model(mlp((6,), 3, hidden=(5,), timesteps=3).eval(), input_shape=(6,), timesteps=3)
    q, _ = quantize_graph(graph)  # lmh profile
    with pytest.raises(InteropError, match=r"lmh0: .*weight exponent|lmh0: profile 'lmh'"):
        artifact_to_netx(q, tmp_path / "x.net")
    assert not (tmp_path / "x.net").exists()


@pytest.mark.parametrize("input_bits", [None, 9])
def test_netx_export_carries_signed_inputs(lif_build: Path, tmp_path: Path, input_bits: int | None) -> None:
    """Normalised (negative) inputs: signed messages of the artifact's width (8 bits by default
    under loihi-lif, whose fixed weight exponent would pay every wider bit with a mantissa
    bit; 9 when asked) reach netx's Dense unchanged; the file and the load line say the width."""
    x = (load_artifact(lif_build).dataset_split("test")[0][:SAMPLES] - 0.45) / 0.25
    np.save(tmp_path / "calib.npy", x)
    build = tmp_path / "signed"
    res = invoke(
        "compile",
        lif_build.parent / "lif.pt",
        "--profile",
        "loihi-lif",
        "--calibration",
        tmp_path / "calib.npy",
        "-o",
        build,
        *(["--input-bits", str(input_bits)] if input_bits else []),
    )
    assert res.exit_code == 0, res.output
    q = load_artifact(build).quant_graph
    bits = input_bits or 8
    assert q.node("input").signed and q.node("input").bits == bits
    res = invoke("export", build, "--format", "netx", "-o", tmp_path / "signed.net")
    assert res.exit_code == 0, res.output
    assert f"input_message_bits={bits}" in res.output
    with h5py.File(tmp_path / "signed.net", "r") as f:
        assert f.attrs["lmh_deploy_input_message_bits"] == bits
    x_int = q.node("input").quantize(x)
    assert x_int.min() < 0 and np.abs(x_int).max() == 2 ** (bits - 1) - 1
    ref = simulate(q, x_int, 4)
    spikes, trace, logits = run_netx_artifact(tmp_path / "signed.net", x_int, 4)
    for name, s in ref.spikes.items():
        np.testing.assert_array_equal(spikes[name], s, err_msg=name)
        assert 0 < s.mean() < 1, name
    np.testing.assert_array_equal(trace, ref.readout_trace)
    np.testing.assert_array_equal(logits, ref.logits)


def test_netx_export_refuses_a_first_layer_left_without_weights(lif_build: Path, tmp_path: Path) -> None:
    """16-bit inputs under loihi-lif (fixed weight exponent 0, |a << 6| <= 2**22): the first
    layer's mantissas must keep 2 * 32767 * sum|m| <= 2**16, so they all round to 0; the
    compile says so in a note, and the export refuses in one line naming the cause."""
    x = (load_artifact(lif_build).dataset_split("test")[0][:SAMPLES] - 0.45) / 0.25
    np.save(tmp_path / "calib.npy", x)
    model, build = lif_build.parent / "lif.pt", tmp_path / "wide"
    res = invoke(
        "compile", model, "--profile", "loihi-lif", "--calibration", tmp_path / "calib.npy",
        "--input-bits", "16", "-o", build,
    )  # fmt: skip
    assert res.exit_code == 0 and "fewer than 16 --input-bits" in res.output, res.output
    res = invoke("export", build, "--format", "netx", "-o", tmp_path / "wide.net")
    assert res.exit_code == 2, res.output
    assert "every weight rounds to 0" in res.output and "fewer --input-bits" in res.output, res.output
    assert not (tmp_path / "wide.net").exists()
