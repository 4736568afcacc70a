"""`lmh-deploy demo` calls the command functions directly, through ``with_defaults``: every
option it does not give gets the command's own default as a plain value (a typer default is
an OptionInfo object, which leaked in as a value once and broke the demo)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import typer

import lmh_deploy.cli as cli

COMMANDS = ("train", "compile", "verify", "run")


def test_with_defaults_gives_each_option_not_given_its_plain_default() -> None:
    seen = {}

    def command(
        path: Path = typer.Argument(...),
        count: int = typer.Option(3, "--count"),
        name: str | None = typer.Option(None, "--name"),
        plain: str = "x",
    ) -> None:
        seen.update(path=path, count=count, name=name, plain=plain)

    cli.with_defaults(command, path=Path("p"), name="n")
    assert seen == {"path": Path("p"), "count": 3, "name": "n", "plain": "x"}


def test_demo_calls_every_command_through_with_defaults() -> None:
    tree = ast.parse(Path(cli.__file__).read_text())
    demo = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "demo")
    calls = [c for c in ast.walk(demo) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)]
    assert not [c.func.id for c in calls if c.func.id in COMMANDS], "a command called without defaults"
    through = [c.args[0].id for c in calls if c.func.id == "with_defaults"]
    assert through == list(COMMANDS)
    for name in COMMANDS:  # every option has a default the demo could take
        for param in inspect.signature(getattr(cli, name)).parameters.values():
            assert param.default is not inspect.Parameter.empty, (name, param.name)
