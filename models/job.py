"""The options of one training job and their defaults, defined once (no torch import).

:class:`TrainJob` holds every option of ``lmh-deploy train`` / ``lmh_deploy.train`` with the
paper's defaults where the paper gives one; the CLI, the Python API, the demo and the training
loop's :class:`~lmh_deploy.models.train.TrainConfig` read their defaults from it.
:func:`check_job` range-checks a job before any data is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from os import PathLike
from typing import Any

from lmh_deploy.bounds import (
    MAX_SAMPLES,
    MAX_TIMESTEPS,
    MAX_WIDTH_MULT,
    check_float,
    check_int,
    check_timesteps,
)
from lmh_deploy.choices import Arch, Dataset, Factors, Loss, Neuron, Norm, choice
from lmh_deploy.errors import InputError

#: Bounds of the training options (generous: the paper trains 300 epochs at batch 64-128).
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536


@dataclass
class TrainJob:
    """Options of ``lmh-deploy train`` (paper defaults where the paper gives one)."""

    dataset: str = "digits"
    data_dir: str | None = None
    arch: str = "mlp"
    neuron: str = "lmh"  # lmh | lif | qcfs
    factors: str = "progressive"  # progressive | radical (lmh only)
    timesteps: int | None = None  # None: the dataset's frames per sample, else 4
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025
    weight_decay: float = 5e-4
    loss: str = "ce"  # ce | tet
    width_mult: float = 1.0
    seed: int = 0
    out: str = "model.pt"
    json_path: str | None = None
    norm: str = "auto"  # auto | none | bn | tdbn (auto: none for mlp, else bn)
    time_slice: int = 0  # k steps per slice; 0 = full BPTT
    qcfs_levels: int = 4  # L of neuron="qcfs"
    lif_decay: float = 0.9  # lam_s of neuron="lif" (0.5 left it silent: chance level)
    hybrid_from: str | None = None  # QCFS checkpoint to convert and fine-tune
    device: str = "cpu"  # cpu | cuda (under torchrun: cuda:LOCAL_RANK)
    amp: bool = False  # mixed precision (autocast + GradScaler), CUDA only
    train_samples: int = 0  # train on the first N samples of the split (0: all)

    @classmethod
    def from_options(cls, **options: Any) -> TrainJob:
        """A job from API/CLI options: Enums become their strings, paths become str."""

        def plain(value: Any) -> Any:
            if isinstance(value, Enum):
                return value.value
            return str(value) if isinstance(value, PathLike) else value

        return cls(**{key: plain(value) for key, value in options.items()})


#: Steps per sample when --timesteps is left out, known before loading (``events``: its files).
DATASET_FRAMES = {
    "digits": 4,
    "mnist5k": 4,
    "cifar10": 4,
    "cifar100": 4,
    "digits-events": 8,
    "n-mnist": 10,
    "dvs-cifar10": 10,
}


def timesteps_for(job: TrainJob, spec) -> int:
    """The job's T: a frame-sequence dataset fixes it (one step per frame); images default to 4."""
    if spec.timesteps is None:
        return job.timesteps or 4
    if job.timesteps not in (None, spec.timesteps):
        raise InputError(
            f"dataset {spec.name} has {spec.timesteps} frames per sample and the "
            f"network runs one step per frame: --timesteps must be "
            f"{spec.timesteps} (or left out), got {job.timesteps}"
        )
    return spec.timesteps


def check_job(job: TrainJob) -> None:
    """Every option in range before any data is loaded (one line naming the option)."""
    for kind, value, name in (
        (Arch, job.arch, "arch"),
        (Neuron, job.neuron, "neuron"),
        (Factors, job.factors, "factors"),
        (Loss, job.loss, "loss"),
        (Norm, job.norm, "norm"),
        (Dataset, job.dataset, "dataset"),
    ):
        choice(kind, value, name)
    if job.timesteps is not None:  # None: the dataset's frames per sample, else 4
        check_timesteps(job.timesteps, "timesteps")
    check_int("epochs", job.epochs, lo=0, hi=MAX_EPOCHS)
    check_int("batch_size", job.batch_size, lo=1, hi=MAX_BATCH)
    check_int("qcfs_levels", job.qcfs_levels, lo=1, hi=256)
    check_int(
        "time_slice",
        job.time_slice,
        lo=0,
        hi=job.timesteps or DATASET_FRAMES.get(str(job.dataset), MAX_TIMESTEPS),
    )
    check_int("seed", job.seed, lo=0, hi=2**32 - 1)
    check_int("train_samples", job.train_samples, lo=0, hi=MAX_SAMPLES)
    check_float("lr", job.lr, lo=0.0, lo_open=True, hi=10.0)
    check_float("weight_decay", job.weight_decay, lo=0.0, hi=1.0)
    check_float("width_mult", job.width_mult, lo=0.0, lo_open=True, hi=MAX_WIDTH_MULT)
    if job.time_slice and job.neuron == "qcfs" and not job.hybrid_from:
        raise InputError("time_slice trains spiking networks; neuron='qcfs' is an ANN")
    if job.hybrid_from and job.neuron != "lmh":
        raise InputError(f"hybrid_from converts a QCFS ANN to LM-H; neuron must be 'lmh', got {job.neuron!r}")
    if job.device != "cpu" and not re.fullmatch(r"cuda(:\d{1,2})?", job.device):
        raise InputError(f"unknown device {job.device!r}; supported: cpu, cuda")
    if job.amp and not job.device.startswith("cuda"):
        raise InputError("amp (mixed precision) needs device='cuda'")


#: Every default in one place.
DEFAULT_JOB = TrainJob()
