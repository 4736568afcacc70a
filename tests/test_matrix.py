"""Every command on every zoo architecture, with LM-H and LIF neurons (issue 11).

Each network is trained once per session through the CLI (``zoo_checkpoint``: width 1/8,
one epoch on 32 digits, T = 2). A command either succeeds or refuses BY DESIGN: exit
status != 0, one line, and a cause listed in ``REFUSALS``; anything else fails the test.
The default suite runs a residual LM-H net offline and a LIF MLP through Lava (about a
minute); ``-m slow`` runs the rest of the 5 x 2 x 2 matrix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmh_deploy.cli import app

ARCHS = ("mlp", "cnn", "vgg13", "resnet19", "resnet20")
NEURONS = ("lmh", "lif")
RESIDUAL = ("resnet19", "resnet20")
#: The refusals that are by design, per command; the message must match.
REFUSALS = {
    # LM-H's dendrite and soma coupling has no place in netx's CUBA LIF (NIR writes the
    # nearest LIF); netx layers form a chain (no residual sum); Lava's Conv sums 24 bits exactly
    "export": re.compile(
        r"netx holds only Lava's CUBA LIF|"
        r"synapse paths meet here \(a residual sum\); netx layers form a chain|"
        r"beyond the 24 bits Lava's Conv computes exactly"
    ),
    # Loihi 2 hardware needs Intel's closed lava-loihi
    "run --backend loihi2": re.compile(r"lava-loihi"),
}
#: Pairs whose offline commands (no Lava) run in the default suite; the rest are slow.
#: (tests/test_cli.py runs every command on a trained LM-H MLP already.)
FAST_OFFLINE = {("resnet20", "lmh")}
#: Pairs whose Lava commands (verify, run --backend lava) run in the default suite.
FAST_LAVA = {("mlp", "lif")}

runner = CliRunner()


def _pairs(fast: set[tuple[str, str]]) -> list:
    return [
        pytest.param(a, n, id=f"{a}-{n}", marks=() if (a, n) in fast else (pytest.mark.slow,))
        for a in ARCHS
        for n in NEURONS
    ]


def command(name: str, *args: object) -> str:
    """Run ``lmh-deploy name args``; "ok", or the refusal line (checked to be by design)."""
    res = runner.invoke(app, [*name.split()[:1], *[str(a) for a in args], *name.split()[1:]])
    if res.exit_code == 0:
        return "ok"
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, f"{name}: not a one-line refusal:\n{res.output}"
    pattern = REFUSALS.get(name)
    assert pattern is not None and pattern.search(lines[0]), (
        f"{name}: refused, and not by design:\n{res.output}"
    )
    assert res.exit_code in (1, 2), res.output
    return lines[0]


@pytest.mark.parametrize("arch,neuron", _pairs(FAST_OFFLINE))
def test_offline_commands(arch: str, neuron: str, zoo_checkpoint, tmp_path: Path) -> None:
    model = zoo_checkpoint(arch, neuron)  # train, through the CLI
    build = tmp_path / "build"
    assert command("compile", model, "-o", build, "--calibration-samples", "4") == "ok"
    assert (
        command(
            "compile", model, "-o", tmp_path / "loihi2", "--target", "loihi2", "--calibration-samples", "4"
        )
        == "ok"
    )
    assert (tmp_path / "loihi2" / "resources.json").is_file()
    summaries = {}
    for mode in ("sim", "stream", "device"):
        extra = {"sim": (), "stream": ("--stream",), "device": ("--device", "cpu")}[mode]
        out = tmp_path / f"{mode}.json"
        assert command("run", build, "--samples", "4", "--json", out, *extra) == "ok"
        summaries[mode] = json.loads(out.read_text())
    command("run --backend loihi2", build)
    for mode in ("stream", "device"):  # the same integer run, however it is recorded
        assert summaries[mode]["totals"] == summaries["sim"]["totals"]
    layers = summaries["sim"]["layers"]
    assert summaries["sim"]["totals"]["synops"] == sum(layer["synops"] for layer in layers) > 0
    residual = [layer for layer in layers if "synops_per_path" in layer]
    if arch in RESIDUAL:  # both paths of every residual block are counted
        assert residual and all(len(layer["synops_per_path"]) == 2 for layer in residual)
        assert all(sum(layer["synops_per_path"].values()) == layer["synops"] for layer in residual)
    else:
        assert not residual
    assert command("report", tmp_path / "sim.json", "--html", tmp_path / "r.html") == "ok"
    assert (tmp_path / "r.html").stat().st_size > 0
    nir = command("export", model, "--format", "nir", "-o", tmp_path / "m.nir", "--samples", "4")
    netx = command("export", model, "--format", "netx", "-o", tmp_path / "m.net")
    if (arch, neuron) == ("mlp", "lif"):  # a LIF MLP exports exactly to both
        assert nir == netx == "ok"


@pytest.mark.parametrize("arch,neuron", _pairs(FAST_LAVA))
def test_lava_commands(arch: str, neuron: str, zoo_checkpoint, tmp_path: Path) -> None:
    build = tmp_path / "build"
    assert command("compile", zoo_checkpoint(arch, neuron), "-o", build, "--calibration-samples", "4") == "ok"
    # verify exits 1 on any Lava/sim difference, so "ok" means bit-exact
    assert command("verify", build, "--samples", "2", "--json", tmp_path / "v.json") == "ok"
    assert (
        command("run", build, "--backend", "lava", "--samples", "2", "--json", tmp_path / "lava.json") == "ok"
    )
    assert command("run", build, "--samples", "2", "--json", tmp_path / "sim.json") == "ok"
    lava, sim = (json.loads((tmp_path / f"{b}.json").read_text()) for b in ("lava", "sim"))
    assert lava["totals"] == sim["totals"] and lava["layers"] == sim["layers"]
