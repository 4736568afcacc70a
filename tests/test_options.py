"""Shared options are declared once (lmh_deploy/options.py): the CLI's and the API's agree."""

from __future__ import annotations

import inspect

import pytest
import typer.main

from lmh_deploy import api, options
from lmh_deploy.cli import app
from lmh_deploy.errors import InputError

COMMANDS = {c.name: c for c in typer.main.get_command(app).commands.values()}  # type: ignore[attr-defined]


def test_every_cli_use_of_a_shared_option_is_the_declared_one() -> None:
    used = set()
    for command in COMMANDS.values():
        if command.name in ("train", "demo"):  # training options: models/job.py's TrainJob
            continue
        for param in command.params:
            declared = [o for o in options.ALL if o.name == param.name and o.flag in param.opts]
            if not declared:  # an option of this command alone
                continue
            assert any(
                (param.default, param.help) == (o.default, o.help)
                and (isinstance(o.default, bool) or param.metavar == o.metavar)
                for o in declared
            ), (command.name, param.name)
            used.update(id(o) for o in declared if (param.default, param.help) == (o.default, o.help))
    assert used == {id(o) for o in options.ALL}  # no declared option is unused


@pytest.mark.parametrize("function", [api.compile, api.verify, api.run, api.export])
def test_api_defaults_are_the_declared_ones(function) -> None:
    for name, param in inspect.signature(function).parameters.items():
        declared = [o.default for o in options.ALL if o.name == name]
        if declared:
            assert param.default in declared, (function.__name__, name)


def test_checks_name_the_flag() -> None:
    with pytest.raises(InputError, match="--dt"):
        options.DT.check(0.0)
    with pytest.raises(InputError, match="--lava-samples"):
        options.LAVA_SAMPLES.check(-1)
    assert options.LAVA_SAMPLES.check(0) == 0 and options.SAMPLES.check(None) is None


def test_input_bits_limit_is_the_semantics_one() -> None:
    from lmh_deploy.semantics.integer import INPUT_BITS_MAX

    assert options.INPUT_BITS_MAX == INPUT_BITS_MAX
    assert options.INPUT_BITS.check(INPUT_BITS_MAX) == INPUT_BITS_MAX
    with pytest.raises(InputError, match="--input-bits"):
        options.INPUT_BITS.check(INPUT_BITS_MAX + 1)
