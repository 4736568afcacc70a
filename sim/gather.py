"""Compiled event-driven synaptic sums (numba): only active presynaptic inputs are read,
for dense matrices (a gather of rows) and for convolutions (a scatter of kernel taps); and
the one-pass sum of two paths' shifted currents (residual layers)."""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic


@intrinsic
def _word(typingctx, row, start):
    """Bytes ``start`` to ``start + 7`` of the contiguous byte row ``row`` (bool or uint8) as
    one integer (one unaligned load; the caller checks the bounds)."""
    bytes_ = isinstance(row, types.Array) and row.dtype in (types.boolean, types.uint8, types.int8)
    if not (bytes_ and row.ndim == 1 and row.layout == "C" and isinstance(start, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        first = builder.gep(data, [args[1]])
        return builder.load(builder.bitcast(first, ir.IntType(64).as_pointer()), align=1)

    return types.uint64(row, start), codegen


@numba.njit(inline="always")
def _active_words(row, idx, count):
    """The indices of the ``count`` nonzero entries of the contiguous byte row ``row`` into
    ``idx``, a word (8 bytes) at a time: zero words skipped, stopping at the last entry
    (the MLP row of bench/sim_vs_float.py: its readout's gather of a layer firing 0.3 % 2.8x
    faster than a byte at a time; at 3.5 % about 5 % slower, hence :data:`SPARSE_ROW`)."""
    n = row.shape[0]
    k = 0
    j = 0
    while k < count and j + 8 <= n:
        if _word(row, j) != 0:
            for q in range(8):
                idx[k] = j + q
                k += row[j + q] != 0
        j += 8
    while k < count and j < n:
        idx[k] = j
        k += row[j] != 0
        j += 1
    return k


#: Rows with at most ``n_in / SPARSE_ROW`` nonzero entries (1.6 %) are searched a word at a time
SPARSE_ROW = 64


@numba.njit(cache=True, nogil=True)
def gather_binary(pre, w_t, out, peak, counts=None):
    """:func:`gather_rows` of binary ``pre`` (rows, n_in) uint8 or bool, compiled (callable
    from other compiled code: sim/chain.py). ``counts``: the number of nonzero entries of
    each row where known (a neuron layer's spikes per step; ``pre`` then C-contiguous): rows
    without any are skipped, sparse rows searched a word at a time (:func:`_active_words`)."""
    rows, n_in = pre.shape
    n_out = w_t.shape[1]
    idx = np.empty(n_in, np.int64)
    acc = np.empty(n_out, np.int16)
    for r in range(rows):
        if counts is not None and counts[r] * SPARSE_ROW <= n_in:
            if counts[r] == 0:
                continue
            k = _active_words(pre[r], idx, counts[r])
        else:
            k = 0
            for j in range(n_in):  # branch-free: a spike is not predictable (measured 1.4x faster)
                idx[k] = j
                k += pre[r, j] != 0
            if k == 0:
                continue
        out_row = out[r]
        if k * peak <= 32767:  # every partial sum fits 16 bits: twice the lanes of int32
            for o in range(n_out):
                acc[o] = 0
            q = 0
            while q + 4 <= k:
                a, b, c, d = w_t[idx[q]], w_t[idx[q + 1]], w_t[idx[q + 2]], w_t[idx[q + 3]]
                for o in range(n_out):
                    acc[o] += np.int16(a[o]) + np.int16(b[o]) + np.int16(c[o]) + np.int16(d[o])
                q += 4
            while q < k:
                a = w_t[idx[q]]
                for o in range(n_out):
                    acc[o] += np.int16(a[o])
                q += 1
            for o in range(n_out):
                out_row[o] += acc[o]
        else:
            q = 0
            while q + 4 <= k:
                a, b, c, d = w_t[idx[q]], w_t[idx[q + 1]], w_t[idx[q + 2]], w_t[idx[q + 3]]
                for o in range(n_out):
                    out_row[o] += a[o] + b[o] + c[o] + d[o]
                q += 4
            while q < k:
                a = w_t[idx[q]]
                for o in range(n_out):
                    out_row[o] += a[o]
                q += 1


@numba.njit(cache=True, nogil=True)
def _gather_values(pre, w_t, out):
    rows, n_in = pre.shape
    n_out = w_t.shape[1]
    for r in range(rows):
        for j in range(n_in):
            v = pre[r, j]
            if v != 0:
                for o in range(n_out):
                    out[r, o] += v * w_t[j, o]


def gather_rows(pre: np.ndarray, w_t: np.ndarray, out: np.ndarray, peak: int | None = None) -> None:
    """``out[r] += sum_j pre[r, j] * w_t[j]`` over the nonzero ``pre[r, j]`` only (in place).

    ``pre`` (rows, n_in) bool spikes or integers, ``w_t`` (n_in, n_out) int8/int32/int64,
    ``out`` (rows, n_out) int32/int64; exact while every sum fits ``out`` (the caller checks).
    ``peak``: ``max |w_t|`` if known. Binary rows with ``k`` events and ``k * peak < 2**15``
    (every partial sum then fits 16 bits) are summed in an int16 row (twice the lanes of
    int32), four weight rows per pass over it, then added to ``out``.
    """
    if pre.dtype == bool:
        if peak is None:
            peak = int(np.abs(w_t.astype(np.int64)).max()) if w_t.size else 0
        gather_binary(pre.view(np.uint8), w_t, out, peak)
    else:
        _gather_values(pre.astype(np.int64, copy=False), w_t, out)


@numba.njit(cache=True, nogil=True)
def _conv_scatter(pre, w_t, out, sy, sx, py, px):
    rows, c_in, h, w = pre.shape
    kh, kw, c_out = w_t.shape[1], w_t.shape[2], w_t.shape[3]
    h_out, w_out = out.shape[2], out.shape[3]
    acc = np.empty((h_out, w_out, c_out), out.dtype)  # one sample, channels last: in cache
    for r in range(rows):
        acc[:] = 0
        for c in range(c_in):
            for y in range(h):
                for x in range(w):
                    v = pre[r, c, y, x]
                    if v == 0:
                        continue
                    for ky in range(kh):
                        ny = y + py - ky  # = oy * sy for the output row this tap reaches
                        if ny < 0:
                            break
                        if ny % sy or ny // sy >= h_out:
                            continue
                        oy = ny // sy
                        for kx in range(kw):
                            nx = x + px - kx
                            if nx < 0:
                                break
                            if nx % sx or nx // sx >= w_out:
                                continue
                            ox = nx // sx
                            for o in range(c_out):
                                acc[oy, ox, o] += v * w_t[c, ky, kx, o]
        for o in range(c_out):
            for oy in range(h_out):
                for ox in range(w_out):
                    out[r, o, oy, ox] = acc[oy, ox, o]


def conv_scatter(
    pre: np.ndarray, w_t: np.ndarray, out: np.ndarray, stride: tuple[int, int], padding: tuple[int, int]
) -> None:
    """Event-driven convolution: each nonzero input adds its value times the kernel taps it
    meets to the outputs it reaches; work proportional to the events.

    ``pre`` (rows, C_in, H, W) integers (uint8 spikes or counts, int32/int64 values), ``w_t``
    the kernel as (C_in, kh, kw, C_out); writes every value of ``out`` (rows, C_out, H_out,
    W_out) of ``w_t``'s dtype (sums of one sample gathered channels last, then transposed);
    exact while every sum fits that dtype.
    """
    _conv_scatter(pre, w_t, out, int(stride[0]), int(stride[1]), int(padding[0]), int(padding[1]))


@numba.njit(cache=True, nogil=True)
def _add_shifted(a, ra, la, b, rb, lb, out):
    fa, fb, fo = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    for i in range(fo.size):
        fo[i] = ((np.int64(fa[i]) >> ra) << la) + ((np.int64(fb[i]) >> rb) << lb)


def add_shifted(
    a: np.ndarray, shifts_a: tuple[int, int], b: np.ndarray, shifts_b: tuple[int, int], out
) -> None:
    """``out = ((a >> r_a) << l_a) + ((b >> r_b) << l_b)`` elementwise in int64 arithmetic, in
    one pass (two paths' currents into a residual layer). ``a``, ``b``: integers, or floats
    holding exact integers (truncated exactly); all three arrays contiguous, one shape;
    exact while every value fits int64 and the sum fits ``out``'s dtype (the caller checks)."""
    _add_shifted(a, shifts_a[0], shifts_a[1], b, shifts_b[0], shifts_b[1], out)


@numba.njit(cache=True, nogil=True)
def _scale_spikes(pre, scale, out, channels_last):
    rows, n = pre.shape
    c = scale.shape[0]
    hw = n // c
    for r in range(rows):
        src, dst = pre[r], out[r]
        if channels_last:  # position-major: the channel is the fast index
            for p in range(hw):
                s, d = src[p * c : (p + 1) * c], dst[p * c : (p + 1) * c]
                for k in range(c):
                    d[k] = scale[k] if s[k] else 0
        else:
            for k in range(c):
                w = scale[k]
                s, d = src[k * hw : (k + 1) * hw], dst[k * hw : (k + 1) * hw]
                for p in range(hw):
                    d[p] = w if s[p] else 0


def scale_spikes(pre: np.ndarray, scale: np.ndarray, out: np.ndarray, channels_last: bool) -> None:
    """A diagonal 1 x 1 convolution (a residual net's identity shortcut) of binary ``pre``
    (rows, C * H * W), bool or uint8: ``out[r, (c, y, x)] = scale[c]`` where the input spikes,
    else 0, as a select (no multiply; one pass, ~8x the float convolution's speed); rows in
    (C, H, W) order, or (H, W, C) with ``channels_last``. ``out`` of ``scale``'s dtype."""
    _scale_spikes(pre.view(np.uint8) if pre.dtype == bool else pre, scale, out, channels_last)
