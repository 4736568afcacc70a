"""Float IR nodes, as the frontends produce them (units of the trained model)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from lmh_deploy.ir.base import IRError, Node, check_finite
from lmh_deploy.semantics.integer import MAX_SPIKES, per_neuron_or_one


@dataclass(frozen=True)
class Input(Node):
    """The network input: one frame per step, the same frame every step (static images) or
    a new frame every step (event streams).

    ``shape`` is one frame's shape (C, H, W) or (n,); values lie in ``[0, x_max]``, or in
    ``[-x_max, x_max]`` when ``signed`` (e.g. normalised images).
    ``spikes``: every value is 0 or ``x_max`` (binary event frames), sent to the first
    synapses as spikes (one bit); otherwise values are sent graded as ``bits``-wide
    messages (direct encoding: unsigned 0..2**bits - 1, or signed symmetric, e.g. 8-bit
    0..255 and 16-bit -32767..32767; docs/fixed-point.md §7).
    """

    kind: ClassVar[str] = "input"
    shape: tuple[int, ...]
    x_max: float = 1.0
    spikes: bool = False
    signed: bool = False
    bits: int = 8

    @property
    def levels(self) -> int:
        """Largest integer input magnitude: 1 (a spike), else that of a ``bits``-wide message."""
        from lmh_deploy.semantics.integer import input_levels

        return 1 if self.spikes else input_levels(self.bits, self.signed)

    @property
    def unit(self) -> float:
        """The input value one integer step stands for (``x_max / levels``)."""
        return self.x_max / self.levels

    def output_size(self) -> int:
        return int(np.prod(self.shape))

    def check(self, name: str) -> None:
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise IRError(f"{name}: input shape {self.shape} must be non-empty and positive")
        if not (self.x_max > 0 and math.isfinite(self.x_max)):
            raise IRError(f"{name}: x_max must be finite and > 0, got {self.x_max}")
        if self.spikes and self.signed:
            raise IRError(f"{name}: a spike input (0 or x_max) cannot be signed")
        from lmh_deploy.semantics.integer import INPUT_BITS_MAX

        if not (int(self.signed) + 1 <= self.bits <= INPUT_BITS_MAX):
            raise IRError(
                f"{name}: {'signed ' if self.signed else ''}input messages of {self.bits} bits; "
                f"use {int(self.signed) + 1} to {INPUT_BITS_MAX} (Lava's graded spike payload)"
            )


@dataclass(frozen=True)
class Dense(Node):
    """Synapses ``I = W x`` on the flattened input; ``weight`` is (n_out, n_in)."""

    kind: ClassVar[str] = "dense"
    weight: np.ndarray

    def output_size(self) -> int:
        return int(self.weight.shape[0])

    def input_size(self) -> int:
        return int(self.weight.shape[1])

    def check(self, name: str) -> None:
        if self.weight.ndim != 2 or 0 in self.weight.shape:
            raise IRError(
                f"{name}: dense weight must be a non-empty 2-D matrix, got shape {self.weight.shape}"
            )
        check_finite(name, "weight", self.weight)


def conv_output_hw(
    h: int, w: int, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> tuple[int, int]:
    """Output height and width of a 2-D convolution or pooling window."""
    return (
        (h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
        (w + 2 * padding[1] - kernel[1]) // stride[1] + 1,
    )


@dataclass(frozen=True)
class Conv2d(Node):
    """2-D convolution (cross-correlation, as torch) on a (C, H, W) input flattened C-major.

    ``weight`` is (C_out, C_in, kh, kw); zero padding; no bias (it moves to the neuron).
    """

    kind: ClassVar[str] = "conv2d"
    weight: np.ndarray
    input_shape: tuple[int, ...]
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        h, w = conv_output_hw(
            self.input_shape[1], self.input_shape[2], self.weight.shape[2:], self.stride, self.padding
        )
        return (int(self.weight.shape[0]), h, w)

    def output_size(self) -> int:
        return int(np.prod(self.output_shape))

    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    def check(self, name: str) -> None:
        if self.weight.ndim != 4 or 0 in self.weight.shape:
            raise IRError(f"{name}: conv weight must be (C_out, C_in, kh, kw), got {self.weight.shape}")
        if len(self.input_shape) != 3 or self.weight.shape[1] != self.input_shape[0]:
            raise IRError(
                f"{name}: conv weight has {self.weight.shape[1]} input channels, "
                f"input shape is {self.input_shape}"
            )
        if min(self.stride) < 1 or min(self.padding) < 0 or min(self.output_shape) < 1:
            raise IRError(
                f"{name}: invalid stride {self.stride} / padding {self.padding} for input {self.input_shape}"
            )
        check_finite(name, "weight", self.weight)


@dataclass(frozen=True)
class AvgPool(Node):
    """Average pooling over ``kernel`` windows (no padding); a fixed linear map, 1/(kh*kw) weights."""

    kind: ClassVar[str] = "avgpool"
    input_shape: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        h, w = conv_output_hw(self.input_shape[1], self.input_shape[2], self.kernel, self.stride, (0, 0))
        return (int(self.input_shape[0]), h, w)

    def output_size(self) -> int:
        return int(np.prod(self.output_shape))

    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    def check(self, name: str) -> None:
        if (
            len(self.input_shape) != 3
            or min(self.kernel) < 1
            or min(self.stride) < 1
            or min(self.output_shape) < 1
        ):
            raise IRError(
                f"{name}: invalid pooling kernel {self.kernel} / stride {self.stride} "
                f"for input {self.input_shape}"
            )


@dataclass(frozen=True)
class MaxPool(Node):
    """Max pooling of the currents of the convolution before it, as ``torch.nn.MaxPool2d``
    (padded taps never win): not linear, so it ends a synapse chain and feeds a neuron layer
    or the readout directly; the neuron's per-channel bias adds after the max
    (:mod:`lmh_deploy.semantics.pooling`)."""

    kind: ClassVar[str] = "maxpool"
    input_shape: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    ceil_mode: bool = False

    @property
    def output_shape(self) -> tuple[int, int, int]:
        from lmh_deploy.semantics.pooling import pooled_length

        c, h, w = (int(d) for d in self.input_shape)
        return (
            c,
            pooled_length(
                h, self.kernel[0], self.stride[0], self.padding[0], self.dilation[0], self.ceil_mode
            ),
            pooled_length(
                w, self.kernel[1], self.stride[1], self.padding[1], self.dilation[1], self.ceil_mode
            ),
        )

    def output_size(self) -> int:
        return int(np.prod(self.output_shape))

    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    def windows(self) -> np.ndarray:
        """The flat input index of every tap of every output
        (:func:`~lmh_deploy.semantics.pooling.pool_windows`)."""
        from lmh_deploy.semantics.pooling import pool_windows

        return pool_windows(
            self.input_shape, self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode
        )

    def check(self, name: str) -> None:
        geometry = (self.kernel, self.stride, self.padding, self.dilation)
        if len(self.input_shape) != 3 or any(len(g) != 2 for g in geometry):
            raise IRError(f"{name}: max pooling needs a (C, H, W) input and pairs, got {self.input_shape}")
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.dilation) < 1 or min(self.padding) < 0:
            raise IRError(
                f"{name}: invalid max pooling kernel {self.kernel} / stride {self.stride} / "
                f"padding {self.padding} / dilation {self.dilation}"
            )
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise IRError(f"{name}: max pooling padding {self.padding} exceeds half the kernel {self.kernel}")
        try:
            self.windows()
        except ValueError as exc:
            raise IRError(f"{name}: {exc}") from None


#: The neuron rules every spiking layer declares (see :class:`LMH`), with their choices.
RESET_RULES = ("subtract", "set")
THRESHOLD_TESTS = (">=", ">")
RESET_TIMINGS = ("same-step", "next-step")


@dataclass(frozen=True, kw_only=True)
class RuleChoices(Node):
    """The neuron rules' choices, declared once for both LM-H nodes (:class:`LMH`'s
    docstring; their values, ``reset_value`` and the initial states, are floats there and
    integers in ``QLMH``); keyword-only, so that the subclasses' fields keep their order."""

    reset: str = "subtract"
    threshold_test: str = ">="
    reset_timing: str = "same-step"

    def check(self, name: str) -> None:
        check_rules(name, self.reset, self.threshold_test, self.reset_timing)


@dataclass(frozen=True)
class LMH(RuleChoices):
    """LM-H neurons (Eq. 4) with the source model's rules::

        vD[t] = mu_d vD[t-1] + mu_s vS[t-1] + I[t] + bias
        mS[t] = lam_s vS[t-1] + lam_d vD[t]
        s[t] = mS[t] >= theta;  vS[t] = mS[t] - s[t] theta;  output s[t] * theta

    Factors are (K, C): K = 1 (progressive) or T (radical, row t at step t,
    the last row after that); C = 1 (per layer) or n (per neuron).

    Rules (defaults: LM-H as the paper trains it): ``reset`` "subtract" (theta from vS
    on a spike) or "set" (vS = ``reset_value``); ``threshold_test`` ">=" or ">";
    ``reset_timing`` "same-step" (a spike at t resets vS at t) or "next-step" (snnTorch's
    ``reset_delay``: the reset of a spike at t is applied at t+1 after the integration
    and before the threshold test); initial states ``v_d_init``, ``v_s_init`` (None is
    the paper's theta / 2, filled in on construction). ``v_d_init`` may differ per neuron, an
    (n,) array (rockpool's per-neuron bias starts the dendrite; an array holding one value
    is stored as that number).

    ``max_spikes`` K > 1 makes the layer emit graded spikes (sinabs ``MultiSpike``, rockpool
    ``max_spikes_per_dt``): up to K spikes a step, as many as multiples of theta the soma
    holds (:func:`lmh_deploy.semantics.integer.spike_count`); the output is that count times
    theta and a subtractive reset takes count * theta off (a set reset still sets).
    ``v_s_min`` (None: none) is a floor the soma is clipped to after the reset (sinabs's
    ``min_v_mem``).
    """

    kind: ClassVar[str] = "lmh"
    size: int
    theta: float
    mu_d: np.ndarray
    mu_s: np.ndarray
    lam_d: np.ndarray
    lam_s: np.ndarray
    bias: np.ndarray
    reset_value: float = 0.0
    v_d_init: float | np.ndarray = 0.0
    v_s_init: float | None = None
    max_spikes: int = 1
    v_s_min: float | None = None

    #: The union of what the numeric profiles can hold (the quantize pass checks the chosen
    #: profile's own range): mu_d up to 1 for Loihi's current decay, lam_s down to 0 for LIF.
    FACTOR_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "mu_d": (-0.5, 1.0),
        "mu_s": (-0.5, 0.5),
        "lam_d": (0.5, 1.5),
        "lam_s": (0.0, 1.5),
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "v_d_init", per_neuron_or_one(self.v_d_init))
        super().__post_init__()
        if self.v_s_init is None:
            object.__setattr__(self, "v_s_init", float(self.theta) / 2)

    def output_size(self) -> int:
        return self.size

    def rules(self) -> dict[str, object]:
        """The neuron rules as a plain dict (reports, adapters)."""
        return {
            "reset": self.reset,
            "reset_value": self.reset_value,
            "threshold_test": self.threshold_test,
            "reset_timing": self.reset_timing,
            "v_d_init": self.v_d_init.tolist() if isinstance(self.v_d_init, np.ndarray) else self.v_d_init,
            "v_s_init": self.v_s_init,
        }

    def check(self, name: str) -> None:
        check_max_spikes(name, self.max_spikes, self.reset_timing)
        if self.size <= 0:
            raise IRError(f"{name}: size must be positive, got {self.size}")
        if not (self.theta > 0 and math.isfinite(self.theta)):
            raise IRError(f"{name}: threshold theta must be finite and > 0, got {self.theta}")
        rows = self.mu_d.shape[0] if self.mu_d.ndim == 2 else -1
        for fname, (lo, hi) in self.FACTOR_RANGES.items():
            arr = getattr(self, fname)
            if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] not in (1, self.size):
                raise IRError(
                    f"{name}: factor {fname} must be (K, 1) or (K, {self.size}) with "
                    f"the same K as mu_d, got {arr.shape}"
                )
            check_finite(name, fname, arr)
            # Closed range: a float32 sigmoid saturates to exactly lo or hi; the top value is
            # then stored as the largest 12-bit code (hi - 2**-12), see quantize_multiplier.
            if arr.min() < lo or arr.max() > hi:
                bad = arr.min() if arr.min() < lo else arr.max()
                raise IRError(
                    f"{name}: factor {fname}={bad:.6g} outside its representable range [{lo}, {hi}]"
                )
        if self.bias.shape != (self.size,):
            raise IRError(f"{name}: bias shape {self.bias.shape} != ({self.size},)")
        check_finite(name, "bias", self.bias)
        super().check(name)  # the rules
        if isinstance(self.v_d_init, np.ndarray):
            check_per_neuron(name, "v_d_init", self.v_d_init, self.size)
            check_finite(name, "v_d_init", self.v_d_init)
        for what in ("reset_value", "v_d_init", "v_s_init", "v_s_min"):
            value = getattr(self, what)
            if (what == "v_s_min" and value is None) or isinstance(value, np.ndarray):
                continue
            if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
                raise IRError(f"{name}: {what} must be a finite number, got {value!r}")


def check_per_neuron(name: str, what: str, value: np.ndarray, size: int) -> None:
    """Raise :class:`IRError` naming the layer unless ``value`` holds one entry per neuron."""
    if value.shape != (size,):
        raise IRError(
            f"{name}: {what} must be one number or one per neuron ({size},), got shape {value.shape}"
        )


def check_max_spikes(name: str, max_spikes: object, reset_timing: str) -> None:
    """Raise :class:`IRError` naming the layer unless ``1 <= max_spikes <= MAX_SPIKES`` (and
    same-step reset timing where it is above 1: no source has graded spikes with a delayed reset)."""
    if not isinstance(max_spikes, (int, np.integer)) or isinstance(max_spikes, bool):
        raise IRError(f"{name}: max_spikes must be an integer, got {max_spikes!r}")
    if not 1 <= int(max_spikes) <= MAX_SPIKES:
        raise IRError(
            f"{name}: max_spikes {max_spikes} outside [1, {MAX_SPIKES}] (a graded spike is an "
            f"{MAX_SPIKES.bit_length()}-bit message)"
        )
    if max_spikes > 1 and reset_timing != "same-step":
        raise IRError(f"{name}: max_spikes {max_spikes} needs reset_timing 'same-step', got {reset_timing!r}")


def check_rules(name: str, reset: str, threshold_test: str, reset_timing: str) -> None:
    """Raise :class:`IRError` naming the layer for an unknown neuron rule."""
    for what, value, choices in (
        ("reset", reset, RESET_RULES),
        ("threshold_test", threshold_test, THRESHOLD_TESTS),
        ("reset_timing", reset_timing, RESET_TIMINGS),
    ):
        if value not in choices:
            raise IRError(f"{name}: {what} {value!r} is not one of {' | '.join(choices)}")


def no_leak() -> np.ndarray:
    """An empty ``leaky``: the readout averages its current."""
    return np.zeros(0)


def check_leaky(name: str, leaky: np.ndarray) -> None:
    """``leaky`` is empty or ``(mu, lam, gain)`` with both decays in [0, 1]."""
    if leaky.shape not in ((0,), (3,)):
        raise IRError(f"{name}: readout leaky must be empty or (mu, lam, gain), got shape {leaky.shape}")
    check_finite(name, "leaky", leaky)
    if leaky.size and not (0 <= leaky[0] <= 1 and 0 <= leaky[1] <= 1):
        raise IRError(f"{name}: readout leaky decays {leaky[:2].tolist()} must lie in [0, 1]")


@dataclass(frozen=True)
class ReadoutFields(Node):
    """The fields the float and the integer readout share, declared once: one ``bias`` per
    class and the optional ``leaky`` filter (keyword-only, so that a subclass may add fields
    without defaults); ``check`` checks their shapes, a subclass the bias's values."""

    bias: np.ndarray
    leaky: np.ndarray = field(default_factory=no_leak, kw_only=True)

    def output_size(self) -> int:
        return int(self.bias.shape[0])

    def check(self, name: str) -> None:
        if self.bias.ndim != 1:
            raise IRError(f"{name}: readout bias must be 1-D, got {self.bias.shape}")
        check_leaky(name, self.leaky)


@dataclass(frozen=True)
class Readout(ReadoutFields):
    """Non-spiking output: ``logits = mean_t I[t] + bias``; argmax is the class.

    ``leaky`` = ``(mu, lam, gain)`` makes it a leaky integrator of ``x[t] = I[t] + bias``
    (norse's ``LICell``): ``i = mu i + x``, ``v = lam v + gain i``, logits ``mean_t v[t]``
    (:func:`lmh_deploy.semantics.readout.readout_sum`)."""

    kind: ClassVar[str] = "readout"

    def check(self, name: str) -> None:
        super().check(name)
        check_finite(name, "bias", self.bias)
