"""User inputs of ``run`` and ``verify`` (own arrays or .npy files, a T sweep, a torch
device), checked at entry; static inputs ``(N, *shape)`` and time-varying frames
``(T, N, *shape)`` (event streams).

Numbers are checked with :mod:`lmh_deploy.bounds`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmh_deploy.bounds import MAX_SWEEP_VALUES, MAX_TIMESTEPS
from lmh_deploy.errors import InputError, require_file
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import DEFAULT_PROFILE


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


def read_npy(path: str | Path, what: str) -> np.ndarray:
    """Open a .npy memory-mapped (the header is checked before any data is read; never
    unpickled)."""
    path = require_file(path, f"{what} file (.npy)")
    with open(path, "rb") as f:
        magic = f.read(len(np.lib.format.MAGIC_PREFIX))
    if magic != np.lib.format.MAGIC_PREFIX:  # numpy would blame pickled data for any other file
        raise InputError(
            f"{path}: not a .npy file (it does not start with numpy's header); "
            "write the array with numpy.save(path, array)"
        )
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None


def accept_inputs(
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    sample_shape: tuple[int, ...] | None = None,
    samples: int | None = None,
    x_name: str = "inputs",
    y_name: str = "labels",
) -> tuple[np.ndarray, np.ndarray | None]:
    """The user's own inputs (and optional labels), checked, as the network takes them.

    ``x`` is static ``(N, *s)`` or time-varying frames ``(T, N, *s)``, where ``s`` is the
    network's ``input_shape`` or the ``sample_shape`` it was calibrated on (reshaped to
    ``input_shape``); at most the first ``samples`` samples are kept, as float64. ``y``
    holds ``N`` integer labels in ``0 .. num_classes - 1``. Every rule broken raises one
    :class:`InputError` naming ``x_name`` / ``y_name`` (the file) and the rule.
    """
    shape = tuple(int(d) for d in input_shape)
    shapes = [shape]
    if sample_shape is not None and tuple(sample_shape) != shape:
        shapes.append(tuple(int(d) for d in sample_shape))
    given = next(
        (s for s in shapes if x.ndim in (len(s) + 1, len(s) + 2) and tuple(x.shape[x.ndim - len(s) :]) == s),
        None,
    )
    if given is None:
        dims = ", ".join(map(str, shapes[-1]))
        raise InputError(
            f"{x_name}: inputs have shape {tuple(x.shape)}, the network was compiled for "
            f"(N, {dims}) or time-varying frames (T, N, {dims})"
        )
    if x.dtype.kind not in "fiub":
        raise InputError(f"{x_name}: inputs have dtype {x.dtype}, expected numbers")
    total = num_samples(x, given)
    if total == 0:
        raise InputError(f"{x_name}: holds no samples")
    count = total if samples is None else min(samples, total)
    x = np.asarray(first_samples(x, count, given), dtype=np.float64)
    x = x.reshape((*x.shape[: x.ndim - len(given)], *shape))
    if not np.all(np.isfinite(x)):
        raise InputError(f"{x_name}: inputs contain NaN or inf; every value must be finite")
    if y is None:
        return x, None
    if y.shape != (total,):
        raise InputError(
            f"{y_name}: labels have shape {tuple(y.shape)}, expected ({total},): "
            f"one label per sample of {x_name}"
        )
    if y.dtype.kind not in "iu":
        raise InputError(f"{y_name}: labels have dtype {y.dtype}, expected integers")
    y = np.asarray(y[:count], dtype=np.int64)
    outside = y[(y < 0) | (y >= num_classes)]
    if outside.size:
        raise InputError(
            f"{y_name}: label {int(outside[0])} is outside the network's {num_classes} classes "
            f"(labels must be 0..{num_classes - 1})"
        )
    return x, y


def read_inputs(
    inputs: str | Path | None, labels: str | Path | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``--inputs X.npy [--labels Y.npy]`` read (never unpickled); None where not given."""
    x = None if inputs is None else read_npy(inputs, "inputs")
    return x, None if labels is None else read_npy(labels, "labels")


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


#: Samples of the test split ``run`` and ``verify`` take when ``samples`` is not given
#: (own ``inputs``: all of them).
DEFAULT_SAMPLES = 100


def select_samples(
    art: Any,
    x: np.ndarray | None,
    y: np.ndarray | None,
    samples: int | None,
    *,
    split: str = "test",
    x_name: str = "inputs",
    y_name: str = "labels",
) -> tuple[np.ndarray, np.ndarray | None]:
    """The samples a command runs on: the user's own ``x`` (labels ``y`` optional), checked
    by :func:`accept_inputs`, or the first ``samples`` (:data:`DEFAULT_SAMPLES` when None) of
    the artifact's dataset ``split``. ``--labels`` without ``--inputs`` and more samples than
    the split holds are refused in one line."""
    shape = art.input_shape
    if x is not None:
        return accept_inputs(
            x,
            y,
            input_shape=shape,
            num_classes=art.num_classes,
            sample_shape=art.sample_shape,
            samples=samples,
            x_name=x_name,
            y_name=y_name,
        )
    if y is not None:
        raise InputError(f"--labels needs --inputs (the {split} split brings its own labels)")
    x, y = art.dataset_split(split)  # time-major (T, N, ...) for event frames
    count = DEFAULT_SAMPLES if samples is None else samples
    available = num_samples(x, shape)
    if count > available:
        raise InputError(f"--samples {count} exceeds the {available} samples of the {split} split")
    return first_samples(x, count, shape), y[:count]


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


def fit_input_range(
    graph: Any,
    x: np.ndarray | None,
    what: str = "calibration data",
    *,
    profile: str = DEFAULT_PROFILE,
    bits: int | None = None,
) -> None:
    """Declare the float graph's input range and message width (docs/fixed-point.md §7).

    Calibration inputs ``x`` holding a negative value (e.g. normalised images) make the
    input signed, standing for ``[-x_max, x_max]`` with ``x_max`` grown to ``max|x|``; it then
    gets :func:`~lmh_deploy.semantics.integer.default_input_bits` under ``profile`` (16-bit
    messages -32767..32767 under ``lmh``) unless ``bits`` says otherwise. Non-negative inputs
    keep their unsigned range and width (8 bits: 0..255) unless ``bits`` is given."""
    name = graph.order()[0]
    node = graph.node(name)
    lowest = float(np.min(x)) if x is not None and len(x) else 0.0
    negative = lowest < 0
    if node.spikes:
        if negative:
            raise InputError(
                f"{what}: the model takes binary event frames (sent as spikes), "
                f"but the inputs hold the value {lowest:.4g}"
            )
        if bits is not None:
            raise InputError(
                f"--input-bits {bits}: the model takes binary event frames, sent as one-bit spikes; "
                f"leave --input-bits out"
            )
        return
    changes: dict[str, Any] = {}
    if negative:
        assert x is not None
        changes = {"signed": True, "x_max": max(float(node.x_max), float(np.abs(x).max()))}
        if not node.signed:
            changes["bits"] = fx.default_input_bits(True, profile)
    if bits is not None:
        changes["bits"] = check_input_bits(bits, bool(changes.get("signed", node.signed)))
    if changes:
        graph.replace(name, **changes)


def check_input_bits(bits: int, signed: bool) -> int:
    """``--input-bits`` against the input's sign: 2 at least when signed (its range, 1 to Lava's
    24-bit graded spike payload, ``options.INPUT_BITS``, is checked by :func:`lmh_deploy.api.compile`
    before torch loads)."""
    if signed and bits < 2:
        raise InputError(f"--input-bits {bits}: signed inputs (values below 0) need at least 2 bits")
    return int(bits)


def quantize(qgraph: Any, x: np.ndarray) -> np.ndarray:
    """Integer inputs of ``qgraph``: spikes 0/1, or graded values of its width (``QInput``)."""
    return qgraph.node(qgraph.order()[0]).quantize(x)


def frames_for(x: np.ndarray, timesteps: int, input_shape: tuple[int, ...]) -> np.ndarray:
    """The first ``timesteps`` frames of time-major inputs; static inputs as they are."""
    return x[:timesteps] if is_sequence(x, input_shape) else x
