"""The integer semantics of deployed LM-H networks, defined once.

Both :mod:`sim` and the Lava ``fixed_pt`` ProcessModel call these functions, so
the two cannot drift apart. ``docs/fixed-point.md`` gives the equations.

Conventions
-----------
* States ``v_d`` and ``v_s`` are signed ``STATE_BITS`` (24) integers; every
  state update saturates to ``[-2**23, 2**23 - 1]`` (Loihi 2 state width).
* Factors are signed ``FACTOR_BITS`` (12) integers over ``2**FACTOR_SHIFT``
  (4096). ``mu`` is stored as is (``mu in [-0.5, 0.5)``); ``lam`` is stored as
  its offset from one, ``lam - 1 in [-0.5, 0.5)``, so ``lam in [0.5, 1.5)`` fits
  the same 12 bits and ``lam * v = v + (lam - 1) * v`` keeps ``v`` exact.
* A factor product is ``mul_shift(f, v) = (f * v + 2**11) >> 12``: round half up
  (arithmetic shift of the biased product; floor for negatives, as hardware).
* Weights are 8-bit signed mantissas ``m in [-127, 127]``; Lava/Loihi receive
  ``2 * m`` (even values survive Lava's mixed-sign low-bit truncation) and a
  per-layer exponent: ``a_in = (sum 2*m*s) << weight_exp`` (an arithmetic right shift,
  i.e. floor, of the sum when the exponent is negative, as Lava's Dense).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
#: Graded input values (direct encoding of pixels) are unsigned 8-bit.
INPUT_BITS = 8
INPUT_MAX = (1 << INPUT_BITS) - 1


def _is_tensor(x) -> bool:
    """True for torch tensors: the same integer semantics also run on torch (any device)."""
    return type(x).__module__.startswith("torch")


def saturate(x: np.ndarray, bits: int = STATE_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Clip ``x`` to signed ``bits`` integers; also return where clipping happened.

    Works on numpy arrays and on int64 torch tensors alike.
    """
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    clipped = (x < lo) | (x > hi)
    return (x.clamp(lo, hi) if _is_tensor(x) else np.clip(x, lo, hi)), clipped


def mul_shift(factor: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``round(factor * value / 4096)``, half up, in int64 (24 x 12 bits fits).

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
    exact_dtype = np.float32 if bound < 2.0 ** 24 else np.float64
    if bound < 2.0 ** 53:
        w = weight_lava if weight_lava.dtype == exact_dtype else weight_lava.astype(exact_dtype)
        acc = np.rint(np.asarray((w @ flat.astype(exact_dtype).T).T)).astype(np.int64)
    else:
        acc = np.asarray((weight_lava.astype(np.int64) @ flat.astype(np.int64).T).T)
    acc = acc.reshape(presyn.shape[:-1] + (weight_lava.shape[0],))
    return shift_sum(acc, weight_exp)


def conv_output(kernel_lava: np.ndarray, weight_exp: int, presyn: np.ndarray,
                input_shape: tuple[int, int, int], stride: tuple[int, int],
                padding: tuple[int, int]) -> np.ndarray:
    """Integer input of a convolution: the same sums as the synaptic matrix, computed as a conv.

    ``kernel_lava`` (C_out, C_in, kh, kw) holds Lava's integer weights; ``presyn`` is
    (B, C_in*H*W). float64 is exact below 2**53 (checked); returns (B, C_out*H'*W') int64.
    """
    import torch

    bound = float(np.abs(kernel_lava).max(initial=0)) * float(np.abs(presyn).max(initial=0)) \
        * int(np.prod(kernel_lava.shape[1:]))
    if bound >= 2.0 ** 53:
        raise OverflowError(f"convolution sums up to {bound:.3g} exceed exact float64 range")
    dtype = np.float32 if bound < 2.0 ** 24 else np.float64  # exact either way
    x = torch.from_numpy(np.ascontiguousarray(presyn, dtype=dtype)).reshape(
        (-1,) + tuple(input_shape))
    w = torch.from_numpy(np.ascontiguousarray(kernel_lava, dtype=dtype))
    acc = torch.nn.functional.conv2d(x, w, stride=tuple(stride), padding=tuple(padding))
    acc = np.rint(acc.reshape(acc.shape[0], -1).numpy()).astype(np.int64)
    return shift_sum(acc, weight_exp)


def shift_sum(acc: np.ndarray | int, weight_exp: int):
    """``acc << exp``, or an arithmetic right shift (floor) for a negative exponent."""
    return acc << weight_exp if weight_exp > 0 else acc >> -weight_exp


@dataclass(frozen=True)
class LMHFixedParams:
    """Integer parameters of one LM-H layer, broadcastable against states (..., n).

    Factor arrays have shape (K, 1) or (K, n): K = 1 for progressive factors,
    K = T for radical (per-step) factors; step ``t`` (0-based) uses row
    ``min(t, K - 1)``.
    """

    mu_d: np.ndarray
    mu_s: np.ndarray
    lam_d_off: np.ndarray  # lam_d - 1, as a 12-bit code
    lam_s_off: np.ndarray  # lam_s - 1, as a 12-bit code
    theta: int
    bias: np.ndarray  # (n,) added to the dendrite every step

    def factors_at(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The four factor codes used at 0-based step ``step``."""
        k = min(step, self.mu_d.shape[0] - 1)
        return self.mu_d[k], self.mu_s[k], self.lam_d_off[k], self.lam_s_off[k]

    def initial_state(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``v_d = 0``, ``v_s = theta // 2`` (the paper's code starts the soma at half threshold)."""
        return np.zeros(shape, np.int64), np.full(shape, self.theta // 2, np.int64)


def lmh_step(params: LMHFixedParams, step: int, v_d: np.ndarray, v_s: np.ndarray,
             a_in: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One fixed-point LM-H update (Eq. 4 of the paper), for any batch shape.

    Returns ``(v_d, v_s, spikes, saturation_events)``::

        v_d[t] = sat(mu_d*v_d[t-1] + mu_s*v_s[t-1] + a_in[t] + bias)
        m_s[t] = sat(v_s[t-1] + lam_s'*v_s[t-1] + v_d[t] + lam_d'*v_d[t])
        s[t]   = m_s[t] >= theta
        v_s[t] = m_s[t] - s[t]*theta
    where ``f*v`` is :func:`mul_shift` and ``lam' = lam - 1``.
    """
    mu_d, mu_s, lam_d_off, lam_s_off = params.factors_at(step)
    v_d_new = mul_shift(mu_d, v_d)
    v_d_new += mul_shift(mu_s, v_s)
    v_d_new += a_in
    v_d_new += params.bias
    v_d_new, sat_d = _saturate_counted(v_d_new)
    m_s = mul_shift(lam_s_off, v_s)
    m_s += v_s
    m_s += v_d_new
    m_s += mul_shift(lam_d_off, v_d_new)
    m_s, sat_s = _saturate_counted(m_s)
    spikes = m_s >= params.theta
    m_s[spikes] -= params.theta  # subtractive (soft) reset; m_s becomes v_s[t]
    return v_d_new, m_s, spikes, sat_d + sat_s


def _saturate_counted(x: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`saturate` with a cheap path when nothing is out of range (the common case)."""
    size = x.numel() if _is_tensor(x) else x.size
    if size == 0 or (bool(x.min() >= STATE_MIN) and bool(x.max() <= STATE_MAX)):
        return x, 0
    clipped, mask = saturate(x)
    return clipped, int(mask.sum())


def quantize_input(x: np.ndarray, scale: float, bits: int = INPUT_BITS) -> np.ndarray:
    """Graded input: ``clip(floor(x * scale + 1/2), 0, 2**bits - 1)`` as int64."""
    return np.clip(np.floor(np.asarray(x, np.float64) * scale + 0.5), 0, (1 << bits) - 1).astype(np.int64)
