"""The CLI in a plain 80-column terminal: help that fits and names what to type, an option
that would do nothing refused in one line, and a closed pipe (``| head``) ending quietly."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lmh_deploy.cli import app

COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]
runner = CliRunner()


def _help(*command: str) -> str:
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_fits_80_columns_and_says_what_to_type(command: str) -> None:
    text = _help(*filter(None, [command]))
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, "\n".join(too_long)
    # typer's own placeholders (<bool>, <str>, <path>, {artifact}) tell nothing
    assert not re.search(r"<\w+>|\{\w+\}", text), text
    # descriptions start in a column that leaves them room (no box-drawn panels)
    assert not re.search(r"[│╭╰]", text)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_value_option_has_a_real_metavar(command: str) -> None:
    cmd = get_command(app).commands[command]  # type: ignore[attr-defined]
    for param in cmd.params:
        if getattr(param, "is_flag", False) or param.name == "help":
            continue
        assert param.metavar and param.metavar.upper() != "TEXT", (command, param.name)


def test_sweep_without_a_figure_to_draw_it_in_is_refused(tmp_path) -> None:
    res = runner.invoke(app, ["run", str(tmp_path / "build"), "--sweep", "1,2"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "--sweep" in lines[0] and "--plots or --html" in lines[0]


def test_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lmh_deploy.cli import app; app()", "train", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == "", err
