"""``--model FILE.py:FACTORY`` imports FILE.py where it is, as ``python FILE.py`` would: a
builder inside the user's clone of the paper's code (``from utils import *``,
``from Models.Net import *``) compiles, verifies and runs from any working directory, and a
model file changed or gone since compile is refused in one line."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lmh_deploy.cli import app

runner = CliRunner()

UTILS = """
import torch
from torch import nn


class LearnableNeuron(nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        self.v_threshold = nn.Parameter(torch.tensor([scale]), requires_grad=False)
        self.alpha_1 = nn.Parameter(torch.tensor([0.3]))
        self.beta_1 = nn.Parameter(torch.tensor([-0.2]))
        self.alpha_2 = nn.Parameter(torch.tensor([0.1]))
        self.beta_2 = nn.Parameter(torch.tensor([0.4]))
        self.t = 0

    def forward(self, x):
        if self.t == 0:
            self.v_d = torch.zeros_like(x)
            self.v_s = 0.5 * self.v_threshold * torch.ones_like(x)
        self.t += 1
        self.v_d = (self.alpha_1.sigmoid() - 0.5) * self.v_d + (self.beta_1.sigmoid() - 0.5) * self.v_s + x
        self.v_s = (self.alpha_2.sigmoid() + 0.5) * self.v_s + (self.beta_2.sigmoid() + 0.5) * self.v_d
        out = (self.v_s >= self.v_threshold).float() * self.v_threshold
        self.v_s = self.v_s - out
        return out

    def reset(self):
        self.t = 0


def replace_relu_by_Lneuron(model):
    for name, child in model._modules.items():
        if isinstance(child, nn.ReLU):
            model._modules[name] = LearnableNeuron()
        elif child is not None:
            replace_relu_by_Lneuron(child)
    return model
"""

NET = """
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Sequential(nn.Linear(4 * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        out = self.pool(self.features(x))
        return self.fc(out.view(out.size(0), -1))
"""

BUILDER = """
from utils import *


def snn(hidden=32):
    from Models.Net import Net  # imported when called: the folder stays on sys.path

    return replace_relu_by_Lneuron(Net(hidden))
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def clone(tmp_path: Path) -> Path:
    """A user's clone: utils.py, Models/Net.py and the builder file, plus the weights."""
    root = tmp_path / "STBP_LMH"
    (root / "Models").mkdir(parents=True)
    (root / "utils.py").write_text(UTILS)
    (root / "Models" / "Net.py").write_text(NET)
    (root / "deploy_builder.py").write_text(BUILDER)
    sys.path.insert(0, str(root))
    try:
        from Models.Net import Net  # type: ignore[import-not-found]
        from utils import replace_relu_by_Lneuron  # type: ignore[import-not-found]

        torch.manual_seed(0)
        model = replace_relu_by_Lneuron(Net())
        with torch.no_grad():
            model.features[0].weight.mul_(3.0)
        torch.save(model.state_dict(), root / "checkpoint.pt")
    finally:
        sys.path.remove(str(root))
        for name in ("utils", "Models", "Models.Net"):
            sys.modules.pop(name, None)
    return root


def test_builder_in_its_clone_compiles_verifies_and_runs_from_elsewhere(
    clone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    # another project's `utils` imported before must not stand in for the clone's
    monkeypatch.setitem(sys.modules, "utils", types.ModuleType("utils"))
    builder = Path("..") / ".." / "STBP_LMH" / "deploy_builder.py"
    out = tmp_path / "build"
    common = ["--input-shape", "1,8,8", "--timesteps", "4", "--dataset", "digits", "-o", out]
    res = invoke("compile", clone / "checkpoint.pt", "--model", f"{builder}:snn", *common)
    assert res.exit_code == 0, res.output
    source = json.loads((out / "ir.json").read_text())["meta"]["source"]
    assert source["model_file"] == str((clone / "deploy_builder.py").resolve())
    assert len(source["model_file_sha256"]) == 64
    assert str(clone) not in sys.path and isinstance(sys.modules["utils"], types.ModuleType)
    assert not hasattr(sys.modules["utils"], "LearnableNeuron")  # the other `utils` is back
    monkeypatch.chdir(tmp_path)
    res = invoke("verify", out, "--samples", "3", "--json", tmp_path / "verify.json")
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "verify.json").read_text())
    assert result["float_vs_fixed"]["float_reference"].startswith("source module")
    assert result["lava_vs_sim"]["mismatched_spikes"] == 0
    res = invoke("run", out, "--samples", "3")
    assert res.exit_code == 0, res.output


def test_model_file_changed_or_gone_since_compile_is_refused(clone: Path, tmp_path: Path) -> None:
    out = tmp_path / "build"
    builder = clone / "deploy_builder.py"
    res = invoke(
        "compile",
        clone / "checkpoint.pt",
        "--model",
        f"{builder}:snn",
        "--input-shape",
        "1,8,8",
        "--timesteps",
        "4",
        "--dataset",
        "digits",
        "-o",
        out,
    )
    assert res.exit_code == 0, res.output
    builder.write_text(BUILDER + "\n# edited after compile\n")
    for command in ("verify", "run"):
        res = invoke(command, out, "--samples", "2")
        assert res.exit_code == 2, res.output
        assert f"{builder}: changed since" in res.output and "recompile" in res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    builder.unlink()
    res = invoke("verify", out, "--samples", "2")
    assert res.exit_code == 2 and f"{builder}: the model file" in res.output and "is gone" in res.output
