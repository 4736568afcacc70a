"""End-to-end through the command line: train -> compile -> verify -> run, and bad inputs."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lmh_deploy.cli import app
from shared import invoke, invoke_ok

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e")
    model = work / "model.pt"
    options = ["--arch", "mlp", "--neuron", "lmh", "--timesteps", "4", "--epochs", "6"]
    invoke_ok("train", "--dataset", "digits", *options, "--out", model, "--json", work / "train.json")
    return model


@pytest.fixture(scope="module")
def artifact(trained: Path) -> Path:
    outdir = trained.parent / "build"
    res = invoke("compile", trained, "--target", "lava-sim", "-o", outdir)
    assert res.exit_code == 0, res.output
    return outdir


def test_train_writes_metrics_and_safe_checkpoint(trained: Path) -> None:
    metrics = json.loads((trained.parent / "train.json").read_text())
    assert metrics["epochs"] == 6 and metrics["accuracy"] >= 0.85
    payload = torch.load(trained, weights_only=True)  # loads without unpickling code
    assert payload["arch"] == "mlp" and payload["format_version"] == 1


def test_compile_writes_artifact(artifact: Path) -> None:
    names = {p.name for p in artifact.iterdir()}
    assert {
        "ir.json",
        "ir.npz",
        "quantized.json",
        "quantized.npz",
        "model.pt",
        "compile_report.json",
        "manifest.json",
    } <= names
    report = json.loads((artifact / "compile_report.json").read_text())
    kinds = [layer["kind"] for layer in report["layers"]]
    assert kinds == ["dense", "lmh", "dense", "lmh", "dense"]
    for layer in report["layers"]:
        if layer["kind"] == "lmh":
            assert layer["max_factor_error"] <= 2**-13
            assert report["calibration"]["layers"][layer["name"]]["saturation_events"] == 0
        else:
            assert layer["max_weight_error_rel"] <= 0.5 / 127 + 1e-9
    assert not [p for p in artifact.parent.iterdir() if p.name.startswith(".build.tmp")]


def test_verify_lava_equals_sim_and_fixed_tracks_float(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "verify.json"
    res = invoke("verify", artifact, "--samples", "100", "--json", out)
    assert res.exit_code == 0, res.output
    v = json.loads(out.read_text())
    assert v["samples"] == 100 and v["timesteps"] == 4
    assert v["lava_vs_sim"]["spikes_compared"] == 100 * 4 * 256
    assert v["lava_vs_sim"]["mismatched_spikes"] == 0
    assert v["lava_vs_sim"]["state_mismatches"] == 0
    ff = v["float_vs_fixed"]
    assert ff["accuracy_float"] >= 0.85
    assert ff["accuracy_fixed"] == ff["accuracy_lava"]
    assert ff["spike_agreement"] >= 0.95


def test_verify_own_inputs_with_lava_on_the_first_k(artifact: Path, tmp_path: Path) -> None:
    """--inputs without labels: agreement on every sample (sim), Lava == sim on the first K."""
    from lmh_deploy.pipeline.compile import load_artifact

    x, y = load_artifact(artifact).dataset_split("test")
    np.save(tmp_path / "x.npy", x[:30])
    np.save(tmp_path / "y.npy", y[:30])
    out = tmp_path / "v.json"
    res = invoke("verify", artifact, "--inputs", tmp_path / "x.npy", "--lava-samples", "3", "--json", out)
    assert res.exit_code == 0, res.output
    v = json.loads(out.read_text())
    assert (v["samples"], v["lava_samples"], v["labels"]) == (30, 3, False)
    assert v["lava_vs_sim"]["samples"] == 3 and v["lava_vs_sim"]["spikes_compared"] == 3 * 4 * 256
    assert v["lava_vs_sim"]["mismatched_spikes"] == 0
    ff = v["float_vs_fixed"]
    assert ff["accuracy_float"] is None and ff["prediction_agreement"] >= 0.9
    assert "first 3 samples" in res.output and "all 30 samples" in res.output
    res = invoke(
        "verify", artifact, "--inputs", tmp_path / "x.npy", "--labels", tmp_path / "y.npy",
        "--lava-samples", "0", "--json", out,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    v = json.loads(out.read_text())
    assert v["lava_samples"] == 0 and v["lava_vs_sim"] == {"samples": 0}
    assert v["float_vs_fixed"]["accuracy_fixed"] >= 0.85 and v["float_vs_fixed"]["accuracy_lava"] is None
    assert "Lava not run" in res.output


def test_own_inputs_bad_input_is_one_line_and_writes_nothing(artifact: Path, tmp_path: Path) -> None:
    from lmh_deploy.pipeline.compile import load_artifact

    x, y = load_artifact(artifact).dataset_split("test")
    x, y = x[:10], y[:10]
    files = {
        "nan.npy": np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x),
        "shape.npy": x.reshape(10, 64),
        "x.npy": x,
        "short.npy": y[:9],
        "outside.npy": np.where(np.arange(10) == 4, 10, y),
        "negative.npy": np.where(np.arange(10) == 4, -1, y),
    }
    for name, arr in files.items():
        np.save(tmp_path / name, arr)
    cases = [
        (("--inputs", "nan.npy"), "nan.npy: inputs contain NaN or inf"),
        (("--inputs", "shape.npy"), "shape.npy: inputs have shape (10, 64)"),
        (("--inputs", "x.npy", "--labels", "short.npy"), "short.npy: labels have shape (9,), expected (10,)"),
        (("--inputs", "x.npy", "--labels", "outside.npy"), "outside.npy: label 10 is outside"),
        (("--inputs", "x.npy", "--labels", "negative.npy"), "negative.npy: label -1 is outside"),
        (("--labels", "x.npy"), "--labels needs --inputs"),
    ]
    out = tmp_path / "out.json"
    for command in ("verify", "run"):
        for args, message in cases:
            paths = [str(tmp_path / a) if a.endswith(".npy") else a for a in args]
            res = invoke(command, artifact, *paths, "--json", out)
            assert res.exit_code == 2, (command, args, res.output)
            assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
            assert not out.exists()


def test_fixed_accuracy_within_one_point_on_whole_test_split(artifact: Path, tmp_path: Path) -> None:
    from lmh_deploy.pipeline.compile import load_artifact
    from lmh_deploy.backends.float.torch_model import run_float
    from lmh_deploy.semantics import integer as fx
    from lmh_deploy.sim import simulate

    art = load_artifact(artifact)
    x, y = art.dataset_split("test")
    acc_float = np.mean(run_float(art.load_model(), x, 4).predictions == y)
    x_int = fx.quantize_input(x, art.quant_graph.node("input").scale)
    acc_fixed = np.mean(simulate(art.quant_graph, x_int, 4).predictions == y)
    assert len(y) == 360 and acc_float >= 0.85
    assert abs(acc_fixed - acc_float) <= 0.01


def test_run_reports_per_layer(artifact: Path, tmp_path: Path) -> None:
    for backend in ("sim", "lava"):
        out = tmp_path / f"{backend}.json"
        res = invoke("run", artifact, "--backend", backend, "--samples", "20", "--json", out)
        assert res.exit_code == 0, res.output
        r = json.loads(out.read_text())
        assert [layer["kind"] for layer in r["layers"]] == ["lmh", "lmh", "readout"]
        assert r["totals"]["synops"] > 0 and r["energy_joules"] > 0
    sim, lava = (json.loads((tmp_path / f"{b}.json").read_text()) for b in ("sim", "lava"))
    assert sim["layers"] == lava["layers"] and sim["accuracy"] == lava["accuracy"]


def test_loihi2_target_writes_resources_and_refuses_to_pretend(trained: Path, tmp_path: Path) -> None:
    outdir = tmp_path / "hw"
    assert invoke("compile", trained, "--target", "loihi2", "-o", outdir).exit_code == 0
    res_doc = json.loads((outdir / "resources.json").read_text())
    assert res_doc["cores"] >= 2 and res_doc["chips"] == 1
    assert res_doc["lava_loihi_installed"] is False
    res = invoke("run", outdir, "--backend", "loihi2")
    assert res.exit_code == 1
    assert "lava-loihi" in res.output and "nothing ran on hardware" in res.output


# ---------------------------------------------------------------- bad inputs
class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_files(tmp: Path, good: Path) -> dict[str, tuple[Path, str]]:
    files = {}
    files["missing"] = (tmp / "nope.pt", "no such file")
    (tmp / "empty.pt").write_bytes(b"")
    files["empty"] = (tmp / "empty.pt", "empty")
    (tmp / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    files["random"] = (tmp / "random.pt", "not a readable PyTorch checkpoint")
    data = good.read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    files["truncated"] = (tmp / "truncated.pt", "not a readable PyTorch checkpoint")
    torch.save({"weight": torch.zeros(2, 2)}, tmp / "state_dict.pt")
    files["bare_state_dict"] = (tmp / "state_dict.pt", "bare state_dict")
    torch.save(torch.nn.Linear(2, 2), tmp / "module.pt")
    files["pickled_module"] = (tmp / "module.pt", "arbitrary unpickling")
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp / "future.pt")
    files["future_version"] = (tmp / "future.pt", "unknown format version 99")
    return files


def test_bad_model_files_get_one_clear_line_and_leave_nothing(trained: Path, tmp_path: Path) -> None:
    for case, (path, cause) in _bad_files(tmp_path, trained).items():
        outdir = tmp_path / f"out-{case}"
        res = invoke("compile", path, "-o", outdir)
        assert res.exit_code == 2, (case, res.output)
        lines = [line for line in res.output.strip().splitlines() if line.strip()]
        assert len(lines) == 1, (case, res.output)
        assert str(path.name) in lines[0] and cause in lines[0], (case, lines[0])
        assert not outdir.exists(), case
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".out-{case}")], case


def test_pickle_payload_is_refused_and_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "lmh-deploy/checkpoint", "x": _Payload(marker)}, f)
    torch.save({"format": "lmh-deploy/checkpoint", "x": _Payload(marker)}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        res = invoke("compile", p, "-o", tmp_path / "out")
        assert res.exit_code == 2 and p.name in res.output
    assert not marker.exists()


def test_modified_artifact_is_refused(artifact: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(artifact, copy)
    q = json.loads((copy / "quantized.json").read_text())
    q["meta"]["timesteps"] = 5
    (copy / "quantized.json").write_text(json.dumps(q))
    res = invoke("run", copy, "--backend", "sim", "--samples", "5")
    assert res.exit_code == 2
    assert "quantized.json" in res.output and "modified after compile" in res.output


def test_debug_flag_shows_traceback(tmp_path: Path) -> None:
    res = runner.invoke(app, ["--debug", "compile", str(tmp_path / "missing.pt")])
    assert res.exit_code != 0 and res.exception is not None


def test_run_plots_html_and_report_rebuild(artifact: Path, tmp_path: Path) -> None:
    res = invoke(
        "run",
        artifact,
        "--samples",
        "50",
        "--plots",
        tmp_path / "plots",
        "--html",
        tmp_path / "r.html",
        "--json",
        tmp_path / "r.json",
        "--sweep",
        "1,2,4",
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "r.json").read_text())
    assert [row["timesteps"] for row in summary["t_sweep"]] == [1, 2, 4]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in summary["plots"].values())
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()
    assert invoke("report", tmp_path / "r.json", "--html", tmp_path / "r2.html").exit_code == 0
    (tmp_path / "broken.json").write_text("{not json")
    res = invoke("report", tmp_path / "broken.json", "--html", tmp_path / "r3.html")
    assert res.exit_code == 2 and "broken.json" in res.output and not (tmp_path / "r3.html").exists()


def test_export_nir_netx_and_compile_imported_nir(trained: Path, tmp_path: Path) -> None:
    res = invoke("export", trained, "--format", "nir", "-o", tmp_path / "lmh.nir", "--samples", "20")
    assert res.exit_code == 0 and "NIR has no LM-H neuron" in res.output, res.output
    assert "lmh0: " in res.output and "of spikes differ" in res.output
    lif = tmp_path / "lif.pt"
    assert invoke("train", "--neuron", "lif", "--epochs", "1", "--out", lif).exit_code == 0
    res = invoke("export", lif, "--format", "nir", "-o", tmp_path / "lif.nir", "--samples", "20")
    assert res.exit_code == 0 and "exact" in res.output
    import nir

    graph = nir.read(tmp_path / "lif.nir")
    assert {type(n).__name__ for n in graph.nodes.values()} >= {"Input", "Affine", "LIF", "Output"}
    build = tmp_path / "from_nir"
    res = invoke("compile", tmp_path / "lif.nir", "--dataset", "digits", "--timesteps", "4", "-o", build)
    assert res.exit_code == 0, res.output
    assert (build / "source.nir").exists() and not (build / "model.pt").exists()
    res = invoke("verify", build, "--samples", "20", "--json", tmp_path / "v.json")
    assert res.exit_code == 0, res.output
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["lava_vs_sim"]["mismatched_spikes"] == 0
    res = invoke("export", lif, "--format", "netx", "-o", tmp_path / "lif.net")
    assert res.exit_code == 0 and (tmp_path / "lif.net").stat().st_size > 0
