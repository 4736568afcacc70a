"""Bad values inside well-formed checkpoints, bad run-time inputs, Lava runtime hygiene."""

from __future__ import annotations

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
