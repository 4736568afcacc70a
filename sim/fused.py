"""The fused integer neuron update as numba kernels that the compiler vectorises (SIMD).

A fast copy of the reference rule :func:`lmh_deploy.semantics.integer.lmh_step` (the step
:mod:`lmh_deploy.sim.neuron` writes out), tested bit for bit against it on every numeric
profile and rule (``test_kernels_equal_semantics_lmh_step_for_every_profile_and_rule`` in
``tests/test_sim_kernels.py``; at the int32 bounds, ``tests/test_sim_fused.py``).

Speed comes from three
choices (AVX2 has no 64-bit multiply and no 64-bit arithmetic right shift, and does not
vectorise branches with side effects):

* **int32 arithmetic with split states.** With ``v = vh * 4096 + vl`` (``vh = v >> 12``,
  ``vl = v & 4095``), ``(f * v + c) >> 12 == f * vh + ((f * vl + c) >> 12)`` exactly (the
  first term is a multiple of 4096), so ``R(f v)`` needs only 32-bit products while
  ``|f| < 2**13`` and ``|v| <= 2**23``. Half-up rounding has ``c = 2048``, floor ``c = 0``,
  toward zero ``c = 4095`` where ``f * v < 0``, i.e. where the signs of ``f`` and ``v``
  differ (for ``f * v == 0`` either ``c`` gives 0).
* **No branches:** an overflow counts as one unsigned compare (``x - lo > hi - lo``), resets
  and saturation are selects, per-step work (factor row, bounds; a layer's factors where
  they are one number for all neurons) outside the loop over neurons.
* **An exact int64 path beside it.** :func:`kernel_form` checks once per layer that every
  bound holds (factors, biases, threshold, reset value and initial states small enough that
  every state stays within ``[-2**23, 2**23]``, also after a wrap); once per call the
  currents' bound (the synapse path's, else their measured peak) is checked against the
  largest input the int32 sums can hold (:func:`raw_limit`); a call that does not fit (say
  Lava LIF's ``a << 6`` on a huge fan-in) runs the same code in int64, exact for any input.
* **Saturation counted only where it happened.** Batch rows are independent: the kernel runs
  one row's steps after another (the row's states stay in cache) with code that only tells
  whether a value left the 24-bit range; from the rare row that did (put back as it was)
  on, the caller runs the rows again with the code that brings values back into range and
  counts them, compiled only then (:func:`compiled_starting`, :func:`counting_starting`;
  the VGG-13 and ResNet-19 rows of bench/sim_vs_float.py, whose layers never saturate:
  0.93x and 0.89x the one-thread kernel time of counting every row, steps outer,
  bench/neuron_layers.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

STATE_LIMIT = 1 << 23
#: Magnitude bound of int32 operands beyond which the int32 path is not used.
INT32_SAFE = 1 << 29
FACTOR_SAFE = (1 << 13) - 1


@dataclass(frozen=True)
class KernelForm:
    """A layer's parameters as the kernels take them (prepared once per layer)."""

    factors: np.ndarray  # (4, K, n): mu_d, mu_s, lam_d, lam_s; int32 if ``int32_ok``
    bias_d: np.ndarray
    bias_s: np.ndarray
    int32_ok: bool
    input_limit: int  # largest |a << shifts| the int32 dendrite sum takes exactly; -1: not int32_ok
    #: each factor is one number for all neurons at every step (a layer's scalar factors):
    #: the kernel then reads it once per step (:func:`compiled`'s ``uniform``)
    uniform: bool = False

    @property
    def state_dtype(self):
        return np.int32 if self.int32_ok else np.int64


def kernel_form(p) -> KernelForm:
    """The int32 eligibility and input bound of ``p`` (a ``NeuronParams``), derived from
    the worst case of every term (see the module docstring)."""
    factors = np.stack([p.mu_d, p.mu_s, p.lam_d, p.lam_s])  # int64 (4, K, n): params' rows
    bias_d, bias_s = int(np.abs(p.bias_d).max()), int(np.abs(p.bias_s).max())  # n >= 1
    # |R(f v)| <= |f| * 2**23 / 4096 + 1 for |v| <= 2**23
    dend = int((np.abs(factors[0]) + np.abs(factors[1])).max()) * 2048 + 2 + bias_d
    soma = int((np.abs(factors[2]) + np.abs(factors[3])).max()) * 2048 + 2 + bias_s
    soma += p.theta if p.next_step and not p.reset_set else 0
    # a wrap brings x back within [-2**23, 2**23] only from |x| <= 3 * 2**23; saturation
    # needs |a| + dend < 2**31, and where the premises below hold dend < 2**30: 2**30 fits
    wrap_span = 3 * STATE_LIMIT
    limit = wrap_span - dend if p.overflow_d == 2 else 1 << 30
    ok = (
        int(np.abs(factors).max()) <= FACTOR_SAFE
        and bias_d <= INT32_SAFE
        and bias_s <= INT32_SAFE
        and 0 <= p.theta <= INT32_SAFE
        and all(int(np.abs(v).max()) <= STATE_LIMIT for v in (p.reset_value, p.v_d_init, p.v_s_init))
        and (p.overflow_s != 2 or soma <= wrap_span)
        and limit >= 0
    )
    dtype = np.int32 if ok else np.int64
    return KernelForm(
        np.ascontiguousarray(factors, dtype),
        np.asarray(p.bias_d, dtype),
        np.asarray(p.bias_s, dtype),
        ok,
        limit if ok else -1,  # ok: limit >= 0
        bool((factors == factors[..., :1]).all()),
    )


def input_shifts(weight_exp: int | None, input_shift: int) -> tuple[int, int]:
    """``(r, l)`` with ``a' = (a >> r) << l`` the shifted current: ``shift(2 a, e) << s``.

    ``floor(2a / 2**k) == floor(a / 2**(k-1))``, so a negative exponent is one right shift.
    """
    if weight_exp is None:
        return 0, input_shift
    e = weight_exp + 1  # shift(2a, weight_exp) = a shifted by e (left where e > 0)
    return max(-e, 0), max(e, 0) + input_shift


def raw_limit(form: KernelForm, left: int) -> int:
    """Largest ``|a|`` of a raw current whose shifted ``(a >> right) << left`` the int32 path
    takes exactly, for any ``right`` (``|a >> right| <= |a|``); -1 where the layer is not
    int32-safe at all (its ``input_limit``, -1, shifts to -1). The limit is at most 2**30:
    from ``left`` = 31 on, 0."""
    return form.input_limit >> left


@intrinsic
def _ashr(typingctx, x, amount):
    """``x >> amount`` in ``x``'s own width (numba would widen a variable shift to int64,
    which AVX2 cannot shift arithmetically); ``amount`` must be below the width."""
    if not isinstance(x, types.Integer) or not isinstance(amount, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.ashr(args[0], context.cast(builder, args[1], sig.args[1], sig.args[0]))

    return x(x, amount), codegen


@intrinsic
def _shl(typingctx, x, amount):
    """``x << amount`` in ``x``'s own width (``amount`` below the width)."""
    if not isinstance(x, types.Integer) or not isinstance(amount, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.shl(args[0], context.cast(builder, args[1], sig.args[1], sig.args[0]))

    return x(x, amount), codegen


@intrinsic
def _as(typingctx, x, like):
    """``x`` converted to the integer type of ``like`` (sign-extended, truncated, or a float
    truncated toward zero): numba widens int32 arithmetic to int64; wrapping every
    operation in ``_as`` keeps it at the state's width, so LLVM emits 8-lane int32 code."""
    if not isinstance(like, types.Integer) or not isinstance(x, (types.Integer, types.Float, types.Boolean)):
        return None

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[0], sig.args[0], sig.args[1])

    return like(x, like), codegen


@intrinsic
def _zero_of(typingctx, array):
    """A zero of ``array``'s integer dtype (the width the kernel computes in)."""
    if not isinstance(array, types.Array) or not isinstance(array.dtype, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return context.get_constant(sig.return_type, 0)

    return array.dtype(array), codegen


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM use 512-bit vectors in the calling function where the CPU has them (its
    default on AVX-512 CPUs is 256: measured 1.2x faster kernels with 512)."""

    def codegen(context, builder, sig, args):
        # a string attribute (llvmlite's add() knows only keyword ones); with another
        # llvmlite's attribute set, LLVM's default width
        with contextlib.suppress(AttributeError, TypeError):
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen


@numba.njit(inline="always")
def _product(f, v, half, tz_mask, sign_bit):
    """``R(f * v / 4096)`` from the split ``v`` (all arguments of one integer type)."""
    c = _as(half + _as(_ashr(_as(f ^ v, v), sign_bit) & tz_mask, v), v)
    return _as(_as(f * _ashr(v, _as(12, v)), v) + _ashr(_as(_as(f * (v & 4095), v) + c, v), _as(12, v)), v)


@intrinsic
def _outside(typingctx, x, lo, hi):
    """1 where ``x`` is outside ``[lo, hi]``, else 0, in their (one) integer type: one
    unsigned compare of ``x - lo`` (wrapping) with ``hi - lo``, exact for every ``x`` of the
    type (``x - lo`` then takes each value modulo the width once, those of ``[lo, hi]`` as
    ``0 .. hi - lo``); two signed compares and their sum cost twice the vector operations."""
    if not (isinstance(x, types.Integer) and x == lo == hi):
        return None

    def codegen(context, builder, sig, args):
        value, low, high = args
        out = builder.icmp_unsigned(">", builder.sub(value, low), builder.sub(high, low))
        return builder.zext(out, value.type)

    return x(x, lo, hi), codegen


@numba.njit(inline="always")
def _copy_row(from_d, from_s, from_prev, from_fired, to_d, to_s, to_prev, to_fired, prev, marks):
    """One row's states into another's; its delayed spikes where ``prev``, fired marks where
    ``marks`` (the rules and kernel that read them)."""
    for i in range(to_d.size):
        to_d[i] = from_d[i]
        to_s[i] = from_s[i]
        if prev:
            to_prev[i] = from_prev[i]
        if marks:
            to_fired[i] = from_fired[i]


@numba.njit(inline="always")
def _overflow(x, hi, lo, wrap):
    """(x brought into [lo, hi] by saturation or one wrap, 1 if it was out of range)."""
    span = _as(1 << 24, x)
    wrapped = _as(_as(x - (span if x > hi else _as(0, x)), x) + (span if x < lo else _as(0, x)), x)
    return (wrapped if wrap else min(max(x, lo), hi)), _outside(x, lo, hi)


@intrinsic
def _layer_factor(typingctx, f, like):
    """A factor the same for all neurons, in the kernel's type (``like``'s); through int16
    where that is int32 (there ``|f| <= FACTOR_SAFE``, :func:`kernel_form`): LLVM then knows
    it fits 16 bits and multiplies the low halves of the split states by ``vpmaddwd`` (one
    operation; ``vpmulld`` is two)."""
    if not isinstance(f, types.Integer) or not isinstance(like, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        if sig.return_type.bitwidth == 32:
            narrow = builder.trunc(args[0], ir.IntType(16))
            return builder.sext(narrow, context.get_value_type(sig.return_type))
        return context.cast(builder, args[0], sig.args[0], sig.args[1])

    return like(f, like), codegen


#: Rule sets compiled with the rules as constants (no rule selects left in the loop):
#: the lmh profile and Lava's CUBA-LIF (loihi-lif); every other set runs the generic kernel
#: (one compilation; rules read at run time, still vectorised).
SPECIALISED_RULES = {(0, 0, 0, 0, 0, 0), (1, 2, 1, 1, 1, 0)}
_KERNELS: dict[tuple, Any] = {}


def compiled(
    rules: tuple[int, ...],
    write_f: bool,
    write_tr: bool,
    uniform: bool = False,
    mark_fired: bool = True,
    count_saturation: bool = True,
):
    """The kernel for one rule set (compiled once per process and per argument types: it
    computes in the states' integer type; cached on disk by numba). ``uniform``: for layers
    whose factors are one number for all neurons (:attr:`KernelForm.uniform`), read once
    per step instead of per neuron (the MLP row of bench/sim_vs_float.py: about 8 % less
    time per neuron-step). ``mark_fired`` False: the kernel neither reads nor writes its
    ``fired`` argument (a caller that counts a row's active neurons from its own
    ``neuron_spikes``, as :mod:`lmh_deploy.sim.chain` does: one load, or and store less per
    neuron-step). ``count_saturation`` False: instead of counting the values brought back
    into range, the kernel only tells whether there was one: it returns 0 where none was out
    of range, else -1 (the count unknown: the caller reruns the call from the states before
    it with the counting kernel, the same integers; :mod:`lmh_deploy.sim.chain`, where
    saturation is rare); it does not bring values back into range either (the first value
    out of range is exact, from states in range, and tells; what follows is the rerun's:
    four vector operations less per neuron-step, the MLP row's kernel 0.9x the time).
    Under saturation to ``[-2**23, 2**23 - 1]`` (the lmh rules) it ors ``x - lo`` of every
    value, which has a bit above bit 23 exactly where ``x`` is out of range (two vector
    operations per value; counting takes four), under the other rules it keeps the lowest
    and highest values (also two)."""
    return _kernels(rules, write_f, write_tr, uniform, mark_fired, count_saturation)[0]


def compiled_starting(rules: tuple[int, ...], write_f: bool, write_tr: bool, uniform: bool = False):
    """:func:`compiled`'s kernel with three more arguments, ``init_d``, ``init_s`` (n,) and
    ``fresh``: when ``fresh``, the states are not read but start from those values (and no
    spikes), row by row just before each row's first step. It runs each batch row's steps
    with :func:`compiled`'s code that does not count saturation and returns the end of the
    rows it finished, ``b_hi`` where no value left the range; else the first row where one
    did, put back as it was (its states, delayed spikes and fired marks as kept before its
    steps; its spikes taken off the per-neuron counts, not in ``counts``) and the rows after
    it not run: the caller runs those rows with :func:`counting_starting` (the same
    arguments, its own ``counts``), which counts the saturation."""
    return _kernels(rules, write_f, write_tr, uniform, True, False, rerun=True)[1]


def counting_starting(rules: tuple[int, ...], write_f: bool, write_tr: bool, uniform: bool = False):
    """:func:`compiled_starting`'s kernel with the code that counts saturation (returns the
    count), for the rows it leaves; compiled only when some call needs it."""
    return _kernels(rules, write_f, write_tr, uniform, True, True)[1]


def _kernels(
    rules: tuple[int, ...],
    write_f: bool,
    write_tr: bool,
    uniform: bool,
    mark_fired: bool,
    count_saturation: bool,
    rerun: bool = False,
):
    fixed = rules if rules in SPECIALISED_RULES else None
    key = (fixed, write_f, write_tr, uniform, mark_fired, count_saturation, rerun)
    if key not in _KERNELS:
        _KERNELS[key] = _make_kernel(fixed, write_f, write_tr, uniform, mark_fired, count_saturation, rerun)
    return _KERNELS[key]


def _make_kernel(
    fixed,
    write_f: bool,
    write_tr: bool,
    uniform: bool,
    mark_fired: bool,
    count_saturation: bool,
    rerun: bool = False,
):
    generic = fixed is None
    delayed_rules = generic or bool(fixed[5])  # the rules read and write ``s_prev``
    # the generic kernel reads its rules at run time; these constants are then placeholders
    c_round, c_ov_d, c_ov_s, c_gt, c_set, c_next = fixed or (0,) * 6

    @numba.njit(cache=True, nogil=True)
    def starting(
        cur,
        steps,
        right,
        left,
        t0,
        factors,
        bias_d,
        bias_s,
        theta,
        reset_value,
        rules,
        v_d,
        v_s,
        s_prev,
        fired,
        neuron_spikes,
        spikes,
        spikes_f,
        tr_d,
        tr_s,
        counts,
        b_lo,
        b_hi,
        init_d,
        init_s,
        fresh,
        keep_final,
        active,
    ):
        """``cur`` (c, B, n), or (1, B, n) for a current that is the same every step; the
        arithmetic is in the integer type of ``v_d`` (int32 only where the caller checked
        the bounds). ``b_lo:b_hi`` (``b_hi`` -1: to the last row): the batch rows to update;
        only those are written, and their spikes counted into ``counts`` and
        ``neuron_spikes``, so calls on disjoint rows, each with its own ``counts`` and
        ``neuron_spikes``, may run in parallel threads (the kernel releases the GIL).
        ``fresh``: the states hold nothing yet; each row starts from ``init_d``, ``init_s``
        (n,) and no spikes, written just before its first step (in cache, in the row's
        thread: no separate pass over the states). Rows are independent: each row runs all
        its steps, one after the other, before the next row (its states stay in cache);
        the step totals ``counts`` are sums over rows. ``keep_final`` False (the last chunk
        of a run whose final states nobody reads): each row runs in scratch states of the
        call's own (copied from the row's, or started), the states and fired marks are not
        written back (their writes were about 5 of the 11 bytes a neuron-step moves at T = 4)
        and ``active[0]`` gets the number of the rows' neurons that fired (what the marks
        would have held)."""
        wide_vectors()
        z = _zero_of(v_d)
        sign_bit = _as(8 * v_d.itemsize - 1, z)
        rounding = rules[0] if generic else c_round
        ov_d = rules[1] if generic else c_ov_d
        ov_s = rules[2] if generic else c_ov_s
        thr_gt = rules[3] if generic else c_gt
        reset_set = rules[4] if generic else c_set
        next_step = rules[5] if generic else c_next
        half = _as(2048 if rounding == 0 else 0, z)
        tz_mask = _as(4095 if rounding == 1 else 0, z)
        # wrap (Lava LIF's u): 2**23 itself is kept, -2**23 becomes 2**23
        hi_d = _as(8388608 if ov_d == 2 else 8388607, z)
        lo_d = _as(-8388608 if ov_d == 0 else -8388607, z)
        hi_s = _as(8388608 if ov_s == 2 else 8388607, z)
        lo_s = _as(-8388608 if ov_s == 0 else -8388607, z)
        wrap_d = ov_d == 2
        wrap_s = ov_s == 2
        th = _as(theta, z)
        fire_at = _as(theta + 1 if thr_gt else theta, z)
        rv = _as(reset_value, z)
        delayed = next_step != 0
        delayed_sub = delayed and reset_set == 0
        delayed_set = delayed and reset_set != 0
        same_step = not delayed
        r = _as(min(right, sign_bit), z)
        sh = _as(min(left, sign_bit), z)
        n = v_d.shape[1]
        rows_end = v_d.shape[0] if b_hi < 0 else b_hi
        per_neuron = np.zeros(n, np.int32)
        row_counts = np.zeros(steps, np.int64)
        # a row's states before its steps, to put back (scratch rows leave them untouched)
        keep = rerun and not fresh and keep_final
        scratch = 0 if keep_final else n
        scratch_d = np.empty(scratch, v_d.dtype)
        scratch_s = np.empty(scratch, v_d.dtype)
        scratch_prev = np.zeros(scratch, np.bool_)
        scratch_fired = np.zeros(scratch, np.bool_)
        row_active = np.int64(0)
        kept_d = np.empty(n if keep else 0, v_d.dtype)
        kept_s = np.empty(n if keep else 0, v_d.dtype)
        kept_prev = np.empty(n if keep and delayed_rules else 0, np.bool_)
        kept_fired = np.empty(n if keep and mark_fired else 0, np.bool_)
        for s in range(steps):
            counts[s] = 0
        sat = 0
        out = False  # without count_saturation: a value was out of range
        done = rows_end  # rerun: the end of the rows finished
        for b in range(b_lo, rows_end):
            vd_row, vs_row, prev_row, fired_row = v_d[b], v_s[b], s_prev[b], fired[b]
            if not keep_final:
                if not fresh:
                    _copy_row(vd_row, vs_row, prev_row, fired_row, scratch_d, scratch_s, scratch_prev,
                              scratch_fired, delayed_rules, mark_fired)  # fmt: skip
                vd_row, vs_row, prev_row, fired_row = scratch_d, scratch_s, scratch_prev, scratch_fired
            if fresh:
                for i in range(n):
                    vd_row[i] = init_d[i]
                    vs_row[i] = init_s[i]
                    prev_row[i] = False
                    if mark_fired:
                        fired_row[i] = False
            elif keep:
                _copy_row(vd_row, vs_row, prev_row, fired_row, kept_d, kept_s, kept_prev, kept_fired,
                          delayed_rules, mark_fired)  # fmt: skip
            # without count_saturation: the or of every x - lo (the lmh rules' bounds), or
            # the lowest and highest values before the bounds (the others')
            low_d, high_d, low_s, high_s = hi_d, lo_d, hi_s, lo_s
            bits_d, bits_s = z, z
            for s in range(steps):
                k = min(t0 + s, factors.shape[1] - 1)
                mu_d, mu_s, lam_d, lam_s = factors[0, k], factors[1, k], factors[2, k], factors[3, k]
                one_mu_d, one_mu_s = _layer_factor(mu_d[0], z), _layer_factor(mu_s[0], z)
                one_lam_d, one_lam_s = _layer_factor(lam_d[0], z), _layer_factor(lam_s[0], z)
                c_row = cur[s if cur.shape[0] > 1 else 0, b]
                spk_row = spikes[s, b]
                f_row = spikes_f[s, b] if write_f else spikes_f[0, 0]
                trd_row = tr_d[s, b] if write_tr else tr_d[0, 0]
                trs_row = tr_s[s, b] if write_tr else tr_s[0, 0]
                row_sat = z
                row_count = z
                for i in range(n):
                    a = _shl(_ashr(_as(c_row[i], z), r), sh)
                    vd0 = vd_row[i]
                    vs0 = vs_row[i]
                    x = _as(
                        _as(
                            _product(one_mu_d if uniform else _as(mu_d[i], z), vd0, half, tz_mask, sign_bit)
                            + _product(
                                one_mu_s if uniform else _as(mu_s[i], z), vs0, half, tz_mask, sign_bit
                            ),
                            z,
                        )
                        + _as(a + _as(bias_d[i], z), z),
                        z,
                    )
                    if not count_saturation:
                        if ov_d == 0:  # [lo, hi] = [-2**23, 2**23 - 1]: x - lo has no bit above 23
                            bits_d = _as(bits_d | _as(x - lo_d, z), z)
                        else:
                            low_d, high_d = _as(min(low_d, x), z), _as(max(high_d, x), z)
                    n_d = z  # without count_saturation: out of range is the caller's rerun
                    if count_saturation:
                        x, n_d = _overflow(x, hi_d, lo_d, wrap_d)
                    m = _as(
                        _as(
                            _product(one_lam_s if uniform else _as(lam_s[i], z), vs0, half, tz_mask, sign_bit)
                            + _product(
                                one_lam_d if uniform else _as(lam_d[i], z), x, half, tz_mask, sign_bit
                            ),
                            z,
                        )
                        + _as(bias_s[i], z),
                        z,
                    )
                    prev = prev_row[i] if (generic or c_next) else False
                    m = _as(m - (th if (delayed_sub & prev) else z), z)
                    if not count_saturation:
                        if ov_s == 0:
                            bits_s = _as(bits_s | _as(m - lo_s, z), z)
                        else:
                            low_s, high_s = _as(min(low_s, m), z), _as(max(high_s, m), z)
                    n_s = z
                    if count_saturation:
                        m, n_s = _overflow(m, hi_s, lo_s, wrap_s)
                    m = rv if (delayed_set & prev) else m
                    spk = m >= fire_at
                    reset_to = rv if reset_set else _as(m - th, z)
                    v_new = reset_to if (same_step & spk) else m
                    if count_saturation:
                        row_sat = _as(row_sat + _as(n_d + n_s, z), z)
                    row_count = _as(row_count + _as(spk, z), z)
                    vd_row[i] = x
                    vs_row[i] = v_new
                    if generic or c_next:
                        prev_row[i] = spk & delayed
                    spk_row[i] = spk
                    if mark_fired:
                        fired_row[i] = fired_row[i] | spk
                    per_neuron[i] = np.int32(per_neuron[i] + np.int32(spk))
                    if write_f:
                        f_row[i] = spk
                    if write_tr:
                        trd_row[i] = x
                        trs_row[i] = v_new
                row_counts[s] = row_count
                sat += row_sat
            row_out = low_d < lo_d or high_d > hi_d or low_s < lo_s or high_s > hi_s
            row_out = row_out or (bits_d | bits_s) >> 24 != 0
            if rerun and row_out:  # the row put back, the rows from it on left to the caller
                if keep:  # (a fresh row needs nothing: the counting call starts it again)
                    _copy_row(kept_d, kept_s, kept_prev, kept_fired, vd_row, vs_row, prev_row, fired_row,
                              delayed_rules, mark_fired)  # fmt: skip
                for s in range(steps):
                    spk_row = spikes[s, b]
                    for i in range(n):
                        per_neuron[i] = np.int32(per_neuron[i] - np.int32(spk_row[i]))
                done = b
                break
            out = out or row_out
            for s in range(steps):
                counts[s] += row_counts[s]
            if not keep_final and mark_fired:
                for i in range(n):
                    row_active += np.int64(fired_row[i])
        for i in range(n):
            neuron_spikes[i] += per_neuron[i]
        if not keep_final:
            active[0] += row_active
        if rerun:
            return done
        if not count_saturation:
            return -1 if out else 0
        return sat

    @numba.njit(cache=True, nogil=True)
    def kernel(
        cur,
        steps,
        right,
        left,
        t0,
        factors,
        bias_d,
        bias_s,
        theta,
        reset_value,
        rules,
        v_d,
        v_s,
        s_prev,
        fired,
        neuron_spikes,
        spikes,
        spikes_f,
        tr_d,
        tr_s,
        counts,
        b_lo=0,
        b_hi=-1,
    ):
        """:func:`starting` on states that hold their values (``fresh`` False)."""
        return starting(
            cur, steps, right, left, t0, factors, bias_d, bias_s, theta, reset_value, rules,
            v_d, v_s, s_prev, fired, neuron_spikes, spikes, spikes_f, tr_d, tr_s, counts,
            b_lo, b_hi, bias_d, bias_s, False, True, np.zeros(0, np.int64),
        )  # fmt: skip

    return kernel, starting
