"""verify compares logits and predictions (Lava vs sim) and gates on accuracy; run --json
writes predictions and run --save-spikes writes the integer input and every spike raster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.pipeline.verify import accuracy_gate, compare_lava_sim, lava_sim_disagree
from lmh_deploy.backends.record import RunRecord
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate
from shared import digits_mlp_checkpoint, invoke

T = 3


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """A seeded, untrained digits MLP compiled with the default profile (no training needed:
    the tests compare backends, they do not need accuracy)."""
    work = tmp_path_factory.mktemp("verify")
    ckpt = digits_mlp_checkpoint(work / "m.pt", T)
    res = invoke("compile", ckpt, "-o", work / "build", "--calibration-samples", "8")
    assert res.exit_code == 0, res.output
    return work / "build"


def test_verify_compares_logits_and_gates_accuracy(build: Path, tmp_path: Path) -> None:
    res = invoke(
        "verify", build, "--samples", "12", "--json", tmp_path / "v.json", "--max-accuracy-drop", "100"
    )
    assert res.exit_code == 0, res.output
    v = json.loads((tmp_path / "v.json").read_text())
    lv = v["lava_vs_sim"]
    assert lv["logits_compared"] == 12 * 10 and lv["logit_mismatches"] == 0
    assert lv["prediction_mismatches"] == 0
    assert v["accuracy_gate"]["passed"] and v["accuracy_gate"]["max_drop_points"] == 100
    assert "logits: 0 of 120 differ" in " ".join(res.output.split())  # rich wraps at the terminal width
    # A gate no accuracy can meet (fixed 100 points above the source): exits non-zero.
    res = invoke("verify", build, "--samples", "12", "--max-accuracy-drop", "-100")
    assert res.exit_code != 0
    assert "points below the source model's (--max-accuracy-drop -100)" in " ".join(res.output.split())


def test_accuracy_gate_arithmetic() -> None:
    assert accuracy_gate(0.75, 0.5, 25.0)["passed"]  # 25 points: allowed at PP = 25
    assert not accuracy_gate(0.75, 0.5, 24.5)["passed"]
    assert accuracy_gate(0.5, 0.75, 0.0)["drop_points"] == -25.0


def test_a_logit_fault_alone_fails_the_comparison(build: Path) -> None:
    """Same spikes, states and readout trace, readout bias sign flipped in one record: only the
    logits differ, and the comparison now catches it."""
    art = load_artifact(build)
    q = art.quant_graph
    x, _ = art.dataset_split("test")
    rec = simulate(q, fx.quantize_input(x[:5], q.node("input").scale), T)
    bias = q.node("readout").bias
    assert np.any(bias != 0)
    faulty = RunRecord(
        logits=rec.readout_trace.sum(0) - T * bias,
        spikes=rec.spikes,
        final_state=rec.final_state,
        readout_trace=rec.readout_trace,
        saturation=rec.saturation,
    )
    result = {"lava_vs_sim": compare_lava_sim(rec, faulty)}
    assert result["lava_vs_sim"]["mismatched_spikes"] == 0
    assert result["lava_vs_sim"]["readout_mismatches"] == 0
    assert result["lava_vs_sim"]["logit_mismatches"] > 0
    assert lava_sim_disagree(result)


def test_run_json_predictions_and_saved_spikes(build: Path, tmp_path: Path) -> None:
    out = tmp_path / "spikes.npz"
    res = invoke(
        "run", build, "--samples", "7", "--json", tmp_path / "r.json", "--save-spikes", out, "--sweep", "none"
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "r.json").read_text())
    art = load_artifact(build)
    q = art.quant_graph
    x, _ = art.dataset_split("test")
    x_int = fx.quantize_input(x[:7], q.node("input").scale)
    rec = simulate(q, x_int, T)
    assert summary["predictions"] == rec.predictions.tolist()
    with np.load(out, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(["input", *rec.spikes])
        np.testing.assert_array_equal(npz["input"], x_int.reshape(7, -1))
        for name, spikes in rec.spikes.items():
            assert npz[name].dtype == bool and npz[name].shape == (T, 7, q.node(name).size)
            np.testing.assert_array_equal(npz[name], spikes)
    res = invoke("run", build, "--samples", "3", "--stream", "--save-spikes", out, "--sweep", "none")
    assert res.exit_code != 0 and "drop --stream" in " ".join(res.output.split())


def test_compile_refuses_rules_the_profile_cannot_express(build: Path, tmp_path: Path) -> None:
    """An LM-H checkpoint under --profile loihi-lif: one line naming the layer and the rule,
    nothing written; an unknown profile name is refused before any work."""
    ckpt = build.parent / "m.pt"
    res = invoke("compile", ckpt, "--profile", "loihi-lif", "-o", tmp_path / "b")
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "lmh0: numeric profile loihi-lif cannot express reset 'subtract'" in text
    assert not (tmp_path / "b").exists()
    res = invoke("compile", ckpt, "--profile", "loihi", "-o", tmp_path / "b")
    assert res.exit_code == 2 and "unknown numeric profile 'loihi'" in " ".join(res.output.split())
