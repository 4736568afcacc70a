"""User inputs of ``run`` (own .npy arrays, a T sweep, a torch device), checked at entry;
static inputs ``(N, *shape)`` and time-varying frames ``(T, N, *shape)`` (event streams).

Numbers are checked with :mod:`lmh_deploy.bounds`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from lmh_deploy.bounds import MAX_SWEEP_VALUES, MAX_TIMESTEPS
from lmh_deploy.errors import InputError, require_file
from lmh_deploy.semantics import integer as fx

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
        raise InputError(f"--sweep {text!r}: expected comma-separated integers such as 1,2,4,8") from None
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


def load_inputs(
    inputs: str | Path, labels: str | Path | None, input_shape: tuple[int, ...], samples: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """User inputs for ``run``: the first ``samples`` samples, checked, never unpickled.

    ``inputs`` is ``(N, *input_shape)`` floats or time-varying frames
    ``(T, N, *input_shape)``; ``labels`` (optional) ``N`` integers.
    """
    inputs = Path(inputs)
    x = _read_npy(inputs, "inputs")
    shape = tuple(input_shape)
    dims = ", ".join(map(str, shape))
    if x.ndim not in (len(shape) + 1, len(shape) + 2) or tuple(x.shape[x.ndim - len(shape) :]) != shape:
        raise InputError(
            f"{inputs}: inputs have shape {tuple(x.shape)}, the model expects "
            f"(N, {dims}) or time-varying frames (T, N, {dims})"
        )
    if x.dtype.kind not in "fiub":
        raise InputError(f"{inputs}: inputs have dtype {x.dtype}, expected numbers")
    total = num_samples(x, shape)
    if total == 0:
        raise InputError(f"{inputs}: holds no samples")
    x = np.asarray(first_samples(x, samples, shape), dtype=np.float64)
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


# --------------------------------------------------------------------------- frames
# Static inputs (N, *shape) are presented every step; time-varying frames (T, N, *shape)
# present frame t at step t (event streams). Datasets store sequences sample-major.


def is_sequence(x: np.ndarray, input_shape: tuple[int, ...]) -> bool:
    """True for time-major frames ``(T, N, *shape)``, False for static ``(N, *shape)``."""
    return x.ndim == len(input_shape) + 2


def sample_axis(x: np.ndarray, input_shape: tuple[int, ...]) -> int:
    """The axis that counts samples: 1 for frames ``(T, N, ...)``, 0 for static inputs."""
    return 1 if is_sequence(x, input_shape) else 0


def num_samples(x: np.ndarray, input_shape: tuple[int, ...]) -> int:
    """Number of samples in static or time-major inputs."""
    return int(x.shape[sample_axis(x, input_shape)])


def first_samples(x: np.ndarray, count: int, input_shape: tuple[int, ...]) -> np.ndarray:
    """The first ``count`` samples (all frames of each)."""
    return x[:, :count] if is_sequence(x, input_shape) else x[:count]


def dataset_inputs(x: np.ndarray, input_shape: tuple[int, ...], frames: bool) -> np.ndarray:
    """A dataset's samples as the network takes them: ``(N, *shape)``, or ``(T, N, *shape)``
    when the samples are frame sequences ``(N, T, ...)`` (``frames``).

    Each frame is reshaped to ``input_shape`` (a flat-input model on image data).
    """
    if frames:
        return np.swapaxes(x.reshape((x.shape[0], x.shape[1], *input_shape)), 0, 1)
    return x.reshape((len(x), *input_shape))


def time_major(x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Dataset samples ``(N, T, *shape)`` -> ``(T, N, *shape)``; static ``(N, *shape)`` as is."""
    if x.ndim == len(input_shape) + 2:
        return np.swapaxes(x, 0, 1)
    return x


def check_inputs(
    x: np.ndarray, input_shape: tuple[int, ...], timesteps: int, *, spikes: bool = False, what: str = "inputs"
) -> None:
    """Raise InputError (naming ``what``) unless ``x`` fits a network of ``input_shape``.

    ``x`` is ``(N, *shape)`` or ``(T', N, *shape)`` with at least ``timesteps`` frames, all
    finite; a spike input (``spikes``) takes only 0 and 1.
    """
    shape = tuple(int(d) for d in input_shape)
    dims = ", ".join(map(str, shape))
    if x.ndim not in (len(shape) + 1, len(shape) + 2) or tuple(x.shape[x.ndim - len(shape) :]) != shape:
        raise InputError(
            f"{what}: inputs have shape {tuple(x.shape)}, the model expects "
            f"(N, {dims}) or time-varying frames (T, N, {dims})"
        )
    if is_sequence(x, shape) and x.shape[0] < timesteps:
        raise InputError(
            f"{what}: {x.shape[0]} frames per sample, the network runs {timesteps} steps (one frame per step)"
        )
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what}: inputs contain NaN or inf")
    if spikes and not np.all((x == 0) | (x == 1)):
        bad = x[(x != 0) & (x != 1)].flat[0]
        raise InputError(
            f"{what}: the model takes binary event frames (sent as spikes), "
            f"but the inputs hold the value {bad}"
        )


def quantize(qgraph: Any, x: np.ndarray) -> np.ndarray:
    """Integer inputs of ``qgraph``: spikes 0/1, or 8-bit graded values (``QInput``)."""
    node = qgraph.node(qgraph.order()[0])
    return fx.quantize_input(x, node.scale, node.bits)


def frames_for(x: np.ndarray, timesteps: int, input_shape: tuple[int, ...]) -> np.ndarray:
    """The first ``timesteps`` frames of time-major inputs; static inputs as they are."""
    return x[:timesteps] if is_sequence(x, input_shape) else x
