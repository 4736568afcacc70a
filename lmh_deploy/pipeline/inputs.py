"""User inputs of ``run`` (own .npy arrays, a T sweep, a torch device), checked at entry.

Numbers are checked with :mod:`lmh_deploy.bounds`.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lmh_deploy.bounds import MAX_SWEEP_VALUES, MAX_TIMESTEPS
from lmh_deploy.errors import InputError, require_file

_DEVICE = re.compile(r"^(cpu|cuda(:\d{1,2})?)$")


def check_sim_device(device: str | None) -> str | None:
    """``None`` (numpy), ``cpu``, ``cuda`` or ``cuda:N``."""
    if device is None:
        return None
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise InputError(f"--device: unknown device {device!r}; supported: cpu, cuda, cuda:N")
    return device


def parse_sweep(text: str | None, timesteps: int) -> list[int]:
    """``--sweep``: ``None`` -> the default T values; ``none``/``off`` -> no sweep."""
    from lmh_deploy.reports.plots import default_t_values

    if text is None:
        return default_t_values(timesteps)
    if text.strip().lower() in ("", "none", "off"):
        return []
    try:
        values = sorted({int(v) for v in text.split(",")})
    except ValueError:
        raise InputError(f"--sweep {text!r}: expected comma-separated integers such as "
                         "1,2,4,8") from None
    if values[0] < 1 or values[-1] > MAX_TIMESTEPS:
        raise InputError(f"--sweep {text!r}: inference steps must be in 1..{MAX_TIMESTEPS}")
    if len(values) > MAX_SWEEP_VALUES:
        raise InputError(f"--sweep {text!r}: at most {MAX_SWEEP_VALUES} values")
    return values


def _read_npy(path: Path, what: str) -> np.ndarray:
    """Open a .npy memory-mapped (the header is checked before any data is read)."""
    require_file(path, f"{what} file (.npy)")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None


def load_inputs(inputs: str | Path, labels: str | Path | None, input_shape: tuple[int, ...],
                samples: int) -> tuple[np.ndarray, np.ndarray | None]:
    """User inputs for ``run``: the first ``samples`` rows, checked, never unpickled.

    ``inputs`` is ``(N, *input_shape)`` floats; ``labels`` (optional) ``N`` integers.
    """
    inputs = Path(inputs)
    x = _read_npy(inputs, "inputs")
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise InputError(f"{inputs}: inputs have shape {tuple(x.shape)}, the model expects "
                         f"(N, {', '.join(map(str, input_shape))})")
    if x.dtype.kind not in "fiub":
        raise InputError(f"{inputs}: inputs have dtype {x.dtype}, expected numbers")
    total = len(x)
    if total == 0:
        raise InputError(f"{inputs}: holds no samples")
    x = np.asarray(x[:samples], dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise InputError(f"{inputs}: inputs contain NaN or inf")
    if labels is None:
        return x, None
    labels = Path(labels)
    y_all = _read_npy(labels, "labels")
    if y_all.shape != (total,):
        raise InputError(f"{labels}: labels have shape {tuple(y_all.shape)}, expected ({total},)")
    if y_all.dtype.kind not in "iu":
        raise InputError(f"{labels}: labels have dtype {y_all.dtype}, expected integers")
    return x, np.asarray(y_all[:samples])
