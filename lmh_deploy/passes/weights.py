"""Joint weight quantisation: the synapse paths into one layer share one 8-bit mantissa scale
and one exponent, so their integer currents add exactly in the neuron.

The quantity quantised is the float current per integer presynaptic unit, ``W * a`` (see
:mod:`lmh_deploy.passes.compose`). It becomes an 8-bit mantissa ``m = round(W a * s_w)``,
``s_w = 127 / max|W a|``, and the layer's states are counted in units of ``1 / S`` with
``S = 2**(exp + 1) * s_w``, so the integer current is exactly ``(sum 2 m x) << exp``. The
exponent is the largest that keeps the worst-case current within the headroom (negative, a
floor shift of the sum, for very wide layers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmh_deploy.ir.synapses import MANT_DTYPE, DenseChain, abs_row_sums
from lmh_deploy.passes.compose import SynapsePath
from lmh_deploy.semantics import integer as fx

#: Worst-case |synaptic input| per step is kept below 2**20: states integrate several steps
#: of input (and lam, mu gains), so 3 bits are left between one step's input and 24 bits.
CURRENT_HEADROOM_BITS = fx.STATE_BITS - 4


@dataclass(frozen=True)
class WeightQuant:
    """An 8-bit mantissa matrix with its per-layer scale and exponent."""

    mant: np.ndarray
    scale: float  # float value = mant / scale
    exp: int


#: entries rounded at a time: bounds the float temporaries of a large matrix (a few MB)
_ROUND_CHUNK = 1 << 20


def _rounded(values: np.ndarray, scale: float, out: np.ndarray) -> np.ndarray:
    """``out[:] = clip(round(values * scale), -127, 127)``, a chunk at a time."""
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _ROUND_CHUNK):
        part = flat_in[start : start + _ROUND_CHUNK] * scale
        np.round(part, out=part)
        np.clip(part, -fx.WEIGHT_MANT_MAX, fx.WEIGHT_MANT_MAX, out=part)
        flat_out[start : start + _ROUND_CHUNK] = part
    return out


def _round_mantissa(w_eff, scale: float):
    """``clip(round(w * scale), -127, 127)`` as :data:`~lmh_deploy.ir.synapses.MANT_DTYPE`:
    dense (a :class:`DenseChain` too, filled a block of rows at a time), or CSR with its zeros
    dropped."""
    if isinstance(w_eff, DenseChain):
        out = np.empty(w_eff.shape, MANT_DTYPE)
        for rows, block in w_eff.row_blocks():
            _rounded(block.toarray(), scale, out[rows])
        return out
    if not sp.issparse(w_eff):
        w = np.asarray(w_eff)  # in its own dtype: float32 * scale rounds in float32
        return _rounded(w, scale, np.empty(w.shape, MANT_DTYPE))
    csr = sp.csr_matrix(w_eff)
    data = _rounded(np.asarray(csr.data, np.float64), scale, np.empty(csr.data.shape, MANT_DTYPE))
    m = sp.csr_matrix((data, csr.indices.copy(), csr.indptr.copy()), shape=csr.shape)
    m.eliminate_zeros()
    return m


def abs_max(w_eff) -> float:
    """``max |w|`` of a path's weights (dense, CSR, kernel or :class:`DenseChain`); 0 if empty."""
    if isinstance(w_eff, DenseChain):
        return max((float(abs(block).max()) for _, block in w_eff.row_blocks()), default=0.0)
    return float(abs(w_eff).max()) if np.prod(w_eff.shape) else 0.0


def _exponent(worst: int, headroom_bits: int = CURRENT_HEADROOM_BITS, limit: int | None = None) -> int:
    """Largest exponent keeping ``worst`` (unshifted worst-case current) within the headroom
    (``2**headroom_bits``, or ``limit`` when given)."""
    limit = (1 << headroom_bits) if limit is None else limit
    exp = 0
    # Wide layers (e.g. 784 graded inputs) can exceed the limit unshifted: shift the sum down.
    while exp > fx.WEIGHT_EXP_MIN and fx.shift_sum(worst, exp) > limit:
        exp -= 1
    while exp < fx.WEIGHT_EXP_MAX and fx.shift_sum(worst, exp + 1) <= limit:
        exp += 1
    return exp


def worst_rows(mants: list[Any], paths: list[tuple]) -> np.ndarray:
    """Worst-case unshifted |current| per postsynaptic neuron, summed over the paths.

    Kernels give one value per output channel, repeated over its ``repeat`` positions.
    """
    total: Any = 0
    for m, path in zip(mants, paths):
        max_presyn, repeat = path[1], (path[2] if len(path) > 2 else 1)
        total = total + np.repeat(fx.WEIGHT_LAVA_SCALE * max_presyn * abs_row_sums(m), repeat)
    return np.asarray(total)


def quantize_joint(
    paths: list[tuple] | list[SynapsePath],
    headroom_bits: int = CURRENT_HEADROOM_BITS,
    fixed_exp: int | None = None,
    max_scale: float = math.inf,
    limit: int | None = None,
    max_state_scale: float = math.inf,
) -> tuple[list[Any], float, int]:
    """Quantise the synaptic weights of all paths into one neuron layer together.

    ``paths`` holds ``(w_eff, max_presyn[, repeat])`` per path: dense or CSR matrices,
    :class:`~lmh_deploy.ir.synapses.DenseChain`, or 4-D conv kernels (``repeat`` = output
    positions per channel), of the float current per presynaptic unit. All paths share one
    scale and exponent, so their integer currents add exactly in the neuron.
    ``max_state_scale`` bounds the layer's state scale (:func:`state_scale`) so that its
    threshold and bias fit the states. Returns ``(mantissas, scale, exp)``.

    The exponent is the largest that keeps the worst-case current within the headroom
    (``fixed_exp`` when given). Where even ``WEIGHT_EXP_MIN`` (or the fixed exponent) leaves
    it above, or the unshifted worst-case sum leaves Lava's int32 accumulator
    (``fx.ACCUMULATOR_MAX``; wide graded inputs), the mantissas shrink until both fit.
    Composed :class:`SynapsePath` objects may stand for the tuples.
    """
    paths = [(p.weights, p.max_presyn, p.repeat) if isinstance(p, SynapsePath) else p for p in paths]
    peak = max(abs_max(p[0]) for p in paths)
    scale = fx.WEIGHT_MANT_MAX / peak if peak > 0 else 1.0
    scale = min(scale, max_scale)
    mants = [_round_mantissa(p[0], scale) for p in paths]
    worst = int(np.max(worst_rows(mants, paths), initial=0))
    if fixed_exp is None:
        exp = _exponent(worst, headroom_bits, limit)
        # Weights tiny beside the threshold: a smaller exponent (not below 0 unless the
        # headroom asked for it), then fewer mantissa bits, rather than a threshold that
        # overflows the states.
        floor = min(exp, 0)
        while exp > floor and fx.WEIGHT_LAVA_SCALE * 2.0**exp * scale > max_state_scale:
            exp -= 1
        if fx.WEIGHT_LAVA_SCALE * 2.0**exp * scale > max_state_scale:
            scale = max_state_scale / (fx.WEIGHT_LAVA_SCALE * 2.0**exp)
            mants = [_round_mantissa(p[0], scale) for p in paths]
            worst = int(np.max(worst_rows(mants, paths), initial=0))
    else:
        exp = fixed_exp
    limit = (1 << headroom_bits) if limit is None else limit
    # As netx's own exporter does for its fixed exponent: shrink until the worst case fits.
    while (fx.shift_sum(worst, exp) > limit or worst > fx.ACCUMULATOR_MAX) and scale > 0:
        scale *= min(0.99, limit / fx.shift_sum(worst, exp), fx.ACCUMULATOR_MAX / worst)
        mants = [_round_mantissa(p[0], scale) for p in paths]
        worst = int(np.max(worst_rows(mants, paths), initial=0))
    return mants, scale, exp


def quantize_weights(w_eff: np.ndarray, max_presyn: int) -> WeightQuant:
    """Quantise ``w_eff`` (float current per presynaptic unit) to mantissa, scale, exponent."""
    (mant,), scale, exp = quantize_joint([(w_eff, max_presyn)])
    return WeightQuant(mant=mant, scale=scale, exp=exp)


def state_scale(weight_scale: float, weight_exp: int) -> float:
    """Integer state units per float unit of a layer whose weights were quantised at
    ``weight_scale`` (mantissa units per float unit) and exponent ``weight_exp``."""
    return float(fx.WEIGHT_LAVA_SCALE * 2.0**weight_exp * weight_scale)


#: Bits the fine half of a split weight sits below the coarse half (its exponent is this much
#: lower): the two 8-bit mantissas make one of about 15 bits, ``m_hi + m_lo / 2**8``.
FINE_WEIGHT_SHIFT = 8


def fine_path_name(path: str) -> str:
    """The name of the synapse path carrying the fine half of ``path``'s split weights."""
    return f"{path}_fine"


@dataclass(frozen=True)
class FineWeights:
    """The fine halves of a layer's split weights: per path the rounded remainder
    ``round((W a s_w - m) * 2**shift)`` (None for a path that is not split, a max pool of
    currents), sent through a second synapse path at exponent ``exp - shift``."""

    mants: list[Any]
    shift: int
    #: the worst-case |current| of both halves together, after their exponents
    worst: int
    #: the largest unshifted worst-case sum of the fine paths (Lava's int32 accumulator)
    worst_fine_sum: int

    def effective(self, mants: list[Any]) -> list[Any]:
        """The mantissas the coarse and fine paths add up to, ``m + m_fine / 2**shift`` (float)."""
        return [m if f is None else m + f / 2.0**self.shift for m, f in zip(mants, self.mants)]


def _remainder(w_eff, mant, scale: float):
    """``w_eff * scale - mant`` in ``mant``'s form (dense, CSR or a kernel)."""
    if isinstance(w_eff, DenseChain):
        out = np.empty(w_eff.shape)
        for rows, block in w_eff.row_blocks():
            out[rows] = block.toarray() * scale - mant[rows]
        return out
    if sp.issparse(w_eff):
        return sp.csr_matrix(w_eff) * scale - mant
    return np.asarray(w_eff, np.float64) * scale - mant


def split_fine(paths: list[SynapsePath], mants: list[Any], scale: float, exp: int) -> FineWeights | None:
    """The fine halves that give a layer's weights about 15 mantissa bits from two 8-bit
    synapses (``compile --weight-bits 16``), or None where no exponent is left below ``exp``
    (``WEIGHT_EXP_MIN``) or no path can be split. A path ending in a max pool keeps its 8
    bits: the max of a sum of two currents is not the sum of their maxima. The caller checks
    ``worst`` against the layer's headroom and ``worst_fine_sum`` against Lava's int32 sum."""
    shift = min(FINE_WEIGHT_SHIFT, exp - fx.WEIGHT_EXP_MIN)
    if shift < 1:
        return None
    fine = [
        None if p.pool is not None else _round_mantissa(_remainder(p.weights, m, scale), 2.0**shift)
        for p, m in zip(paths, mants)
    ]
    split = [(f, p) for f, p in zip(fine, paths) if f is not None]
    if not split:
        return None
    tuples = [(p.weights, p.max_presyn, p.repeat) for p in paths]
    coarse = worst_rows(mants, tuples)
    fine_rows = worst_rows([f for f, _ in split], [(p.weights, p.max_presyn, p.repeat) for _, p in split])
    top_fine = int(np.max(fine_rows, initial=0))
    # +1: the fine sum's floor shift rounds a negative current one unit further down
    worst = fx.shift_sum(int(np.max(coarse, initial=0)), exp) + fx.shift_sum(top_fine, exp - shift) + 1
    return FineWeights(mants=fine, shift=shift, worst=worst, worst_fine_sum=top_fine)
