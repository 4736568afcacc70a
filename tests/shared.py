"""Helpers the test modules share (``from shared import ...``; conftest puts tests/ on
``sys.path``): the command line in-process, a foreign model deployed by one command, and the
fake clone of the paper's code (tests/paper_clone) as a user's builder file loads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from click.testing import Result
from typer.testing import CliRunner

from lmh_deploy.cli import app
from lmh_deploy.pipeline.compile_torch import build_from_file

PAPER_CLONE = Path(__file__).parent / "paper_clone"
#: The clone's builder of digits-sized nets (8x8, one channel): ``mlp``, ``resnet``.
DIGITS_MODEL = PAPER_CLONE / "digits_model.py"


def invoke(*args: object) -> Result:
    """``lmh-deploy ARGS`` in-process; an exception that is not a user error propagates."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def invoke_ok(*args: object) -> Result:
    """:func:`invoke`, which must succeed."""
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    return res


def compile_source(
    weights: Path,
    model: str,
    out: Path,
    *,
    input_shape: str = "1,8,8",
    timesteps: int = 4,
    kwargs: Any = None,
) -> Result:
    """``compile WEIGHTS --model FILE.py:FACTORY`` of a digits-sized source model, calibrated on
    digits (``kwargs``: ``--model-kwargs``)."""
    more = ["--model-kwargs", json.dumps(kwargs)] if kwargs else []
    return invoke_ok(
        "compile", weights, "--model", model, *more, "--input-shape", input_shape,
        "--timesteps", timesteps, "--dataset", "digits", "-o", out,
    )  # fmt: skip


def deploy_source(
    model: torch.nn.Module,
    spec: str,
    work: Path,
    *,
    samples: int = 50,
    agreement: float = 0.95,
    **compile: Any,
) -> dict[str, Any]:
    """Save ``model``'s state_dict, compile it with ``--model SPEC`` (:func:`compile_source`),
    verify it on ``samples`` test digits and check the result: Lava equals sim/ spike for spike
    and state for state, and the deployed predictions agree with the source module's on at
    least ``agreement`` of them. Returns verify's JSON."""
    weights, out, report = work / "source.pt", work / "build", work / "verify.json"
    torch.save(model.state_dict(), weights)
    compile_source(weights, spec, out, **compile)
    invoke_ok("verify", out, "--samples", samples, "--json", report)
    result = json.loads(report.read_text())
    lv, ff = result["lava_vs_sim"], result["float_vs_fixed"]
    print(spec, lv, ff)
    assert lv["spikes_compared"] > 0 and lv["mismatched_spikes"] == 0, lv
    assert lv["state_mismatches"] == 0 and lv["readout_mismatches"] == 0, lv
    assert ff["float_reference"].startswith("source module")
    assert ff["prediction_agreement"] >= agreement, ff
    return result


def paper_clone(factory: str, **kwargs: Any) -> Any:
    """``factory(**kwargs)`` of the clone's digits_model.py, imported as lmh-deploy imports a
    user's builder file (its folder first on ``sys.path``); a class gives an instance."""
    return build_from_file(DIGITS_MODEL, factory, kwargs, f"{DIGITS_MODEL.name}:{factory}")
