"""Self-describing checkpoints: architecture, neuron config, state dict, format version.

Saved with ``torch.save`` and loaded only with ``torch.load(weights_only=True)``:
nothing in a checkpoint can execute code when it is read.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmh_deploy.bounds import (
    MAX_CLASSES,
    MAX_LAYER_WIDTH,
    MAX_PARAMETERS,
    MAX_WIDTH_MULT,
    check_float,
    check_int,
    check_shape,
    check_timesteps,
)
from lmh_deploy.choices import Arch, Factors, Neuron, choice
from lmh_deploy.errors import InputError, UserError
from lmh_deploy.files import atomic_write
from lmh_deploy.models.architectures import build

FORMAT = "lmh-deploy/checkpoint"
FORMAT_VERSION = 1


class CheckpointError(UserError, ValueError):
    """A model file that lmh-deploy cannot (or will not) load; the message names file and cause."""


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    dataset: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` with everything needed to rebuild it, atomically (temp file + rename)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "dataset": dataset,
        "metrics": metrics or {},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_write(path) as fh:
        torch.save(payload, fh)


def load_weights_only(path: Path, fix: str = "") -> Any:
    """``torch.load(path, weights_only=True)``; a file that needs more than tensors and plain
    containers (a whole pickled module) or is corrupt raises :class:`CheckpointError` in one
    line naming the cause, ending with ``fix`` where given."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        cause = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        cause = cause.split(" was not an allowed global")[0]  # torch then suggests allowlisting it
        raise CheckpointError(
            f"{path}: refused, the file needs arbitrary unpickling (code execution), which "
            f"lmh-deploy never does ({cause}){fix}"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt): {first}"
        ) from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint dict safely; raise :class:`CheckpointError` naming the cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80":  # pickle protocol 2+ opcode
        raise CheckpointError(
            f"{path}: refused, a raw pickle stream (pickle.dump or legacy "
            "torch.save); unpickling it could execute code, and lmh-deploy "
            "never does"
        )
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (not a zip archive: random bytes or another format)"
        )
    payload = load_weights_only(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        if (
            isinstance(payload, dict)
            and payload
            and all(isinstance(v, torch.Tensor) for v in payload.values())
        ):
            raise CheckpointError(
                f"{path}: a bare state_dict, not an lmh-deploy checkpoint; "
                "save it with models.checkpoint.save_checkpoint (it needs "
                "the architecture and neuron config)"
            )
        raise CheckpointError(f"{path}: not an lmh-deploy checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unknown format version {payload.get('format_version')!r} "
            f"(this lmh-deploy reads version {FORMAT_VERSION})"
        )
    for key in ("arch", "arch_kwargs", "dataset", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return payload


def check_metadata(path: str | Path, payload: dict[str, Any]) -> None:
    """Range-check what a checkpoint says about its model before anything is built.

    Architecture, neuron options, input shape, classes, widths and time steps must be in
    range, and the model it describes (built on torch's ``meta`` device, which allocates
    nothing) must have at most ``MAX_PARAMETERS`` parameters.
    """
    ds, kw = payload["dataset"], payload["arch_kwargs"]
    try:
        if not isinstance(ds, dict) or not isinstance(kw, dict):
            raise InputError("'dataset' and 'arch_kwargs' must be dicts")
        choice(Arch, payload["arch"], "arch")
        shape = check_shape("dataset.input_shape", ds.get("input_shape"))
        classes = check_int("dataset.num_classes", ds.get("num_classes"), lo=1, hi=MAX_CLASSES)
        if "x_max" in ds:
            check_float("dataset.x_max", ds["x_max"], lo=0.0, lo_open=True, hi=1e6)
        if "timesteps" in kw:
            check_timesteps(kw["timesteps"], "arch_kwargs.timesteps")
        if "width_mult" in kw:
            check_float("arch_kwargs.width_mult", kw["width_mult"], lo=0.0, lo_open=True, hi=MAX_WIDTH_MULT)
        for i, width in enumerate(kw.get("hidden") or ()):
            check_int(f"arch_kwargs.hidden[{i}]", width, lo=1, hi=MAX_LAYER_WIDTH)
        for kind, key in ((Neuron, "neuron"), (Factors, "factors")):
            if key in kw:
                choice(kind, kw[key], f"arch_kwargs.{key}")
        if "qcfs_levels" in kw:
            check_int("arch_kwargs.qcfs_levels", kw["qcfs_levels"], lo=1, hi=256)
        for key in ("theta", "gamma", "lif_decay"):
            if key in kw:
                check_float(f"arch_kwargs.{key}", kw[key])
        with torch.device("meta"):
            skeleton = build(payload["arch"], shape, classes, **kw)
        count = sum(p.numel() for p in skeleton.parameters())
        if count > MAX_PARAMETERS:
            raise InputError(f"describes a model of {count:,} parameters (at most {MAX_PARAMETERS:,})")
    except InputError as exc:
        raise CheckpointError(f"{path}: metadata {exc}") from None
    except TypeError as exc:  # an arch_kwargs key the architecture does not take
        raise CheckpointError(f"{path}: metadata: {exc}") from None


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint; returns ``(model in eval mode, payload)``."""
    payload = read_checkpoint(path)
    check_metadata(path, payload)
    ds = payload["dataset"]
    try:
        model = build(
            payload["arch"], tuple(ds["input_shape"]), int(ds["num_classes"]), **payload["arch_kwargs"]
        )
        model.load_state_dict(payload["state_dict"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, payload
