"""Range checks for every number a user hands lmh-deploy, and the bounds they enforce.

Each check raises an :class:`~lmh_deploy.errors.InputError` (one line naming the option
and the value) before anything is allocated or run, so an absurd value costs
microseconds, never a hang or a terabyte allocation attempt. The bounds are generous
for this project's networks and name themselves in the message.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from lmh_deploy.errors import InputError

#: Most time steps of one sample (training, compile, a T sweep). The paper uses T <= 8,
#: event datasets a few hundred frames; Loihi 2 factor tables are per step.
MAX_TIMESTEPS = 1024
#: Most samples one command evaluates, calibrates or trains on per batch.
MAX_SAMPLES = 1_000_000
#: Most elements of one input sample (a 3x224x224 image has 150528).
MAX_INPUT_SIZE = 1 << 22
#: Most classes of a classifier.
MAX_CLASSES = 100_000
#: Most values in a T sweep.
MAX_SWEEP_VALUES = 32
#: Widest zoo network: 4x the paper's channels (VGG-13 at 4x has 2048-channel convs).
MAX_WIDTH_MULT = 4.0
#: Most neurons of one hidden layer given by width (an MLP's ``hidden``).
MAX_LAYER_WIDTH = 1 << 16
#: Most parameters of a model rebuilt from a checkpoint (2 GB of float32; VGG-13 at 4x
#: has 453 M).
MAX_PARAMETERS = 500_000_000


def check_int(name: str, value: object, *, lo: int = 1, hi: int | None = None) -> int:
    """``value`` as an int in ``[lo, hi]`` or an :class:`InputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}: expected an integer, got {value!r}")
    number = int(value)
    if number < lo or (hi is not None and number > hi):
        bounds = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise InputError(f"{name}: must be {bounds}, got {number}")
    return number


def check_float(
    name: str, value: object, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> float:
    """``value`` as a finite float in range, or an :class:`InputError` naming ``name``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{name}: must be finite, got {number}")
    if lo is not None and (number < lo or (lo_open and number == lo)):
        raise InputError(f"{name}: must be {'>' if lo_open else '>='} {lo}, got {number}")
    if hi is not None and number > hi:
        raise InputError(f"{name}: must be <= {hi}, got {number}")
    return number


def check_samples(value: Any, name: str = "--samples", *, lo: int = 1) -> int:
    """A sample count in ``lo..MAX_SAMPLES``."""
    return check_int(name, value, lo=lo, hi=MAX_SAMPLES)


def check_timesteps(value: Any, name: str = "--timesteps") -> int:
    """A number of time steps in ``1..MAX_TIMESTEPS``."""
    return check_int(name, value, lo=1, hi=MAX_TIMESTEPS)


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """A sample shape: 1 to 4 positive dimensions with at most ``MAX_INPUT_SIZE`` elements."""
    if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 4:
        raise InputError(f"{name}: expected 1 to 4 dimensions, got {shape!r}")
    dims = tuple(check_int(f"{name}[{i}]", d, lo=1, hi=MAX_INPUT_SIZE) for i, d in enumerate(shape))
    if math.prod(dims) > MAX_INPUT_SIZE:
        raise InputError(f"{name}: {dims} has more than {MAX_INPUT_SIZE} elements per sample")
    return dims
