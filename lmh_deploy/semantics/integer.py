"""The integer semantics of deployed LM-H networks, defined once.

Both :mod:`sim` and the Lava ``fixed_pt`` ProcessModel call these functions, so
the two cannot drift apart. ``docs/fixed-point.md`` gives the equations.

Conventions
-----------
* States ``v_d`` and ``v_s`` are signed ``STATE_BITS`` (24) integers; a state leaving
  24 bits saturates or wraps as the layer's :class:`~lmh_deploy.semantics.profiles.NumericProfile`
  declares (each event is counted).
* Factors are FULL integer multipliers over ``2**FACTOR_SHIFT`` (4096): ``lam = 1.25`` is
  5120. Which multipliers are legal (and how hardware stores them: the ``lmh`` encoding
  keeps ``lam - 4096`` in signed 12 bits) is the profile's factor encoding.
* A factor product ``R(f * v / 4096)`` rounds as the profile says (:func:`product`);
  the default ``lmh`` profile rounds half up, ``(f*v + 2**11) >> 12``.
* Weights are 8-bit signed mantissas ``m in [-127, 127]``; Lava/Loihi receive
  ``2 * m`` (even values survive Lava's mixed-sign low-bit truncation) and a
  per-layer exponent: ``a_in = (sum 2*m*s) << weight_exp`` (an arithmetic right shift,
  i.e. floor, of the sum when the exponent is negative, as Lava's Dense).
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Any

import numpy as np

from lmh_deploy.semantics.profiles import LMH_PROFILE, NumericProfile, get_profile

STATE_BITS = 24
STATE_MIN = -(1 << (STATE_BITS - 1))
STATE_MAX = (1 << (STATE_BITS - 1)) - 1
FACTOR_BITS = 12
FACTOR_SHIFT = 12
FACTOR_ONE = 1 << FACTOR_SHIFT
FACTOR_MIN = -(1 << (FACTOR_BITS - 1))
FACTOR_MAX = (1 << (FACTOR_BITS - 1)) - 1
WEIGHT_MANT_MAX = 127
#: Lava Dense stores ``WEIGHT_LAVA_SCALE * mantissa``: even values, unchanged by its truncation.
WEIGHT_LAVA_SCALE = 2
#: Per-layer weight exponent range (Loihi's synaptic weight exponent is a small signed field).
WEIGHT_EXP_MIN = -8
WEIGHT_EXP_MAX = 15
#: Graded input values (direct encoding) are messages of a width declared per network
#: (``Input.bits``, ``QInput.bits``; docs/fixed-point.md §7): unsigned ``[0, 2**bits - 1]`` when
#: the inputs are non-negative, else signed and symmetric ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``.
#: Defaults (:func:`default_input_bits`): 8 bits for unsigned pixels; 16 for signed inputs
#: (normalised images), whose extra bits the first layer's weight exponent absorbs (a floor
#: shift of the sum), so they cost no weight precision; 8 under a profile with a fixed weight
#: exponent (``loihi-lif``), where every input bit would take one off the first layer's mantissas.
INPUT_BITS_UNSIGNED = 8
INPUT_BITS_SIGNED = 16
#: Widest graded message: Lava's graded spike payloads carry up to 24 bits.
INPUT_BITS_MAX = 24
#: Lava's Dense sums ``weights.dot(s_in)`` in int32 before its exponent shift: every
#: worst-case unshifted synaptic sum stays within this.
ACCUMULATOR_MAX = (1 << 31) - 1
#: A graded spike (a layer with ``max_spikes > 1``) is an unsigned count message of these bits;
#: Lava's Dense/Sparse/Conv then read it with ``num_message_bits = SPIKE_COUNT_BITS``.
SPIKE_COUNT_BITS = 8
MAX_SPIKES = (1 << SPIKE_COUNT_BITS) - 1


def _is_tensor(x) -> bool:
    """True for torch tensors: the same integer semantics also run on torch (any device)."""
    return type(x).__module__.startswith("torch")


def saturate(x: Any, bits: int = STATE_BITS) -> tuple[Any, Any]:
    """Clip ``x`` to signed ``bits`` integers; also return where clipping happened.

    Works on numpy arrays and on int64 torch tensors alike.
    """
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    clipped = (x < lo) | (x > hi)
    return (x.clamp(lo, hi) if _is_tensor(x) else np.clip(x, lo, hi)), clipped


def mul_shift(factor: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``round(factor * value / 4096)``, half up, in int64: :func:`product` of the lmh profile.

    numpy inputs are cast to int64 (no copy if they are already); torch tensors must be
    int64 already (their ``>>`` is arithmetic, i.e. floor, like numpy's).
    """
    if _is_tensor(value):
        product = factor * value
    else:
        product = np.asarray(factor, np.int64) * np.asarray(value, np.int64)
    product += 1 << (FACTOR_SHIFT - 1)
    product >>= FACTOR_SHIFT
    return product


def quantize_multiplier(value: np.ndarray | float, lo: int, hi: int) -> np.ndarray:
    """Full integer multiplier ``round(value * 4096)`` clipped to ``[lo, hi]`` (the profile's range)."""
    code = np.round(np.asarray(value, dtype=np.float64) * FACTOR_ONE)
    return np.clip(code, lo, hi).astype(np.int64)


def quantize_factor(value: np.ndarray | float, offset: float = 0.0) -> np.ndarray:
    """Signed 12-bit code of ``value - offset`` over 4096, saturated (``offset=1`` for lambda)."""
    code = np.round((np.asarray(value, dtype=np.float64) - offset) * FACTOR_ONE)
    return np.clip(code, FACTOR_MIN, FACTOR_MAX).astype(np.int64)


def dequantize_factor(code: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Real value of a 12-bit factor code."""
    return np.asarray(code, dtype=np.float64) / FACTOR_ONE + offset


def dense_output(weight_lava, weight_exp: int, presyn: np.ndarray) -> np.ndarray:
    """Integer synaptic input ``(W @ s) << exp`` as Lava's bit-accurate Dense/Sparse compute it.

    ``weight_lava`` is a dense array or a scipy sparse matrix (n_out, n_in) of integers
    (any dtype holding integer values); ``presyn`` is (..., n_in) spikes (0/1) or graded
    integers; returns (..., n_out) int64.
    """
    # Float BLAS is exact while every partial sum is an integer below 2**24 (float32) or
    # 2**53 (float64), and far faster than numpy's integer matmul; the bound is checked,
    # so the result is always the int64 one.
    peak_w = float(abs(weight_lava).max()) if weight_lava.shape[0] * weight_lava.shape[1] else 0.0
    bound = peak_w * float(np.abs(presyn).max(initial=0)) * weight_lava.shape[1]
    flat = presyn.reshape(-1, presyn.shape[-1])
    exact_dtype = np.float32 if bound < 2.0**24 else np.float64
    if bound < 2.0**53:
        w = weight_lava if weight_lava.dtype == exact_dtype else weight_lava.astype(exact_dtype)
        acc = np.rint(np.asarray((w @ flat.astype(exact_dtype).T).T)).astype(np.int64)
    else:
        acc = np.asarray((weight_lava.astype(np.int64) @ flat.astype(np.int64).T).T)
    acc = acc.reshape(presyn.shape[:-1] + (weight_lava.shape[0],))
    return shift_sum(acc, weight_exp)


def conv_output(
    kernel_lava: np.ndarray,
    weight_exp: int,
    presyn: np.ndarray,
    input_shape: tuple[int, int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> np.ndarray:
    """Integer input of a convolution: the same sums as the synaptic matrix, computed as a conv.

    ``kernel_lava`` (C_out, C_in, kh, kw) holds Lava's integer weights; ``presyn`` is
    (B, C_in*H*W). float64 is exact below 2**53 (checked); returns (B, C_out*H'*W') int64.
    """
    import torch

    bound = (
        float(np.abs(kernel_lava).max(initial=0))
        * float(np.abs(presyn).max(initial=0))
        * int(np.prod(kernel_lava.shape[1:]))
    )
    if bound >= 2.0**53:
        raise OverflowError(f"convolution sums up to {bound:.3g} exceed exact float64 range")
    dtype = np.float32 if bound < 2.0**24 else np.float64  # exact either way
    x = torch.from_numpy(np.ascontiguousarray(presyn, dtype=dtype)).reshape((-1,) + tuple(input_shape))
    w = torch.from_numpy(np.ascontiguousarray(kernel_lava, dtype=dtype))
    acc = torch.nn.functional.conv2d(x, w, stride=tuple(stride), padding=tuple(padding))
    acc = np.rint(acc.reshape(acc.shape[0], -1).numpy()).astype(np.int64)
    return shift_sum(acc, weight_exp)


def shift_sum(acc: np.ndarray | int, weight_exp: int):
    """``acc << exp``, or an arithmetic right shift (floor) for a negative exponent."""
    return acc << weight_exp if weight_exp > 0 else acc >> -weight_exp


@dataclass(frozen=True)
class LMHFixedParams:
    """Integer parameters and rules of one LM-H layer, broadcastable against states (..., n).

    Factor arrays are FULL multipliers over 4096 (``lam = 1.25`` is 5120) of shape (K, 1)
    or (K, n): K = 1 for progressive factors, K = T for radical (per-step) factors; step
    ``t`` (0-based) uses row ``min(t, K - 1)``. Arrays may be numpy or int64 torch tensors.
    """

    mu_d: np.ndarray
    mu_s: np.ndarray
    lam_d: np.ndarray
    lam_s: np.ndarray
    theta: int
    bias: np.ndarray  # (n,) added every step, to the dendrite or soma as the profile says
    profile: NumericProfile = LMH_PROFILE
    reset: str = "subtract"
    reset_value: int = 0
    threshold_test: str = ">="
    reset_timing: str = "same-step"
    v_d_init: int | np.ndarray = 0  # one value per layer, or (n,) per neuron (a per-neuron offset)
    v_s_init: int | None = None  # None: theta // 2 (the paper's code starts at half threshold)
    max_spikes: int = 1  # K > 1: graded spikes, up to K a step (spike_count)
    v_s_min: int | None = None  # a floor v_s is clipped to after the reset (None: none)

    def factors_at(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The four factor multipliers used at 0-based step ``step``."""
        k = min(step, self.mu_d.shape[0] - 1)
        return self.mu_d[k], self.mu_s[k], self.lam_d[k], self.lam_s[k]

    def initial_values(self) -> tuple[int | np.ndarray, int]:
        """``(v_d, v_s)`` every sample starts with (``v_d`` an (n,) array where it is per neuron)."""
        v_s = self.theta // 2 if self.v_s_init is None else self.v_s_init
        return initial_ints(self.v_d_init), int(v_s)

    def initial_state(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Initial ``(v_d, v_s)`` as int64 numpy arrays of ``shape`` (..., n)."""
        v_d, v_s = self.initial_values()
        return np.full(shape, v_d, np.int64), np.full(shape, v_s, np.int64)


def per_neuron_or_one(value: Any) -> Any:
    """A per-neuron value (an initial state) as the one number it holds where every neuron
    holds the same (a layer's usual case, stored and reported as before), else its 1-D array.
    Scalars pass unchanged."""
    if np.ndim(value) == 0:
        return value
    arr = np.asarray(value).reshape(-1)
    if arr.size and np.all(arr == arr[0]):
        return arr[0].item()
    return arr


def initial_ints(value: Any) -> int | np.ndarray:
    """An integer initial state, one per layer (an ``int``) or per neuron (an int64 array)."""
    return int(value) if np.ndim(value) == 0 else np.asarray(value, np.int64)


def layer_params(node, convert=None) -> LMHFixedParams:
    """The parameter bundle of an integer LM-H layer (any object with ``QLMH``'s fields).

    ``convert`` maps each array (e.g. to an int64 torch tensor on a device).
    """
    conv = convert or (lambda a: a)
    return LMHFixedParams(
        mu_d=conv(node.mu_d),
        mu_s=conv(node.mu_s),
        lam_d=conv(node.lam_d),
        lam_s=conv(node.lam_s),
        theta=int(node.theta),
        bias=conv(node.bias),
        profile=get_profile(node.profile),
        reset=node.reset,
        reset_value=int(node.reset_value),
        threshold_test=node.threshold_test,
        reset_timing=node.reset_timing,
        v_d_init=initial_ints(node.v_d_init),
        v_s_init=None if node.v_s_init is None else int(node.v_s_init),
        max_spikes=int(node.max_spikes),
        v_s_min=None if node.v_s_min is None else int(node.v_s_min),
    )


def product(factor, value, rounding: str = "half-up"):
    """``R(factor * value / 4096)`` in int64 (24 x 13 bits fits), rounded as the profile says.

    half-up: ``(x + 2048) >> 12``; toward-zero: ``sign(x) * (|x| >> 12)``; floor: ``x >> 12``.
    numpy inputs are cast to int64; torch tensors must be int64 already.
    """
    if _is_tensor(value) or _is_tensor(factor):
        x = factor * value
    else:
        x = np.asarray(factor, np.int64) * np.asarray(value, np.int64)
    if rounding == "half-up":
        x += 1 << (FACTOR_SHIFT - 1)
        x >>= FACTOR_SHIFT
        return x
    if rounding == "floor":
        x >>= FACTOR_SHIFT
        return x
    if rounding == "toward-zero":
        sign = x.sign() if _is_tensor(x) else np.sign(x)
        return sign * (abs(x) >> FACTOR_SHIFT)
    raise ValueError(f"unknown rounding {rounding!r}")


def overflow(x, mode: str):
    """Bring ``x`` back into 24 bits as ``mode`` says; returns ``(x, elements changed)``.

    saturate: clip to [-2**23, 2**23 - 1]; saturate-symmetric: clip to +-(2**23 - 1);
    wrap: Lava LIF's current wrap, ``w = x - 2**24 where x > 2**23``, then ``x + 2**24``
    where ``w <= -2**23`` (so 2**23 itself is kept and -2**23 becomes 2**23, as Lava does).
    """
    size = x.numel() if _is_tensor(x) else x.size
    lo = STATE_MIN if mode == "saturate" else STATE_MIN + 1
    hi = STATE_MAX + 1 if mode == "wrap" else STATE_MAX
    if size == 0 or (bool(x.min() >= lo) and bool(x.max() <= hi)):
        return x, 0  # the common case: nothing out of range
    if mode in ("saturate", "saturate-symmetric"):
        changed = (x < lo) | (x > hi)
        out = x.clamp(lo, hi) if _is_tensor(x) else np.clip(x, lo, hi)
        return out, int(changed.sum())
    if mode != "wrap":
        raise ValueError(f"unknown overflow mode {mode!r}")
    where = _where_for(x)
    span = 1 << STATE_BITS
    top = 1 << (STATE_BITS - 1)
    wrapped = where(x > top, x - span, x)
    wrapped = where(wrapped <= -top, x + span, wrapped)
    return wrapped, int((wrapped != x).sum())


def _where_for(x):
    if _is_tensor(x):
        import torch

        return torch.where
    return np.where


def spike_count(m_s, theta, threshold_test: str, max_spikes: int):
    """Spikes of one step: ``m_s >= theta`` (or ``>``) as bool for ``max_spikes == 1``; else
    the number of multiples of theta that pass the test, capped, as int64::

        >=: clip(floor(m_s / theta), 0, K)        (sinabs MultiSpike, rockpool LIFTorch)
        > : clip(ceil(m_s / theta) - 1, 0, K)

    The same function serves integer states (numpy int64 or torch) and the float reference.
    """
    if max_spikes == 1:
        return m_s >= theta if threshold_test == ">=" else m_s > theta
    if _is_tensor(m_s):
        import torch

        q = torch.div(m_s, theta, rounding_mode="floor")
        if threshold_test == ">":
            q = torch.where(q * theta == m_s, q - 1, q)
        return q.clamp(0, max_spikes).to(torch.int64)
    q = np.floor_divide(m_s, theta)
    if threshold_test == ">":
        q = np.where(q * theta == m_s, q - 1, q)
    return np.clip(q, 0, max_spikes).astype(np.int64)


def lmh_step(params: LMHFixedParams, step: int, v_d, v_s, a_in, s_prev=None):
    """One integer LM-H update (Eq. 4) under ``params.profile`` and the layer's rules.

    Returns ``(v_d, v_s, spikes, overflow_events)``; works for any batch shape, on numpy
    arrays or int64 torch tensors. ``s_prev`` is the previous step's spikes (only read for
    ``reset_timing == "next-step"``; None at the first step)::

        v_d' = OVd( R(mu_d v_d) + R(mu_s v_s) + (a_in << input_shift) [+ bias] )
        m_s  = OVs( R(lam_s v_s) + R(lam_d v_d') [+ bias] [- theta s_prev] )
        (next-step set reset: m_s = reset_value where s_prev)
        s    = m_s >= theta   (or m_s > theta)
        v_s' = m_s - theta s  (or reset_value where s; next-step timing: v_s' = m_s)

    With ``max_spikes`` K > 1, ``s`` is the spike count of :func:`spike_count` (int64, up to
    K), and the subtractive reset takes ``theta s`` off: a graded spike. ``v_s_min`` (if set)
    is a floor: ``v_s' = max(v_s', v_s_min)`` after the reset (sinabs's ``min_v_mem``).
    ``R`` rounds as the profile says, ``OVd``/``OVs`` saturate or wrap (each out-of-range
    element counts as one event); ``[+ bias]`` goes to the dendrite or the soma.
    """
    prof = params.profile
    mu_d, mu_s, lam_d, lam_s = params.factors_at(step)
    shift = prof.input_shift
    v_d_new = product(mu_d, v_d, prof.rounding)
    v_d_new += product(mu_s, v_s, prof.rounding)
    v_d_new += (a_in << shift) if shift else a_in
    if prof.bias_to == "dendrite":
        v_d_new += params.bias
    v_d_new, events_d = overflow(v_d_new, prof.overflow_v_d)
    m_s = product(lam_s, v_s, prof.rounding)
    m_s += product(lam_d, v_d_new, prof.rounding)
    if prof.bias_to == "soma":
        m_s += params.bias
    delayed = params.reset_timing == "next-step" and s_prev is not None
    if delayed and params.reset == "subtract":
        m_s = m_s - params.theta * s_prev
    m_s, events_s = overflow(m_s, prof.overflow_v_s)
    where = _where_for(m_s)
    if delayed and params.reset == "set":
        m_s = where(s_prev, params.reset_value, m_s)
    spikes = spike_count(m_s, params.theta, params.threshold_test, params.max_spikes)
    if params.reset_timing == "next-step":
        v_s_new = m_s
    elif params.reset == "subtract":
        v_s_new = m_s - params.theta * spikes
    else:
        v_s_new = where(spikes > 0, params.reset_value, m_s)
    if params.v_s_min is not None:
        v_s_new = where(v_s_new < params.v_s_min, params.v_s_min, v_s_new)
    return v_d_new, v_s_new, spikes, events_d + events_s


def default_input_bits(signed: bool, profile: str | NumericProfile = LMH_PROFILE) -> int:
    """The graded input width a network gets unless told otherwise (see ``INPUT_BITS_SIGNED``)."""
    prof = get_profile(profile) if isinstance(profile, str) else profile
    return INPUT_BITS_SIGNED if signed and prof.fixed_weight_exp is None else INPUT_BITS_UNSIGNED


def input_levels(bits: int, signed: bool = False) -> int:
    """Largest magnitude of a ``bits``-wide input message (255 unsigned 8-bit, 32767 signed 16-bit)."""
    return max(abs(v) for v in input_range(bits, signed))


def input_range(bits: int = INPUT_BITS_UNSIGNED, signed: bool = False) -> tuple[int, int]:
    """Integer range of an input message: ``[0, 2**bits - 1]``, or ``[-(2**(bits-1) - 1),
    2**(bits-1) - 1]`` when signed (symmetric: ``-2**(bits-1)`` is never sent)."""
    if signed:
        top = (1 << (bits - 1)) - 1
        return -top, top
    return 0, (1 << bits) - 1


def quantize_input(
    x: np.ndarray, scale: float, bits: int = INPUT_BITS_UNSIGNED, signed: bool = False
) -> np.ndarray:
    """Graded input: ``clip(floor(x * scale + 1/2), lo, hi)`` as int64 (:func:`input_range`)."""
    lo, hi = input_range(bits, signed)
    return np.clip(np.floor(np.asarray(x, np.float64) * scale + 0.5), lo, hi).astype(np.int64)
