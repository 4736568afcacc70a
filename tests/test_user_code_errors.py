"""An exception inside the user's own model code is their bug: one line naming their file and
line (exit 2), not an lmh-deploy traceback asking for a bug report; our own bugs still show
their traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lmh_deploy.cli import app
from lmh_deploy.errors import UserCodeError
from lmh_deploy.pipeline.user_code import users_code

CLONE = Path(__file__).parent / "paper_clone"
runner = CliRunner()

MODEL_FILE = f"""
import os
import sys

from torch import nn

sys.path.insert(0, {str(CLONE)!r})
import digits_model


class Fragile(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.net = digits_model.mlp(hidden=hidden)

    def forward(self, x):
        if os.environ.get("LMH_TEST_BREAK_MODEL"):
            raise RuntimeError("scaling table missing")
        return self.net(x)


def broken_factory(hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), undefined_layer())


def refusing_factory(hidden=16):
    raise ValueError("hidden must be a multiple of 8")
"""


@pytest.fixture()
def model_file(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "my_model.py"
    path.write_text(MODEL_FILE)
    torch.manual_seed(0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_model_for_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    weights = tmp_path / "w.pt"
    torch.save(module.Fragile().state_dict(), weights)
    return path, weights


def compile_args(weights: Path, spec: str, out: Path, *extra: str) -> list[str]:
    return [
        "compile",
        str(weights),
        "--model",
        spec,
        *extra,
        "--input-shape",
        "1,8,8",
        "--timesteps",
        "2",
        "--dataset",
        "digits",
        "-o",
        str(out),
    ]


@pytest.mark.parametrize(
    "factory, extra, expected",
    [
        (
            "broken_factory",
            (),
            r"my_model\.py:\d+ in broken_factory: NameError: name "
            r"'undefined_layer' is not defined",
        ),
        (
            "refusing_factory",
            (),
            r"my_model\.py:\d+ in refusing_factory: ValueError: hidden must "
            r"be a multiple of 8",
        ),
        (
            "Fragile",
            ("--model-kwargs", '{"hiden": 8}'),
            r"TypeError: .*unexpected keyword "
            r"argument 'hiden'",
        ),
    ],
)
def test_errors_in_the_factory_name_the_users_file(
    model_file, tmp_path: Path, factory: str, extra: tuple, expected: str
) -> None:
    path, weights = model_file
    out = tmp_path / "build"
    res = runner.invoke(app, compile_args(weights, f"{path}:{factory}", out, *extra))
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "Traceback" not in res.output and "bug in lmh-deploy" not in res.output
    assert re.search(expected, text), text
    assert "raised by your model code" in text
    assert not out.exists()


def test_syntax_error_in_the_model_file(tmp_path: Path, model_file) -> None:
    _, weights = model_file
    bad = tmp_path / "typo.py"
    bad.write_text("def net(:\n    pass\n")
    res = runner.invoke(app, compile_args(weights, f"{bad}:net", tmp_path / "b"))
    assert res.exit_code == 2, res.output
    assert "typo.py:1: SyntaxError" in " ".join(res.output.split())


def test_error_in_forward_during_verify(model_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, weights = model_file
    out = tmp_path / "build"
    res = runner.invoke(app, compile_args(weights, f"{path}:Fragile", out))
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("LMH_TEST_BREAK_MODEL", "1")
    res = runner.invoke(app, ["verify", str(out), "--samples", "4"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "running your model my_model.py" in text
    assert "in forward: RuntimeError: scaling table missing" in text
    assert "Traceback" not in res.output


def test_our_own_bugs_keep_their_traceback(tmp_path: Path) -> None:
    """An exception with no frame in the user's files is not theirs: it passes unchanged."""
    users = tmp_path / "theirs.py"
    users.write_text("")
    with pytest.raises(KeyError), users_code("running your model", [users]):
        {}["missing"]
    with (
        pytest.raises(UserCodeError, match="running your model: RuntimeError"),
        users_code("running your model", [users], always=True),
    ):
        nn.Linear(2, 2)(torch.zeros(3))  # shapes mismatch: raised in torch
