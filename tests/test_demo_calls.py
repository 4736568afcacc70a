"""`lmh-deploy demo` calls the command functions directly: it must pass every parameter, or a
typer default (an OptionInfo object) leaks in as a value (this broke the demo once)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import lmh_deploy.cli as cli


def test_demo_passes_every_parameter_of_the_commands_it_calls() -> None:
    tree = ast.parse(Path(cli.__file__).read_text())
    demo = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "demo")
    calls = {
        c.func.id: {k.arg for k in c.keywords}
        for c in ast.walk(demo)
        if isinstance(c, ast.Call)
        and isinstance(c.func, ast.Name)
        and c.func.id in ("train", "compile", "verify", "run")
    }
    assert set(calls) == {"train", "compile", "verify", "run"}
    for name, passed in calls.items():
        params = set(inspect.signature(getattr(cli, name)).parameters)
        assert params <= passed, f"demo's {name}() call misses {sorted(params - passed)}"
