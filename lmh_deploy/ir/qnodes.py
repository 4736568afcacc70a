"""Integer IR nodes, as the quantise pass produces them (Loihi 2 fixed point)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from lmh_deploy.ir.base import IRError, Node, check_integers, check_positive
from lmh_deploy.ir.nodes import (
    Conv2d,
    MaxPool,
    ReadoutFields,
    RuleChoices,
    check_max_spikes,
    check_per_neuron,
)
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import PROFILES


@dataclass(frozen=True)
class QInput(Node):
    """Input quantised to ``bits``: ``x_int = clip(floor(x * scale + 1/2), lo, hi)`` with
    ``[lo, hi] = [0, 2**bits - 1]``, or ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` when ``signed``."""

    kind: ClassVar[str] = "q_input"
    shape: tuple[int, ...]
    scale: float
    bits: int
    signed: bool = False

    @property
    def max_value(self) -> int:
        """Largest magnitude of an integer input value."""
        return fx.input_levels(self.bits, self.signed)

    def quantize(self, x: Any) -> np.ndarray:
        """Float inputs -> the integer messages this input sends (:func:`fx.quantize_input`)."""
        return fx.quantize_input(x, self.scale, self.bits, self.signed)

    def output_size(self) -> int:
        return int(np.prod(self.shape))

    def check(self, name: str) -> None:
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise IRError(f"{name}: input shape {self.shape} must be non-empty and positive")
        check_positive(name, "scale", self.scale)
        check_integers(name, "bits", self.bits, 1, fx.INPUT_BITS_MAX)
        if self.signed and self.bits < 2:
            raise IRError(f"{name}: a signed input needs at least 2 bits, got {self.bits}")


@dataclass(frozen=True)
class QDense(Node):
    """Integer synapses: ``a = (sum_j 2*m_ij x_j) << weight_exp`` (Lava weights = ``2*m``).

    The composition of every float synapse node between two neuron layers (e.g. pool ->
    conv). ``weight_mant`` is a dense int array, or a ``scipy.sparse.csr_matrix`` for
    convolutions and pooling. ``graded`` is true when the presynaptic side sends integers
    (the input layer). ``delay`` is the number of extra steps this path must wait so that
    parallel branches into one neuron arrive together (residual shortcuts).

    A single convolution (possibly with a pooling folded in) keeps its kernel instead of a
    matrix: ``weight_mant`` is then (C_out, C_in, kh, kw) and ``conv_input_shape``,
    ``conv_stride``, ``conv_padding`` give its geometry, so large networks never
    materialise their synaptic matrices (``lmh_deploy.ir.synapses.qdense_matrix`` does,
    on demand).

    ``pool_kernel`` (with ``pool_stride``, ``pool_padding``, ``pool_dilation``,
    ``pool_ceil_mode``, torch's ``MaxPool2d`` arguments) makes a convolution's path deliver
    the max pool of its integer currents (:attr:`max_pool`,
    :mod:`lmh_deploy.semantics.pooling`): ``output_size`` is then the pooled size and
    :meth:`sums_size` the convolution's.
    """

    kind: ClassVar[str] = "q_dense"
    weight_mant: Any  # np.ndarray | scipy.sparse.csr_matrix, int, |m| <= 127
    weight_exp: int
    graded: bool
    weight_scale: float  # float weight (times presynaptic amplitude) = m / weight_scale
    delay: int = 0
    conv_input_shape: tuple[int, ...] | None = None
    conv_stride: tuple[int, ...] = (1, 1)
    conv_padding: tuple[int, ...] = (0, 0)
    pool_kernel: tuple[int, ...] | None = None
    pool_stride: tuple[int, ...] = (1, 1)
    pool_padding: tuple[int, ...] = (0, 0)
    pool_dilation: tuple[int, ...] = (1, 1)
    pool_ceil_mode: bool = False

    @property
    def is_conv(self) -> bool:
        return self.conv_input_shape is not None

    @property
    def max_pool(self) -> MaxPool | None:
        """The max pool of this convolution's currents, or None (no pooling)."""
        if self.pool_kernel is None:
            return None
        return MaxPool(
            input_shape=self.conv_node().output_shape,
            kernel=tuple(self.pool_kernel),
            stride=tuple(self.pool_stride),
            padding=tuple(self.pool_padding),
            dilation=tuple(self.pool_dilation),
            ceil_mode=bool(self.pool_ceil_mode),
        )

    def conv_node(self, weight=None) -> Conv2d:
        """The float Conv2d node with this geometry (``weight`` defaults to the mantissas)."""
        if self.conv_input_shape is None:
            raise TypeError("conv_node() of a q_dense that is not a convolution")
        return Conv2d(
            weight=self.weight_mant if weight is None else weight,
            input_shape=tuple(self.conv_input_shape),
            stride=tuple(self.conv_stride),
            padding=tuple(self.conv_padding),
        )

    def sums_size(self) -> int:
        """Synaptic sums per step (rows of the synaptic matrix), before any max pool."""
        if self.is_conv:
            return self.conv_node().output_size()
        return int(self.weight_mant.shape[0])

    def output_size(self) -> int:
        pool = self.max_pool
        return self.sums_size() if pool is None else pool.output_size()

    def input_size(self) -> int:
        if self.conv_input_shape is not None:
            return int(np.prod(self.conv_input_shape))
        return int(self.weight_mant.shape[1])

    def check(self, name: str) -> None:
        m = self.weight_mant
        if not (sp.issparse(m) or isinstance(m, np.ndarray)):
            raise IRError(f"{name}: weight_mant must be an array or CSR matrix, got {type(m).__name__}")
        if self.is_conv:
            self.conv_node().check(name)  # kernel shape and geometry, as the float Conv2d
        elif m.ndim != 2 or 0 in m.shape:
            raise IRError(f"{name}: weight_mant must be a non-empty 2-D matrix, got {m.shape}")
        check_integers(name, "weight_mant", m, -fx.WEIGHT_MANT_MAX, fx.WEIGHT_MANT_MAX)
        check_integers(name, "weight_exp", self.weight_exp, fx.WEIGHT_EXP_MIN, fx.WEIGHT_EXP_MAX)
        check_integers(name, "delay", self.delay, 0, fx.STATE_MAX)
        if not isinstance(self.graded, (bool, np.bool_)):
            raise IRError(f"{name}: graded must be true or false, got {self.graded!r}")
        check_positive(name, "weight_scale", self.weight_scale)
        if self.pool_kernel is not None:
            if not self.is_conv:
                raise IRError(f"{name}: a max pool of currents needs a convolution's geometry")
            pool = self.max_pool
            assert pool is not None
            pool.check(name)


@dataclass(frozen=True)
class QLMH(RuleChoices):
    """Integer LM-H layer; see :mod:`lmh_deploy.semantics.integer` for the exact arithmetic.

    ``mu_d, mu_s, lam_d, lam_s`` are FULL integer multipliers over 4096 (``lam = 1.25`` is
    5120). The rules are the float node's in integer state units (``v_s_init`` None means
    ``theta // 2``); ``profile`` names the
    :class:`~lmh_deploy.semantics.profiles.NumericProfile` the layer runs under.
    ``state_scale`` is integer state units per float unit (``theta = theta_float * scale``).
    """

    kind: ClassVar[str] = "q_lmh"
    size: int
    theta: int
    mu_d: np.ndarray
    mu_s: np.ndarray
    lam_d: np.ndarray
    lam_s: np.ndarray
    bias: np.ndarray
    state_scale: float
    profile: str = "lmh"
    reset_value: int = 0
    v_d_init: int | np.ndarray = 0  # one value, or one per neuron (as the float node's)
    v_s_init: int | None = None
    max_spikes: int = 1
    v_s_min: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "v_d_init", fx.per_neuron_or_one(self.v_d_init))
        super().__post_init__()

    def output_size(self) -> int:
        return self.size

    def check(self, name: str) -> None:
        check_max_spikes(name, self.max_spikes, self.reset_timing)
        if self.profile not in PROFILES:
            raise IRError(f"{name}: unknown numeric profile {self.profile!r} (known: {', '.join(PROFILES)})")
        profile = PROFILES[self.profile]
        super().check(name)  # the rules
        v_s_init = int(self.theta) // 2 if self.v_s_init is None else self.v_s_init
        problem = profile.rule_problem(
            self.reset, self.threshold_test, self.reset_timing, self.reset_value, self.v_d_init, v_s_init
        )
        if problem:
            raise IRError(f"{name}: numeric profile {self.profile} cannot express {problem}")
        if self.v_s_min is not None and not profile.soma_floor:
            raise IRError(f"{name}: numeric profile {self.profile} cannot express a soma floor (v_s_min)")
        check_integers(name, "size", self.size, 1, np.iinfo(np.int64).max)
        check_integers(name, "threshold theta", self.theta, 1, fx.STATE_MAX)
        rows = self.mu_d.shape[0] if self.mu_d.ndim == 2 else -1
        for fname in ("mu_d", "mu_s", "lam_d", "lam_s"):
            arr = getattr(self, fname)
            if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] not in (1, self.size):
                raise IRError(
                    f"{name}: factor {fname} must be (K, 1) or (K, {self.size}) with "
                    f"the same K as mu_d, got {arr.shape}"
                )
            lo, hi = profile.factor_range(fname)
            check_integers(name, f"factor {fname} (profile {self.profile})", arr, lo, hi)
        if self.bias.shape != (self.size,):
            raise IRError(f"{name}: bias shape {self.bias.shape} != ({self.size},)")
        check_integers(name, "bias", self.bias, fx.STATE_MIN, fx.STATE_MAX)
        if isinstance(self.v_d_init, np.ndarray):
            check_per_neuron(name, "v_d_init", self.v_d_init, self.size)
        for what in ("reset_value", "v_d_init", "v_s_init", "v_s_min"):
            if getattr(self, what) is not None:
                check_integers(name, what, getattr(self, what), fx.STATE_MIN, fx.STATE_MAX)
        check_positive(name, "state_scale", self.state_scale)


@dataclass(frozen=True)
class QReadout(ReadoutFields):
    """Integer readout: ``logits_int = sum_t a[t] + T * bias``; float logits = that / (T*scale).

    ``leaky`` as :class:`~lmh_deploy.ir.nodes.Readout`'s: the host filters ``a[t] + bias``
    (float64) and ``logits_int`` is the sum of the filtered values."""

    kind: ClassVar[str] = "q_readout"
    state_scale: float

    def check(self, name: str) -> None:
        super().check(name)
        check_integers(name, "bias", self.bias, fx.STATE_MIN, fx.STATE_MAX)
        check_positive(name, "state_scale", self.state_scale)
