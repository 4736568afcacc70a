"""Compiled event-driven synaptic sums (numba): only active presynaptic inputs are read,
for dense matrices (a gather of rows) and for convolutions (per output, a gather of the
kernel taps its active inputs meet; a scatter of each event's taps for other inputs); and
the one-pass sum of two paths' shifted currents (residual layers); and the blocked gather
of a dense chain (:func:`gather_blocks`, sim/chain.py)."""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from lmh_deploy.sim.fused import wide_vectors


@numba.njit(cache=True, nogil=True)
def gather_binary(pre, w_t, out, peak):
    """:func:`gather_rows` of binary ``pre`` (rows, n_in) uint8 or bool, compiled."""
    rows, n_in = pre.shape
    n_out = w_t.shape[1]
    idx = np.empty(n_in, np.int64)
    acc = np.empty(n_out, np.int16)
    for r in range(rows):
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


#: Outputs per block of :func:`gather_blocks`: 32 int16 sums, one 512-bit vector
BLOCK = 32
#: Inputs per step of :func:`_compress16`
_LANES = 16
#: Rows with more than ``n_pad / DENSE_ROW`` active inputs are listed by compresses (where
#: the CPU has them, :func:`_active_inputs`), the others by bit masks
DENSE_ROW = 16


def block_rows(w_t: np.ndarray, dtype=np.int16) -> np.ndarray:
    """The weight rows ``w_t`` (..., n_in, n_out), integers within ``dtype`` (int16, or int8
    for :func:`conv_gather`), as the blocks of :func:`gather_blocks`: (..., ceil(n_out /
    BLOCK), n_in, BLOCK), 64-byte aligned, block ``c`` holding the outputs ``c * BLOCK`` on of
    every row (the last block's missing outputs zero); leading axes kept (a kernel's taps)."""
    *lead, n_in, n_out = w_t.shape
    blocks = -(-n_out // BLOCK)
    padded = np.zeros((*lead, n_in, blocks * BLOCK), dtype)
    padded[..., :n_out] = w_t
    out = _aligned_empty((*lead, blocks, n_in, BLOCK), dtype)
    out[...] = np.swapaxes(padded.reshape(*lead, n_in, blocks, BLOCK), -3, -2)
    return out


def _aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An empty C-order array whose data starts on a 64-byte boundary (numpy's own is 16):
    then every 64-byte row of :func:`block_rows` is one cache line, not two (the MLP row's
    gathers: 0.87x the CPU time of unaligned rows)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip : skip + size].view(dtype).reshape(shape)


@numba.njit(cache=True)
def padded_inputs(n):
    """The row length :func:`gather_blocks` reads for ``n`` inputs (whole 16-byte steps)."""
    return -(-n // _LANES) * _LANES


def _nonzero_bits(lanes: int):
    """An intrinsic ``f(row, start)``: bit ``q`` set where byte ``start + q`` of the contiguous
    byte row ``row`` is nonzero, ``q < lanes`` (one vector load and compare; the caller checks
    the bounds), as uint64."""

    @intrinsic
    def bits(typingctx, row, start):
        bytes_ = isinstance(row, types.Array) and row.dtype in (types.boolean, types.uint8, types.int8)
        if not (bytes_ and row.layout == "C" and isinstance(start, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            data = context.make_array(sig.args[0])(context, builder, args[0]).data
            vector = ir.VectorType(ir.IntType(8), lanes)
            at = builder.bitcast(builder.gep(data, [args[1]]), vector.as_pointer())
            loaded = builder.load(at, align=1)
            mask = builder.icmp_unsigned("!=", loaded, ir.Constant(vector, None))
            return builder.zext(builder.bitcast(mask, ir.IntType(lanes)), ir.IntType(64))

        return types.uint64(row, start), codegen

    return bits


_bits64 = _nonzero_bits(64)
_bits16 = _nonzero_bits(_LANES)


@intrinsic
def _lowest_bit(typingctx, m):
    """The index of the lowest set bit of the nonzero uint64 ``m`` (one ``tzcnt``), int64."""
    if m != types.uint64:
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        cttz = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i64, [i64, ir.IntType(1)]), "llvm.cttz.i64"
        )
        return builder.call(cttz, [args[0], ir.Constant(ir.IntType(1), 1)])

    return types.int64(m), codegen


@numba.njit(inline="always")
def _set_bits(m, base, idx, k):
    """``base`` plus the index of each set bit of ``m`` (uint64), lowest first, into ``idx``
    from ``k`` on; returns the new ``k``."""
    while m != 0:
        idx[k] = base + _lowest_bit(m)
        k += 1
        m &= m - np.uint64(1)
    return k


def _has_avx512(context) -> bool:
    """Whether numba compiles for a CPU with AVX-512 F (its target's features)."""
    features = getattr(context.codegen(), "_tm_features", "") or ""
    return "+avx512f" in features.split(",")


@intrinsic
def _compressing(typingctx):
    """True where :func:`_compress16` compresses (AVX-512 F), a constant."""

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(1), int(_has_avx512(context)))

    return types.boolean(), codegen


@intrinsic
def _compress16(typingctx, row, start, idx, k):
    """Where AVX-512 F is there: the indices ``start`` to ``start + 15`` at which the
    contiguous byte row ``row`` is nonzero, stored one after another at ``idx[k]`` on
    (int32) by a compress in a register and a full 16-lane store (entries past them are
    written too: the caller's scratch holds them); returns their number. Elsewhere -1,
    nothing written. The caller checks the bounds."""
    bytes_ = isinstance(row, types.Array) and row.dtype in (types.boolean, types.uint8, types.int8)
    ints = isinstance(idx, types.Array) and idx.dtype == types.int32 and idx.layout == "C"
    if not (bytes_ and row.layout == "C" and ints and isinstance(start, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        if not _has_avx512(context):
            return ir.Constant(i64, -1)
        lanes = ir.VectorType(i32, _LANES)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        row_bytes = ir.VectorType(ir.IntType(8), _LANES).as_pointer()
        loaded = builder.load(builder.bitcast(builder.gep(data, [args[1]]), row_bytes), align=1)
        mask = builder.icmp_unsigned("!=", loaded, ir.Constant(loaded.type, None))
        start32 = builder.trunc(args[1], i32)
        base = builder.insert_element(ir.Constant(lanes, None), start32, ir.Constant(i32, 0))
        base = builder.shuffle_vector(base, ir.Constant(lanes, ir.Undefined), ir.Constant(lanes, None))
        positions = builder.add(base, ir.Constant(lanes, list(range(_LANES))))
        compress = ir.FunctionType(lanes, [lanes, lanes, mask.type])
        fn = cgutils.get_or_insert_function(builder.module, compress, "llvm.x86.avx512.mask.compress.v16i32")
        packed = builder.call(fn, [positions, ir.Constant(lanes, None), mask])
        out = context.make_array(sig.args[2])(context, builder, args[2]).data
        builder.store(packed, builder.bitcast(builder.gep(out, [args[3]]), lanes.as_pointer()), align=4)
        bits = builder.bitcast(mask, ir.IntType(_LANES))
        popcount = ir.FunctionType(bits.type, [bits.type])
        ctpop = cgutils.get_or_insert_function(builder.module, popcount, "llvm.ctpop.i16")
        return builder.zext(builder.call(ctpop, [bits]), i64)

    return types.int64(row, start, idx, k), codegen


@numba.njit(inline="always")
def _active_inputs(row, idx, k, dense):
    """The indices of the nonzero entries of the contiguous byte row ``row`` (length a
    multiple of 16) stored at ``idx[k]`` on (int32, at least 16 entries from ``k`` on);
    returns the new ``k``. A ``dense`` row, where the CPU has AVX-512: 16 bytes at a time by
    a compress in a register (:func:`_compress16`); else 64 bytes at a time (then 16) as one
    bit mask, each set bit one ``tzcnt``, a zero mask one test. Measured on AMD Zen 4 (EPYC)
    on the MLP row of bench/sim_vs_float.py, listing a batch's spikes of layers firing
    11.7 % and 3.5 %: 0.70 and 0.47 ms; the masked compress store of before
    (``llvm.masked.compressstore``, microcoded there, about 50 cycles each) took 12.9 and
    11.4 ms, 24 of the chain's 54 ms; bit masks alone 1.1 and 0.47, compresses alone 0.62
    and 0.76 (on an Intel Xeon the bit masks were slower than compress stores)."""
    n = row.shape[0]
    if dense and _compressing():
        for j in range(0, n, _LANES):
            k += _compress16(row, j, idx, k)
        return k
    j = 0
    while j + 64 <= n:
        k = _set_bits(_bits64(row, j), j, idx, k)
        j += 64
    while j < n:
        k = _set_bits(_bits16(row, j), j, idx, k)
        j += _LANES
    return k


def _store_sums(builder, accs, first, target, row, assign) -> None:
    """Codegen of the end of :func:`_blocks_sum` and :func:`_taps_sum`: the int16 vector sums
    ``accs`` of the blocks ``first``, ``first + 1``, ... widened to int32 and stored at
    ``out[row, block * BLOCK:]`` (``assign`` nonzero) or added there (``target``: ``out``'s
    array structure, int32, C order)."""
    i64 = ir.IntType(64)
    wide = ir.VectorType(ir.IntType(32), BLOCK)
    row_at = builder.mul(row, builder.extract_value(target.shape, 1))
    assigned = builder.icmp_unsigned("!=", assign, ir.Constant(assign.type, 0))
    for b, acc in enumerate(accs):
        column = builder.add(first, ir.Constant(i64, b))
        dst = builder.bitcast(
            builder.gep(target.data, [builder.add(row_at, builder.mul(column, ir.Constant(i64, BLOCK)))]),
            wide.as_pointer(),
        )
        total = builder.sext(builder.load(acc), wide)
        old = builder.load(dst, align=4)
        builder.store(builder.select(assigned, total, builder.add(old, total)), dst, align=4)


def _blocks_sum(count: int):
    """An intrinsic ``f(w_blocks, c, idx, lo, hi, out, row, assign)``: for each of the
    ``count`` blocks ``c`` to ``c + count - 1`` of ``w_blocks`` (:func:`block_rows`, C
    order), ``out[row, b * BLOCK:(b + 1) * BLOCK] (+)= sum(w_blocks[b, idx[q]] for q in
    range(lo, hi))``: each block's sum in its own int16 vector (the caller bounds every
    partial sum to int16), the ``count`` sums in one pass over ``idx`` (one index load for
    ``count`` adds; independent adds), widened to int32 and stored (``assign``) or added to
    ``out`` (int32, C order, rows of at least ``(c + count) * BLOCK``)."""

    @intrinsic
    def summed(typingctx, w, c, idx, lo, hi, out, row, assign):
        ok = isinstance(w, types.Array) and w.dtype == types.int16 and w.ndim == 3 and w.layout == "C"
        ok &= isinstance(idx, types.Array) and idx.dtype == types.int32 and idx.layout == "C"
        ok &= isinstance(out, types.Array) and out.dtype == types.int32 and out.ndim == 2
        if not (ok and out.layout == "C"):
            return None

        def codegen(context, builder, sig, args):
            w_, c_, idx_, lo_, hi_, out_, row_, assign_ = args
            i64 = ir.IntType(64)
            narrow = ir.VectorType(ir.IntType(16), BLOCK)
            blocks = context.make_array(sig.args[0])(context, builder, w_)
            block_size = builder.mul(builder.extract_value(blocks.shape, 1), ir.Constant(i64, BLOCK))
            first = context.cast(builder, c_, sig.args[1], types.int64)
            columns = [builder.add(first, ir.Constant(i64, b)) for b in range(count)]
            rows = [
                builder.bitcast(builder.gep(blocks.data, [builder.mul(b, block_size)]), narrow.as_pointer())
                for b in columns
            ]
            picks = context.make_array(sig.args[2])(context, builder, idx_).data
            # promoted to registers
            accs = [cgutils.alloca_once_value(builder, ir.Constant(narrow, None)) for _ in range(count)]
            with cgutils.for_range_slice(builder, lo_, hi_, ir.Constant(i64, 1), inc=True) as (q, _):
                j = builder.sext(builder.load(builder.gep(picks, [q])), i64)
                for acc, w_rows in zip(accs, rows):
                    summand = builder.load(builder.gep(w_rows, [j]), align=2)
                    builder.store(builder.add(builder.load(acc), summand), acc)
            target = context.make_array(sig.args[5])(context, builder, out_)
            _store_sums(builder, accs, columns[0], target, row_, assign_)
            return context.get_dummy_value()

        return types.none(w, c, idx, lo, hi, out, row, assign), codegen

    return summed


#: Blocks summed in one pass over a step's active inputs (:func:`gather_blocks`): on the
#: spikes of the MLP row of bench/sim_vs_float.py (400 -> 400 at 11.7 % firing), four took
#: 0.92x the CPU time of one, two or six 0.95x, all 13 at once 1.13x (beyond the L1 cache)
GROUP = 4
_block_sum = _blocks_sum(1)
_group_sum = _blocks_sum(GROUP)


@numba.njit(cache=True, nogil=True)
def gather_blocks(pre, counts, w_blocks, peak, out, idx, starts):
    """``out[r, :blocks * BLOCK] = pre[r] @ w`` for binary ``pre`` (rows, n_pad) bytes, C
    order, zero beyond the inputs and ``n_pad`` a multiple of 16 (:func:`padded_inputs`),
    ``counts`` each row's number of nonzero entries, ``w_blocks`` :func:`block_rows` of the
    int8 rows ``w`` whose largest ``|w|`` is ``peak``; ``out`` (rows, >= blocks * BLOCK)
    int32, C order (written, not added to); ``idx`` int32 (rows * n_pad,) and ``starts``
    int64 (rows + 1,) scratch. Exact: each int16 vector sums at most ``32767 // peak`` rows.

    Blocked for the cache: first every row's active inputs (:func:`_active_inputs`), then
    :data:`GROUP` blocks at a time, for every row, the sum of each block's rows at those
    inputs in its own vector register: four blocks of 32 outputs of 400 inputs (100 KB,
    64-byte aligned rows) stay in the L1/L2 caches for all rows, one add per event and
    block, one index load per event and group (the MLP row of bench/sim_vs_float.py at
    11.7 % firing, one block at a time: 1.4x the speed of :func:`gather_binary`, 2x at
    0.3 %)."""
    wide_vectors()
    rows, n_pad = pre.shape
    if n_pad % _LANES or idx.shape[0] < rows * n_pad or w_blocks.shape[1] > n_pad:
        raise ValueError("gather_blocks: rows not padded to 16 bytes, or scratch too small")
    k = 0
    for r in range(rows):
        starts[r] = k
        if counts[r]:
            k = _active_inputs(pre[r], idx, k, counts[r] * DENSE_ROW > n_pad)
    starts[rows] = k
    limit = 32767 // peak if peak > 0 else n_pad
    blocks = w_blocks.shape[0]
    grouped = blocks - blocks % GROUP
    for c in range(0, grouped, GROUP):
        for r in range(rows):
            lo, hi = starts[r], starts[r + 1]
            _group_sum(w_blocks, c, idx, lo, min(hi, lo + limit), out, r, True)
            lo += limit
            while lo < hi:  # more events than an int16 sum holds: add the rest in parts
                _group_sum(w_blocks, c, idx, lo, min(hi, lo + limit), out, r, False)
                lo += limit
    for c in range(grouped, blocks):
        for r in range(rows):
            lo, hi = starts[r], starts[r + 1]
            _block_sum(w_blocks, c, idx, lo, min(hi, lo + limit), out, r, True)
            lo += limit
            while lo < hi:
                _block_sum(w_blocks, c, idx, lo, min(hi, lo + limit), out, r, False)
                lo += limit


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
    Ranges of rows run in threads (:func:`_in_threads`; a row's sums are one call's, so the
    result is the same for any split): alone, the gather of VGG-13's 4096-wide classifier
    layers at 64 rows held one core while the other waited.
    """
    if pre.dtype == bool:
        if peak is None:
            peak = int(np.abs(w_t.astype(np.int64)).max()) if w_t.size else 0
        spikes = pre.view(np.uint8)
        gather = lambda lo, hi: gather_binary(spikes[lo:hi], w_t, out[lo:hi], peak)  # noqa: E731
    else:
        values = pre.astype(np.int64, copy=False)
        gather = lambda lo, hi: _gather_values(values[lo:hi], w_t, out[lo:hi])  # noqa: E731
    _in_threads(gather, pre.shape[0], pre.shape[1] + out.shape[1])


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
    Ranges of rows run in threads (:func:`_in_threads`).
    """
    sy, sx, py, px = int(stride[0]), int(stride[1]), int(padding[0]), int(padding[1])
    scatter = lambda lo, hi: _conv_scatter(pre[lo:hi], w_t, out[lo:hi], sy, sx, py, px)  # noqa: E731
    _in_threads(scatter, pre.shape[0], pre[0].size)


def _taps_sum(count: int):
    """An intrinsic ``f(w_taps, c, idx, seg_lo, seg_hi, seg_tap, segments, out, row, assign)``:
    :func:`_blocks_sum` over several ranges of ``idx`` at once, each range ``s`` of
    ``segments`` indexing the rows of its own kernel tap ``seg_tap[s]``:
    ``out[row, b * BLOCK:(b + 1) * BLOCK] (+)= sum(w_taps[seg_tap[s], b, idx[q]] for s, q
    in ranges)`` for the ``count`` blocks ``b`` from ``c`` on. ``w_taps`` (taps, blocks,
    C_in, BLOCK) int8 (sign-extended as loaded: half the bytes of int16) or int16, C order
    (:func:`tap_blocks`); the sums stay in ``count`` int16 vector registers across the
    ranges (the caller bounds every partial sum to int16), then widened to int32 and stored
    (``assign``) or added to ``out`` (int32, C order)."""

    @intrinsic
    def summed(typingctx, w, c, idx, seg_lo, seg_hi, seg_tap, segments, out, row, assign):
        ok = (
            isinstance(w, types.Array)
            and w.dtype in (types.int8, types.int16)
            and w.ndim == 4
            and w.layout == "C"
        )
        ok &= isinstance(idx, types.Array) and idx.dtype == types.int32 and idx.layout == "C"
        ok &= all(
            isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1 and a.layout == "C"
            for a in (seg_lo, seg_hi, seg_tap)
        )
        ok &= isinstance(out, types.Array) and out.dtype == types.int32 and out.ndim == 2
        if not (ok and out.layout == "C"):
            return None

        def codegen(context, builder, sig, args):
            w_, c_, idx_, lo_, hi_, tap_, segments_, out_, row_, assign_ = args
            i64 = ir.IntType(64)
            narrow = ir.VectorType(ir.IntType(16), BLOCK)
            stored = ir.VectorType(ir.IntType(sig.args[0].dtype.bitwidth), BLOCK)  # int8: half the bytes
            taps = context.make_array(sig.args[0])(context, builder, w_)
            blocks = builder.extract_value(taps.shape, 1)
            block_size = builder.mul(builder.extract_value(taps.shape, 2), ir.Constant(i64, BLOCK))
            first = context.cast(builder, c_, sig.args[1], types.int64)
            picks = context.make_array(sig.args[2])(context, builder, idx_).data
            los, his, tap_of = (
                context.make_array(sig.args[k])(context, builder, a).data
                for k, a in ((3, lo_), (4, hi_), (5, tap_))
            )
            accs = [cgutils.alloca_once_value(builder, ir.Constant(narrow, None)) for _ in range(count)]
            n_segments = context.cast(builder, segments_, sig.args[6], types.int64)
            with cgutils.for_range(builder, n_segments) as loop:
                s = loop.index
                tap = builder.load(builder.gep(tap_of, [s]))
                base = builder.mul(builder.add(builder.mul(tap, blocks), first), block_size)
                rows = [
                    builder.bitcast(
                        builder.gep(
                            taps.data, [builder.add(base, builder.mul(ir.Constant(i64, b), block_size))]
                        ),
                        stored.as_pointer(),
                    )
                    for b in range(count)
                ]
                lo, hi = builder.load(builder.gep(los, [s])), builder.load(builder.gep(his, [s]))
                with cgutils.for_range_slice(builder, lo, hi, ir.Constant(i64, 1), inc=True) as (q, _):
                    j = builder.sext(builder.load(builder.gep(picks, [q])), i64)
                    for acc, w_rows in zip(accs, rows):
                        summand = builder.load(builder.gep(w_rows, [j]), align=1)
                        if stored != narrow:
                            summand = builder.sext(summand, narrow)
                        builder.store(builder.add(builder.load(acc), summand), acc)
            target = context.make_array(sig.args[7])(context, builder, out_)
            _store_sums(builder, accs, first, target, row_, assign_)
            return context.get_dummy_value()

        return types.none(w, c, idx, seg_lo, seg_hi, seg_tap, segments, out, row, assign), codegen

    return summed


_taps_sum4 = _taps_sum(4)
_taps_sum2 = _taps_sum(2)
_taps_sum1 = _taps_sum(1)


def tap_blocks(kernel: np.ndarray, dtype=np.int16) -> np.ndarray:
    """A convolution kernel (C_out, C_in, kh, kw), integers within ``dtype`` (int8 or int16),
    as the blocks of :func:`conv_gather`: :func:`block_rows` of each tap's (C_in, C_out) rows,
    (kh * kw, ceil(C_out / BLOCK), C_in, BLOCK), tap ``ky * kw + kx`` first."""
    c_out, c_in, kh, kw = kernel.shape
    return block_rows(kernel.transpose(2, 3, 1, 0).reshape(kh * kw, c_in, c_out), dtype)


@numba.njit(inline="always")
def _tap_sums(count, w_taps, c, idx, seg_lo, seg_hi, seg_tap, segments, out, q, assign):
    if count == 4:
        _taps_sum4(w_taps, c, idx, seg_lo, seg_hi, seg_tap, segments, out, q, assign)
    elif count == 2:
        _taps_sum2(w_taps, c, idx, seg_lo, seg_hi, seg_tap, segments, out, q, assign)
    else:
        _taps_sum1(w_taps, c, idx, seg_lo, seg_hi, seg_tap, segments, out, q, assign)


@numba.njit(cache=True, nogil=True)
def _conv_gather(x, w_taps, peak, out, kh, kw, sy, sx, py, px, oh, ow):
    wide_vectors()
    rows, h, w, c = x.shape
    blocks = w_taps.shape[1]
    # every input position's active channels, each as often as its value
    total = 0
    most = 0
    for v in x.reshape(-1):
        total += v
        most = max(most, v)
    idx = np.empty(total + 16, np.int32)  # + 16: a compress stores 16 lanes
    starts = np.empty(rows * h * w + 1, np.int64)
    compress = most <= 1 and c % 16 == 0
    k = 0
    for r in range(rows):
        for y in range(h):
            for xx in range(w):
                starts[(r * h + y) * w + xx] = k
                if compress:
                    k = _active_inputs(x[r, y, xx], idx, k, True)
                else:
                    for ch in range(c):
                        for _ in range(x[r, y, xx, ch]):
                            idx[k] = ch
                            k += 1
    starts[rows * h * w] = k
    limit = 32767 // peak if peak > 0 else total + 1
    taps = kh * kw
    seg_lo = np.empty(taps, np.int64)
    seg_hi = np.empty(taps, np.int64)
    seg_tap = np.empty(taps, np.int64)
    cb = 0
    while cb < blocks:
        count = 4 if blocks - cb >= 4 else 2 if blocks - cb >= 2 else 1
        for r in range(rows):
            for oy in range(oh):
                for ox in range(ow):
                    q = (r * oh + oy) * ow + ox
                    n = 0
                    used = 0
                    assign = True
                    for ky in range(kh):
                        iy = oy * sy - py + ky
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(kw):
                            ix = ox * sx - px + kx
                            if ix < 0 or ix >= w:
                                continue
                            p = (r * h + iy) * w + ix
                            lo, hi = starts[p], starts[p + 1]
                            while lo < hi:  # a range's int16 sums hold at most ``limit`` events
                                take = min(hi - lo, limit - used)
                                seg_lo[n], seg_hi[n], seg_tap[n] = lo, lo + take, ky * kw + kx
                                n += 1
                                used += take
                                lo += take
                                if used == limit:
                                    _tap_sums(
                                        count, w_taps, cb, idx, seg_lo, seg_hi, seg_tap, n, out, q, assign
                                    )
                                    assign = False
                                    n = 0
                                    used = 0
                    if n > 0 or assign:
                        _tap_sums(count, w_taps, cb, idx, seg_lo, seg_hi, seg_tap, n, out, q, assign)
        cb += count


def conv_gather(
    x: np.ndarray,
    w_taps: np.ndarray,
    kernel_hw: tuple[int, int],
    out_hw: tuple[int, int],
    peak: int,
    out: np.ndarray,
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> None:
    """Event-driven convolution of small nonnegative integers ``x`` (rows, H, W, C_in) uint8,
    channels last, C order: ``out[(r, oy, ox), :]`` is the sum over the ``kernel_hw`` taps of
    the rows of :func:`tap_blocks` ``w_taps`` at the active input channels each tap meets,
    each as often as its value. ``out`` (rows * H_out * W_out, blocks * BLOCK) int32, C
    order, every entry written; ``out_hw`` = (H_out, W_out), at most the convolution's own
    output, whose first rows and columns these are; ``peak`` the largest ``|w|``. Exact
    while every sum fits int32 (int16 partial sums of at most ``32767 // peak`` events,
    then widened).

    Output stationary: first each input position's active channels (16 channels at a time
    by a compress where they are binary, a multiple of 16, and the CPU has AVX-512), then,
    for :data:`GROUP` blocks of 32 outputs at a time (their rows of every tap stay in the
    caches), each output's sum over the lists of the input positions its taps meet in
    vector registers: one load and add per event and block, no list per output. Ranges of
    rows run in threads (:func:`_in_threads`)."""
    rows = x.shape[0]
    (kh, kw), (oh, ow) = (int(v) for v in kernel_hw), (int(v) for v in out_hw)
    (sy, sx), (py, px) = (int(v) for v in stride), (int(v) for v in padding)
    positions = oh * ow
    if out.shape != (rows * positions, w_taps.shape[1] * BLOCK) or w_taps.shape[0] != kh * kw:
        raise ValueError("conv_gather: out or w_taps does not fit the input and kernel")
    _in_threads(
        lambda lo, hi: _conv_gather(
            x[lo:hi],
            w_taps,
            peak,
            out[lo * positions : hi * positions],
            kh,
            kw,
            sy,
            sx,
            py,
            px,
            oh,
            ow,
        ),
        rows,
        x[0].size,
    )


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
    exact while every value fits int64 and the sum fits ``out``'s dtype (the caller checks).
    Cut into ranges run in threads (:func:`_in_threads`)."""
    if not (a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("add_shifted: arrays must be C-contiguous")  # reshape would copy
    flat_a, flat_b, flat_out = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    (ra, la), (rb, lb) = shifts_a, shifts_b
    _in_threads(
        lambda lo, hi: _add_shifted(flat_a[lo:hi], ra, la, flat_b[lo:hi], rb, lb, flat_out[lo:hi]),
        flat_out.size,
        1,
    )


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
    (C, H, W) order, or (H, W, C) with ``channels_last``. ``out`` of ``scale``'s dtype.
    Ranges of rows run in threads (:func:`_in_threads`)."""
    spikes = pre.view(np.uint8) if pre.dtype == bool else pre
    _in_threads(lambda lo, hi: _scale_spikes(spikes[lo:hi], scale, out[lo:hi], channels_last), *pre.shape)


def _in_threads(fn, rows: int, row_work: int) -> None:
    """``fn(lo, hi)`` over ranges of ``rows`` rows of ``row_work`` elements each, in
    threads where the work is large enough (:func:`lmh_deploy.sim.neuron.row_ranges`; the
    compiled loops release the GIL; each range is written by one call, so the result is
    the same for any split): ResNet-19's residual sums and identity shortcuts were 10 % of
    its run at one thread, the mnist5k cnn's event scatter 12 % (bench/sim_vs_float.py's
    rows), serial beside the threaded convolutions and neuron updates."""
    from lmh_deploy.sim.neuron import row_ranges, run_in_threads, sim_threads

    run_in_threads(fn, row_ranges(rows, row_work, sim_threads()), work=rows * row_work)


@numba.njit(cache=True, nogil=True)
def _sum_pool_last(x, out, sy, sx):
    rows, h, w, c = x.shape
    ph, pw = out.shape[1], out.shape[2]
    for r in range(rows):
        for py in range(ph):
            y0, y1 = py * sy, min(py * sy + sy, h)
            line, o = x[r, y0], out[r, py]  # (W, C) in, (W', C) out: contiguous rows
            for px in range(pw):
                x0, x1 = px * sx, min(px * sx + sx, w)
                first, target = line[x0], o[px]
                for k in range(c):
                    target[k] = first[k]
                for xx in range(x0 + 1, x1):
                    more = line[xx]
                    for k in range(c):
                        target[k] += more[k]
            for y in range(y0 + 1, y1):
                line = x[r, y]
                for px in range(pw):
                    target = o[px]
                    for xx in range(px * sx, min(px * sx + sx, w)):
                        more = line[xx]
                        for k in range(c):
                            target[k] += more[k]


@numba.njit(cache=True, nogil=True)
def _sum_pool_first(x, out, sy, sx):
    rows, c, h, w = x.shape
    ph, pw = out.shape[2], out.shape[3]
    for r in range(rows):
        for k in range(c):
            for py in range(ph):
                y0, y1 = py * sy, min(py * sy + sy, h)
                o = out[r, k, py]
                for px in range(pw):
                    o[px] = 0
                for y in range(y0, y1):
                    line = x[r, k, y]
                    for px in range(pw):
                        total = o[px]
                        for xx in range(px * sx, min(px * sx + sx, w)):
                            total += line[xx]
                        o[px] = total


def sum_pool_bytes(x: np.ndarray, out: np.ndarray, pool: tuple[int, int], channels_last: bool) -> None:
    """``out`` = the ``sy x sx`` sum-pool (stride ``(sy, sx)``) of the uint8 images ``x``,
    in one pass (each input byte read once, each output written once; inputs past the
    bottom/right edge count as zero): ``x`` (rows, H, W, C) and ``out`` (rows, H', W', C),
    both C-contiguous, with ``channels_last``, else (rows, C, H, W) and (rows, C, H', W'),
    ``H' = ceil(H / sy)``, ``W' = ceil(W / sx)``. uint8 arithmetic: exact while every block
    sums to at most 255 (binary spikes and ``sy * sx <= 255``; the caller checks). Ranges of
    rows run in threads (:func:`_in_threads`)."""
    if not (x.flags.c_contiguous and out.flags.c_contiguous and x.dtype == out.dtype == np.uint8):
        raise ValueError("sum_pool_bytes: C-contiguous uint8 arrays only")
    sy, sx = int(pool[0]), int(pool[1])
    kernel = _sum_pool_last if channels_last else _sum_pool_first
    _in_threads(lambda lo, hi: kernel(x[lo:hi], out[lo:hi], sy, sx), x.shape[0], x[0].size)


@numba.njit(cache=True, nogil=True)
def _conv_columns(x, cols, kh, kw, py, px, oh, ow):
    rows, h, w, c = x.shape
    for r in range(rows):
        for oy in range(oh):
            for ox in range(ow):
                line = cols[(r * oh + oy) * ow + ox]
                for ky in range(kh):
                    iy = oy + ky - py
                    for kx in range(kw):
                        ix = ox + kx - px
                        at = (ky * kw + kx) * c
                        if 0 <= iy < h and 0 <= ix < w:
                            src = x[r, iy, ix]
                            for k in range(c):
                                line[at + k] = src[k]
                        else:
                            for k in range(c):
                                line[at + k] = 0


def conv_columns(
    x: np.ndarray,
    cols: np.ndarray,
    kernel_hw: tuple[int, int],
    padding: tuple[int, int],
    out_hw: tuple[int, int],
) -> None:
    """The columns of a stride-1 convolution: ``cols[(r, oy, ox), (ky, kx, c)] = x[r, oy + ky
    - p_y, ox + kx - p_x, c]``, zero outside the input; ``x`` (rows, H, W, C) and ``cols``
    (rows * H_out * W_out, kh * kw * C), both C-contiguous, of one dtype; one pass, each
    column written once. Ranges of rows run in threads (:func:`_in_threads`)."""
    if not (x.flags.c_contiguous and cols.flags.c_contiguous and x.dtype == cols.dtype):
        raise ValueError("conv_columns: C-contiguous arrays of one dtype only")
    (kh, kw), (py, px), (oh, ow) = (tuple(int(v) for v in t) for t in (kernel_hw, padding, out_hw))
    per = oh * ow

    def fill(lo: int, hi: int) -> None:
        _conv_columns(x[lo:hi], cols[lo * per : hi * per], kh, kw, py, px, oh, ow)

    _in_threads(fill, x.shape[0], per * cols.shape[1])
