"""``--model FILE.py:FACTORY`` imports FILE.py where it is, as ``python FILE.py`` would: a
builder inside the user's clone of the paper's code (``from utils import *``,
``from Models.ResNet import ...``) compiles, verifies and runs from any working directory, and a
model file changed or gone since compile is refused in one line."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from shared import PAPER_CLONE, compile_source, invoke, paper_clone

BUILDER = """
from utils import *


def snn(width=4):
    from Models.ResNet import resnet20  # imported when called: the folder stays on sys.path

    ann = replace_activation_by_QCFS(resnet20(width=width, in_channels=1), 4, 1.0)
    return replace_QCFS_by_Lneuron(ann, False, False, 4)
"""


@pytest.fixture()
def clone(tmp_path: Path) -> Path:
    """A user's clone (a copy of tests/paper_clone) with their builder file and the weights."""
    root = tmp_path / "STBP_LMH"
    shutil.copytree(PAPER_CLONE, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "deploy_builder.py").write_text(BUILDER)
    torch.manual_seed(0)
    model = paper_clone("resnet", width=4)  # the same network, built by the clone's digits_model.py
    with torch.no_grad():
        model.conv1[0].weight.mul_(3.0)
    torch.save(model.state_dict(), root / "checkpoint.pt")
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
    compile_source(clone / "checkpoint.pt", f"{builder}:snn", out)
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
    compile_source(clone / "checkpoint.pt", f"{builder}:snn", out)
    builder.write_text(BUILDER + "\n# edited after compile\n")
    for command in ("verify", "run"):
        res = invoke(command, out, "--samples", "2")
        assert res.exit_code == 2, res.output
        assert f"{builder}: changed since" in res.output and "recompile" in res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    builder.unlink()
    res = invoke("verify", out, "--samples", "2")
    assert res.exit_code == 2 and f"{builder}: the model file" in res.output and "is gone" in res.output
