"""`train --neuron lif` with its defaults learns; a run stuck at chance says so."""

from __future__ import annotations

from pathlib import Path

from lmh_deploy.models.training_job import TrainJob, run_training_job
from typer.testing import CliRunner

from lmh_deploy.cli import app


def test_lif_defaults_train_above_chance(tmp_path: Path) -> None:
    # lam_s = 0.5 with Lava LIF's rules (v from 0, hard reset) left the second layer silent:
    # accuracy stayed at 0.10 for every lr; the LIF default decay is now 0.9.
    metrics = run_training_job(TrainJob(neuron="lif", epochs=4, out=str(tmp_path / "lif.pt")))
    assert metrics["accuracy"] > 0.3 and "warning" not in metrics


def test_training_stuck_at_chance_warns(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["train", "--neuron", "lif", "--epochs", "1", "--lr", "1e-7", "--out", str(tmp_path / "m.pt")],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "is at chance level (1/10 = 0.100): the network did not learn" in res.output
