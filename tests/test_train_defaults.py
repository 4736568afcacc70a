"""Training defaults are defined once (TrainJob): the CLI, the API, the demo and the training
loop's TrainConfig read them from there."""

from __future__ import annotations

import dataclasses
import inspect
from enum import Enum

from lmh_deploy import api, cli
from lmh_deploy.models.job import DEFAULT_JOB, TrainJob
from lmh_deploy.models.train import TrainConfig


def _plain(value):
    value = getattr(value, "default", value)  # a typer OptionInfo
    if isinstance(value, Enum):
        return value.value
    return None if value is None else str(value) if hasattr(value, "as_posix") else value


def test_every_train_default_is_trainjobs() -> None:
    job = {f.name: getattr(DEFAULT_JOB, f.name) for f in dataclasses.fields(TrainJob)}
    api_defaults = {
        k: _plain(p.default) for k, p in inspect.signature(api.train).parameters.items() if k != "progress"
    }
    assert api_defaults == job
    cli_defaults = {
        ("out" if k == "out_path" else k): _plain(p.default)
        for k, p in inspect.signature(cli.train).parameters.items()
    }
    assert cli_defaults == job
    demo = {k: _plain(p.default) for k, p in inspect.signature(cli.demo).parameters.items()}
    assert demo["epochs"] == job["epochs"] and demo["timesteps"] == job["timesteps"]
    for name in ("epochs", "lr", "weight_decay", "loss", "seed"):
        assert getattr(TrainConfig(), name) == job[name], name
