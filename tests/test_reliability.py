"""Bad values inside well-formed checkpoints, bad run-time inputs, Lava runtime hygiene."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lmh_deploy.cli import app
from lmh_deploy.models.architectures import mlp
from lmh_deploy.models.checkpoint import save_checkpoint

runner = CliRunner()
DATASET = {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "x_max": 1.0, "seed": 0}
ARCH = {"neuron": "lmh", "factors": "progressive", "timesteps": 4, "width_mult": 0.25}


def _checkpoint(path: Path, edit=None) -> Path:
    torch.manual_seed(0)
    model = mlp((1, 8, 8), 10, **ARCH)
    if edit:
        with torch.no_grad():
            edit(model)
    save_checkpoint(path, model, arch="mlp", arch_kwargs=ARCH, dataset=DATASET)
    return path


@pytest.mark.parametrize(
    "case, edit, cause",
    [
        (
            "nan_weight",
            lambda m: m.layers[1].weight.__setitem__((0, 3), float("nan")),
            "dense0: weight has a non-finite value nan at index [0, 3]",
        ),
        (
            "inf_bias",
            lambda m: m.layers[3].bias.__setitem__(2, float("inf")),
            "lmh1: bias has a non-finite value inf",
        ),
        (
            "zero_threshold",
            lambda m: m.layers[2].theta.fill_(0.0),
            "lmh0: threshold theta must be finite and > 0, got 0.0",
        ),
        (
            "negative_threshold",
            lambda m: m.layers[4].theta.fill_(-1.0),
            "lmh1: threshold theta must be finite and > 0, got -1.0",
        ),
        ("saturated_factor_is_accepted_and_clamped", lambda m: m.layers[2].x_lam_s.fill_(60.0), None),
        (
            "nan_factor",
            lambda m: m.layers[4].x_mu_d.fill_(float("nan")),
            "lmh1: mu_d has a non-finite value nan",
        ),
    ],
)
def test_bad_values_are_refused_by_layer(tmp_path: Path, case: str, edit, cause: str) -> None:
    model = _checkpoint(tmp_path / f"{case}.pt", edit)
    outdir = tmp_path / "out"
    res = runner.invoke(app, ["compile", str(model), "-o", str(outdir)])
    if cause is None:  # float32 sigmoid(60) == 1 exactly: lam_s = 1.5 is stored as code 2047
        assert res.exit_code == 0, res.output
        return
    assert res.exit_code == 2, res.output
    assert cause in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not outdir.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_unsupported_layer_is_named_with_supported_list(tmp_path: Path) -> None:
    from lmh_deploy.frontends.pytorch import export_model
    from lmh_deploy.ir import IRError

    model = mlp((1, 8, 8), 10, **ARCH)
    model.layers.insert(2, torch.nn.Tanh())
    with pytest.raises(
        IRError,
        match=r"layers.2 \(Tanh\): unsupported layer type Tanh; "
        r"supported: Flatten, Linear, Conv2d",
    ):
        export_model(model, input_shape=(1, 8, 8), timesteps=4)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("rel")
    model = _checkpoint(work / "model.pt")
    assert runner.invoke(app, ["compile", str(model), "-o", str(work / "build")]).exit_code == 0
    return work / "build"


def test_run_with_user_inputs_and_wrong_shape(artifact: Path, tmp_path: Path) -> None:
    good = tmp_path / "x.npy"
    np.save(good, np.random.default_rng(0).random((6, 1, 8, 8)))
    np.save(tmp_path / "y.npy", np.arange(6) % 10)
    res = runner.invoke(
        app, ["run", str(artifact), "--inputs", str(good), "--labels", str(tmp_path / "y.npy")]
    )
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((6, 64)))
    res = runner.invoke(app, ["run", str(artifact), "--inputs", str(bad)])
    assert res.exit_code == 2
    assert "bad.npy: inputs have shape (6, 64), the network was compiled for (N, 1, 8, 8)" in " ".join(
        res.output.split()
    )
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    res = runner.invoke(app, ["run", str(artifact), "--inputs", str(obj)])
    assert res.exit_code == 2 and "obj.npy: not a readable .npy array" in res.output
    notes = tmp_path / "notes.txt"  # numpy itself says "This file contains pickled (object) data"
    notes.write_text("1, 2, 3\n")
    res = runner.invoke(app, ["run", str(artifact), "--inputs", str(notes)])
    assert res.exit_code == 2 and res.output.strip() == (
        f"error: {notes}: not a .npy file (it does not start with numpy's header); "
        "write the array with numpy.save(path, array)"
    )


def test_failed_lava_run_leaves_no_processes(artifact: Path, monkeypatch) -> None:
    import lmh_deploy.backends.lava.run as run_lava_mod
    from lmh_deploy.pipeline.compile import load_artifact
    from lmh_deploy.semantics import integer as fx

    art = load_artifact(artifact)
    x_int = fx.quantize_input(np.ones((1, 1, 8, 8)), art.quant_graph.node("input").scale)
    before = {p.pid for p in multiprocessing.active_children()}

    def broken_read_back(*args, **kwargs):
        raise RuntimeError("read-back failed on purpose")

    monkeypatch.setattr(run_lava_mod, "read_back", broken_read_back)
    with pytest.raises(RuntimeError, match="on purpose"):
        run_lava_mod.run_lava(art.quant_graph, x_int, 4)
    deadline = time.time() + 10
    while time.time() < deadline:
        leftover = {p.pid for p in multiprocessing.active_children()} - before
        if not leftover:
            break
        time.sleep(0.2)
    assert not leftover


# --- artifact trust: check_artifact, one test per rule (issue 20) -----------------------


def _copy(artifact: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(artifact, tmp_path / "build"))


def _manifest(build: Path) -> dict:
    return json.loads((build / "manifest.json").read_text())


def _rewrite_manifest(build: Path, edit=None) -> None:
    """What a buggy writer or a careless hand leaves: the manifest rewritten to fit."""
    from lmh_deploy.pipeline.artifact import sha256

    doc = _manifest(build)
    doc["files"] = {p.name: sha256(p) for p in sorted(build.iterdir()) if p.name != "manifest.json"}
    if edit:
        edit(doc)
    (build / "manifest.json").write_text(json.dumps(doc))


def _refused(build: Path, match: str) -> None:
    from lmh_deploy.pipeline.artifact import ArtifactError, check_artifact

    with pytest.raises(ArtifactError, match=match):
        check_artifact(build)


def test_trust_rule_the_folder_and_its_manifest_exist(tmp_path: Path) -> None:
    _refused(tmp_path / "nothing", "no such artifact directory")
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "no manifest.json; not an lmh-deploy artifact")


def test_trust_rule_the_manifest_is_an_object_of_this_format(artifact: Path, tmp_path: Path) -> None:
    build = _copy(artifact, tmp_path)
    (build / "manifest.json").write_text("[1, 2]")
    _refused(build, "must be a JSON object, got list")
    (build / "manifest.json").write_text('{"format": "other"}')
    _refused(build, "not an lmh-deploy artifact of version 1")
    (build / "manifest.json").write_text("{not json")
    _refused(build, "unreadable manifest")


def test_trust_rule_files_is_an_object_of_digests(artifact: Path, tmp_path: Path) -> None:
    build = _copy(artifact, tmp_path)
    _rewrite_manifest(build, lambda doc: doc.update(files=sorted(doc["files"])))
    _refused(build, "'files' must be an object of file name -> sha256, got list")
    _rewrite_manifest(build, lambda doc: doc["files"].update({"ir.json": 42}))
    _refused(build, "entry 'ir.json' has no SHA-256 digest")


@pytest.mark.parametrize(
    "name", ["../../../../etc/hostname", "/etc/hostname", "sub/ir.json", ".hidden", "..", ""]
)
def test_trust_rule_entries_are_plain_names_inside_the_folder(
    artifact: Path, tmp_path: Path, name: str
) -> None:
    from lmh_deploy.pipeline.artifact import sha256

    build = _copy(artifact, tmp_path)
    digest = sha256(Path("/etc/hostname")) if Path("/etc/hostname").is_file() else "0" * 64
    _rewrite_manifest(build, lambda doc: doc["files"].update({name: digest}))
    _refused(build, "is not a plain file name inside the folder")


def test_trust_rule_every_file_the_loader_reads_is_listed(artifact: Path, tmp_path: Path) -> None:
    build = _copy(artifact, tmp_path)
    _rewrite_manifest(build, lambda doc: doc.update(files={}))
    _refused(build, "does not list ir.json, which every artifact has")
    (build / "quantized.npz").unlink()
    _rewrite_manifest(build)
    _refused(build, "does not list quantized.npz")


def test_trust_rule_every_file_present_is_listed(artifact: Path, tmp_path: Path) -> None:
    build = _copy(artifact, tmp_path)
    (build / "notes.txt").write_text("added later")
    _refused(build, "notes.txt: not listed in manifest.json")


def test_trust_rule_every_listed_file_is_present(artifact: Path, tmp_path: Path) -> None:
    build = _copy(artifact, tmp_path)
    (build / "compile_report.json").unlink()
    _refused(build, "compile_report.json: listed in manifest.json but missing")


def test_trust_rule_no_links_or_special_files(artifact: Path, tmp_path: Path) -> None:
    import os

    build = _copy(artifact, tmp_path)
    outside = tmp_path / "outside.npz"
    (build / "quantized.npz").rename(outside)
    (build / "quantized.npz").symlink_to(outside)  # same content, same hash, outside the folder
    _refused(build, "quantized.npz: not a regular file")
    (build / "quantized.npz").unlink()
    os.mkfifo(build / "quantized.npz")  # reading it would block forever: never opened
    _refused(build, "quantized.npz: not a regular file")


def test_trust_rule_every_digest_matches(artifact: Path, tmp_path: Path) -> None:
    build = _copy(artifact, tmp_path)
    with open(build / "ir.npz", "ab") as fh:
        fh.write(b"\0")
    _refused(build, "ir.npz: modified after compile")


def _invoke_one_line(*args: str) -> str:
    res = runner.invoke(app, list(args))
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    return lines[0]


def test_regression_other_weights_with_their_manifest_line_deleted_are_refused(
    artifact: Path, tmp_path: Path
) -> None:
    build = _copy(artifact, tmp_path)
    other = tmp_path / "other.npz"
    np.savez(other, w=np.ones(3))
    other.replace(build / "quantized.npz")
    _rewrite_manifest(build, lambda doc: doc["files"].pop("quantized.npz"))
    for command in ("run", "verify"):
        assert "does not list quantized.npz" in _invoke_one_line(command, str(build), "--samples", "2")
    _rewrite_manifest(build, lambda doc: doc.update(files={}))
    assert "does not list" in _invoke_one_line("run", str(build), "--samples", "2")


def test_regression_wrong_array_shape_is_one_line(artifact: Path, tmp_path: Path) -> None:
    build = _copy(artifact, tmp_path)
    with np.load(build / "quantized.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    key = next(k for k in arrays if k.endswith("weight_mant"))
    arrays[key] = arrays[key][:, :-1]
    np.savez(build / "quantized.npz", **arrays)
    _rewrite_manifest(build)
    assert "quantized.json" in _invoke_one_line("run", str(build), "--samples", "2")


def test_regression_manifest_whose_files_is_a_list_is_one_line(artifact: Path, tmp_path: Path) -> None:
    build = _copy(artifact, tmp_path)
    _rewrite_manifest(build, lambda doc: doc.update(files=sorted(doc["files"])))
    assert "'files' must be an object" in _invoke_one_line("run", str(build))


# --- outputs never destroy data (issue 20): the careless user's commands ------------------


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_regression_compile_never_replaces_a_users_folder_a_file_or_its_input(
    artifact: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = Path(artifact).parent / "model.pt"
    (tmp_path / "m.pt").write_bytes(model.read_bytes())
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    (tmp_path / "existing.txt").write_text("hi")
    before = _tree(tmp_path)
    cases = {
        "notes": "folder holds 1 entry and is not an lmh-deploy artifact (todo.txt)",
        "m.pt": "-o m.pt: is an input of this command",
        "existing.txt": "is a file, not a folder; lmh-deploy never replaces it",
        ".": "holds m.pt, an input of this command",
    }
    for out, cause in cases.items():
        assert cause in _invoke_one_line("compile", "m.pt", "-o", out), out
        assert _tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["m.pt", "notes", "existing.txt"]
        )
    assert "not even with --force" in _invoke_one_line("compile", "m.pt", "-o", "existing.txt", "--force")


def test_regression_run_and_verify_never_write_into_the_artifact(artifact: Path, tmp_path: Path) -> None:
    build = _copy(artifact, tmp_path)
    before = _tree(build)
    for option, path in (
        ("--json", build / "quantized.json"),
        ("--save-spikes", build / "model.pt"),
        ("--html", build / "report.html"),
        ("--plots", build),
        ("--plots", build / "plots"),
    ):
        line = _invoke_one_line("run", str(build), "--samples", "2", option, str(path))
        assert option in line and ("inside the lmh-deploy artifact" in line or "input of this" in line), line
    line = _invoke_one_line("verify", str(build), "--samples", "2", "--json", str(build / "ir.json"))
    assert "inside the lmh-deploy artifact" in line
    assert _tree(build) == before


def test_regression_report_paths_that_cannot_be_written_are_one_line(artifact: Path, tmp_path: Path) -> None:
    (tmp_path / "m.pt").write_bytes(b"x")
    assert "m.pt is a file, not a folder" in _invoke_one_line(
        "run", str(artifact), "--json", str(tmp_path / "m.pt" / "r.json")
    )
    assert "cannot write into /proc" in _invoke_one_line("run", str(artifact), "--html", "/proc/x/r.html")
    assert "overlaps --json" in _invoke_one_line(
        "run", str(artifact), "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.json")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_regression_labels_outside_the_classes_are_refused(artifact: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((6, 1, 8, 8)))
    for label, index in ((99, 3), (-1, 3)):
        y = np.arange(6) % 10
        y[index] = label
        np.save(tmp_path / "y.npy", y)
        line = _invoke_one_line(
            "run", str(artifact), "--inputs", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy")
        )
        assert f"y.npy: label {label} is outside the network's 10 classes (labels must be 0..9)" in line


# --- metadata edited inside an artifact (manifest recomputed): one line, nothing written -----


@pytest.mark.parametrize(
    "key, value, cause",
    [
        ("timesteps", 10**9, "meta.timesteps: input should be less than or equal to 1024"),
        ("timesteps", 0, "meta.timesteps: input should be greater than or equal to 1"),
        ("timesteps", -3, "meta.timesteps: input should be greater than or equal to 1"),
        ("timesteps", "four", "meta.timesteps: input should be a valid integer"),
        ("timesteps", float("nan"), "meta.timesteps: input should be a valid integer"),
        ("num_classes", -1, "meta.num_classes: input should be greater than or equal to 1"),
        ("dataset", "imagenet", "meta.dataset: input should be a valid dictionary"),
        ("dataset.name", "imagenet", "meta.dataset.name: unknown 'imagenet'; known: digits"),
    ],
)
def test_regression_bad_meta_is_one_line_before_any_work(
    artifact: Path, tmp_path: Path, key: str, value, cause: str
) -> None:
    build = _copy(artifact, tmp_path)
    doc = json.loads((build / "quantized.json").read_text())
    if key.startswith("dataset."):
        doc["meta"]["dataset"]["name"] = value
    else:
        doc["meta"][key] = value
    (build / "quantized.json").write_text(json.dumps(doc))
    _rewrite_manifest(build)
    report = tmp_path / "r.json"
    for command in ("run", "verify"):
        line = _invoke_one_line(command, str(build), "--samples", "2", "--json", str(report))
        assert "quantized.json: " + cause in line, line
    assert not report.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["run", "nothere"],
        ["verify", "nothere"],
        ["compile", "nothere.pt", "-o", "out"],
        ["export", "nothere.pt", "--format", "nir", "-o", "m.nir"],
        ["report", "nothere.json", "--html", "r.html"],
    ],
)
def test_fast_refusals_import_neither_torch_nor_lava(tmp_path: Path, args: list[str]) -> None:
    # what makes a refusal fast (bench/refusal_time.py measures it): nothing heavy loads first
    import subprocess
    import sys

    code = (
        "import sys\nfrom lmh_deploy.cli import app\ntry:\n    app(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, 'torch' in sys.modules, any(m.split('.')[0] == 'lava' for m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_lava_run_imports_no_torch(artifact: Path, tmp_path: Path) -> None:
    # what keeps `run --backend lava` lean (bench/lava_cifar.py): torch would add its import
    # time and ~125 MB that every one of Lava's forked workers inherits
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((2, 1, 8, 8)))
    code = (
        "import sys\nfrom lmh_deploy.cli import app\ntry:\n    app(sys.argv[1:])\n"
        "except SystemExit as exc:\n    print('exit', exc.code, 'torch' in sys.modules)"
    )
    args = ["run", str(artifact), "--backend", "lava", "--inputs", str(tmp_path / "x.npy")]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.stdout.split()[-3:] == ["exit", "0", "False"], proc.stdout[-2000:] + proc.stderr


def _refused_for_memory(monkeypatch, command: str, artifact: Path, report: Path) -> str:
    """``command ARTIFACT --samples 300`` with 50 kB of memory available: its one-line refusal."""
    import lmh_deploy.sim.batching as batching

    monkeypatch.setattr(batching, "available_memory_bytes", lambda: 50_000)
    line = _invoke_one_line(command, str(artifact), "--samples", "300", "--json", str(report))
    assert "--samples 300: this run would keep about" in line and "run at most --samples " in line
    assert not report.exists()
    return line


def test_a_run_that_cannot_fit_is_refused_naming_the_options(
    artifact: Path, tmp_path: Path, monkeypatch
) -> None:
    # memory estimated from the graph and the sample count before anything is allocated
    report = tmp_path / "r.json"
    line = _refused_for_memory(monkeypatch, "run", artifact, report)
    assert "GiB of memory available" in line and "or pass --stream" in line
    assert runner.invoke(app, ["run", str(artifact), "--samples", "3", "--json", str(report)]).exit_code == 0


def test_a_verify_that_cannot_fit_is_refused_naming_the_option(
    artifact: Path, tmp_path: Path, monkeypatch
) -> None:
    # verify keeps the source's and sim/'s whole records: twice a run's, and it has no --stream
    report = tmp_path / "v.json"
    line = _refused_for_memory(monkeypatch, "verify", artifact, report)
    assert "--stream" not in line
    fits = int(line.split("run at most --samples ")[1].split()[0].rstrip(",;"))
    run_fits = int(
        _invoke_one_line("run", str(artifact), "--samples", "300")
        .split("run at most --samples ")[1]
        .split(",")[0]
    )
    assert abs(2 * fits - run_fits) <= 1  # two records per sample


@pytest.mark.parametrize(
    "args, cause",
    [
        (["run", "build", "--samples", "abc"], "Invalid value for '--samples'"),
        (["run", "build", "--bogus"], "No such option: --bogus"),
        (["run"], "Missing argument 'ARTIFACT'"),
        (["compile", "m.pt", "--target", "gpu"], "Invalid value for '--target'"),
    ],
)
def test_usage_errors_are_one_line_too(args: list[str], cause: str) -> None:
    line = _invoke_one_line(*args)
    assert cause in line and f"(lmh-deploy {args[0]} --help)" in line, line
