"""The Python API, the CLI's error policy and the range checks at the boundary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import lmh_deploy
from lmh_deploy import choices
from lmh_deploy.cli import REPORT_BUG, app
from lmh_deploy.errors import InputError, UserError
from lmh_deploy.models.architectures import ARCHITECTURES, NEURONS, build
from lmh_deploy.models.checkpoint import CheckpointError, save_checkpoint
from lmh_deploy.models.data import SUPPORTED_DATASETS
from lmh_deploy.models.losses import LOSSES
from lmh_deploy.models.norm import NORMS
from shared import invoke

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def one_line_error(res, *needles: str) -> None:
    """Exit 2 and exactly one non-empty line that names every needle."""
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1, res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_choices_list_exactly_the_registries() -> None:
    assert [m.value for m in choices.Arch] == list(ARCHITECTURES)
    assert [m.value for m in choices.Neuron] == list(NEURONS)
    assert [m.value for m in choices.Dataset] == list(SUPPORTED_DATASETS)
    assert [m.value for m in choices.Loss] == list(LOSSES)
    assert {m.value for m in choices.Norm} == {"auto", *NORMS}
    assert str(choices.Backend.LAVA) == "lava" and f"{choices.Target.LOIHI2}" == "loihi2"
    assert choices.choice(choices.Backend, "SIM", "--backend") is choices.Backend.SIM
    with pytest.raises(InputError, match="--backend: unknown value 'gpu'; supported: sim, lava"):
        choices.choice(choices.Backend, "gpu", "--backend")


def test_api_is_exported_lazily_and_import_stays_light() -> None:
    assert lmh_deploy.compile is lmh_deploy.api.compile
    assert {"compile", "run", "verify"} <= set(dir(lmh_deploy))
    code = "import sys, lmh_deploy; print(sorted({'torch', 'lava', 'numpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["models", "sim"])
def test_generic_top_level_names_are_not_installed(name: str, tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr
    ok = subprocess.run(
        [sys.executable, "-c", f"import lmh_deploy.{name}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr


def _summary_json(tmp_path: Path) -> Path:
    path = tmp_path / "summary.json"
    layer = {
        "name": "lmh0",
        "kind": "lmh",
        "neurons": 4,
        "input_spikes": 3,
        "synops_per_sample": 12.0,
        "spikes_per_sample": 1.0,
        "firing_rate": 0.1,
        "saturation_events": 0,
        "spikes_per_step": [1, 0],
    }
    path.write_text(
        json.dumps(
            {
                "backend": "sim",
                "samples": 1,
                "timesteps": 2,
                "layers": [layer],
                "totals": {"synops": 12, "spikes": 1},
                "energy_joules": 1e-9,
                "ann_energy_joules": 2e-9,
            }
        )
    )
    return path


def test_programming_error_is_a_bug_with_traceback_not_a_user_error(tmp_path: Path, monkeypatch) -> None:
    from lmh_deploy.reports import html

    def broken(*args, **kwargs):
        return {}["lmh3"]  # a KeyError deep inside a stage: a bug, whatever the input

    monkeypatch.setattr(html, "render_html", broken)
    res = invoke("report", _summary_json(tmp_path), "--html", tmp_path / "r.html")
    assert res.exit_code == 1, res.output
    assert "Traceback" in res.output and "KeyError: 'lmh3'" in res.output
    assert REPORT_BUG in res.output and "error: 'lmh3'" not in res.output
    assert not (tmp_path / "r.html").exists()
    # the same stage judging a bad input is one line, exit 2
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    one_line_error(invoke("report", bad, "--html", tmp_path / "r.html"), "bad.json", "not a run summary")


def test_debug_reraises_user_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["--debug", "verify", str(tmp_path / "nope")])
    assert isinstance(res.exception, UserError)


ABSURD = [
    (["train", "--epochs", "-1"], "epochs"),
    (["train", "--timesteps", "0"], "timesteps"),
    (["train", "--timesteps", "1000000000000"], "timesteps"),
    (["train", "--batch-size", "0"], "batch_size"),
    (["train", "--width-mult", "1e9"], "width_mult"),
    (["train", "--width-mult", "0"], "width_mult"),
    (["train", "--lr", "nan"], "lr"),
    (["train", "--time-slice", "99"], "time_slice"),
    (["train", "--seed", "-3"], "seed"),
    (["train", "--qcfs-levels", "100000"], "qcfs_levels"),
    (["compile", "missing.pt", "--calibration-samples", "-5"], "--calibration-samples"),
    (["compile", "missing.pt", "--calibration-samples", "100000000000"], "--calibration-samples"),
    (["compile", "x.nir", "--timesteps", "0"], "--timesteps"),
    (["compile", "x.nir", "--dt", "-1"], "--dt"),
    (["compile", "missing.pt"], "no such file"),
    (["verify", "build", "--samples", "0"], "--samples"),
    (["verify", "build", "--samples", "1000000000000000"], "--samples"),
    (["run", "build", "--samples", "-1"], "--samples"),
    (["export", "m.pt", "--format", "nir", "-o", "m.nir", "--samples", "0"], "--samples"),
    (["export", "m.pt", "--format", "nir", "-o", "m.nir", "--dt", "inf"], "--dt"),
]


@pytest.mark.parametrize("args,needle", ABSURD, ids=[" ".join(a) for a, _ in ABSURD])
def test_absurd_numbers_get_one_line_at_once(
    args: list[str], needle: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    res = invoke(*args)
    assert time.perf_counter() - start < 2.0  # checked before anything loads or allocates
    one_line_error(res, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written


def _checkpoint(tmp_path: Path, **changes) -> Path:
    model = build("mlp", (1, 8, 8), 10, hidden=(8,), timesteps=2)
    kwargs = {"hidden": [8], "timesteps": 2}
    dataset = {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "x_max": 1.0}
    for key, value in changes.items():
        (dataset if key in dataset else kwargs)[key] = value
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, arch=changes.pop("arch", "mlp"), arch_kwargs=kwargs, dataset=dataset)
    return path


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("input_shape", [1, 10**9, 10**9], "dataset.input_shape"),
        ("input_shape", [0, 8, 8], "dataset.input_shape[0]"),
        ("num_classes", 0, "dataset.num_classes"),
        ("num_classes", 10**12, "dataset.num_classes"),
        ("x_max", float("nan"), "dataset.x_max"),
        ("timesteps", 10**9, "arch_kwargs.timesteps"),
        ("hidden", [10**9], "arch_kwargs.hidden[0]"),
        ("hidden", [60000, 60000, 60000], "parameters"),
        ("width_mult", -1.0, "arch_kwargs.width_mult"),
        ("neuron", "hodgkin-huxley", "arch_kwargs.neuron"),
    ],
)
def test_absurd_checkpoint_metadata_is_refused_at_load(
    field: str, value, needle: str, tmp_path: Path
) -> None:
    path = _checkpoint(tmp_path, **{field: value})
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="metadata"):
        lmh_deploy.compile(path, tmp_path / "build")
    res = invoke("compile", path, "-o", tmp_path / "build")
    assert time.perf_counter() - start < 2.0
    one_line_error(res, "m.pt", needle)
    assert not (tmp_path / "build").exists()


def test_api_refuses_unknown_choices_before_running(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--target"):
        lmh_deploy.compile(tmp_path / "m.pt", tmp_path / "b", target="loihi3")
    with pytest.raises(InputError, match="--backend"):
        lmh_deploy.run(tmp_path / "b", backend="gpu")
    with pytest.raises(InputError, match="--device"):
        lmh_deploy.run(tmp_path / "b", device="tpu")
    with pytest.raises(InputError, match="arch"):
        lmh_deploy.train(out=tmp_path / "m.pt", arch="transformer")
    assert not any(tmp_path.iterdir())


def test_torch_meta_build_allocates_nothing() -> None:
    with torch.device("meta"):
        big = build("mlp", (1, 2000, 2000), 10, hidden=(65536,))
    assert all(p.device.type == "meta" for p in big.parameters())
