"""The integer neuron update over a chunk of steps: one fused compiled loop, or array code.

Both implementations compute exactly the integer step of :mod:`lmh_deploy.semantics`
(tested bit for bit against it): per step ``t`` and neuron, with ``R`` the profile's
rounding of ``f * v / 4096`` and ``OV`` its overflow handling (counted)::

    a    = currents[t]                  (or (2 * currents[t]) shifted by the weight exponent)
    v_d' = OVd(R(mu_d v_d) + R(mu_s v_s) + (a << input_shift) + bias_d)
    m    = OVs(R(lam_s v_s) + R(lam_d v_d') + bias_s  [- theta * s_prev: next-step subtract])
    next-step set reset: m := reset_value where s_prev
    s    = m >= theta   (or m > theta)
    same-step timing: v_s' = m - theta * s  (or reset_value where s); next-step: v_s' = m, s_prev = s

:func:`run_neuron_chunk` picks the numba kernel (in place, int64 arithmetic, one pass over
memory per step) for numpy arrays when numba is importable, else the array code, which
runs unchanged on numpy arrays and on torch tensors of any device.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from lmh_deploy.sim.params import NeuronParams

try:  # numba is a declared dependency; the array code keeps the same bits without it
    import numba
except ImportError:  # pragma: no cover - exercised by forcing the fallback in the tests
    numba = None

_FORCE_ARRAY_CODE = os.environ.get("LMH_DEPLOY_SIM_NO_NUMBA", "") not in ("", "0")

STATE_LIMIT = 1 << 23  # 24-bit states: [-2**23, 2**23 - 1]
WRAP_SPAN = 1 << 24


def numba_active() -> bool:
    """True when the compiled kernels are in use (numba importable and not switched off)."""
    return numba is not None and not _FORCE_ARRAY_CODE


@contextmanager
def array_code_only() -> Iterator[None]:
    """Run the pure array (numpy / torch) code even where numba is installed (tests)."""
    global _FORCE_ARRAY_CODE
    saved, _FORCE_ARRAY_CODE = _FORCE_ARRAY_CODE, True
    try:
        yield
    finally:
        _FORCE_ARRAY_CODE = saved


@dataclass
class NeuronState:
    """Mutable per-layer state of a batch: int64 ``v_d``, ``v_s``; bool ``s_prev``, ``fired``.

    ``neuron_spikes`` (n,) int64 counts every spike per neuron (synaptic-event accounting).
    """

    v_d: Any
    v_s: Any
    s_prev: Any
    fired: Any
    neuron_spikes: Any
    saturation: int = 0


def initial_state(p: NeuronParams, batch: int, like=None) -> NeuronState:
    """States at t = 0 as numpy arrays, or torch tensors on ``like``'s device."""
    shape = (batch, p.size)
    if like is None:
        return NeuronState(np.full(shape, p.v_d_init, np.int64), np.full(shape, p.v_s_init, np.int64),
                           np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(p.size, np.int64))
    import torch

    kw = {"device": like.device}
    return NeuronState(torch.full(shape, p.v_d_init, dtype=torch.int64, **kw),
                       torch.full(shape, p.v_s_init, dtype=torch.int64, **kw),
                       torch.zeros(shape, dtype=torch.bool, **kw),
                       torch.zeros(shape, dtype=torch.bool, **kw),
                       torch.zeros(p.size, dtype=torch.int64, **kw))


def run_neuron_chunk(p: NeuronParams, t0: int, currents, weight_exp: int | None,
                     state: NeuronState, spikes, spikes_f=None, trace=None):
    """Advance ``state`` over ``c = len(currents)`` steps starting at step ``t0``, in place.

    ``currents`` (c, B, n): the integer input ``a_in`` (``weight_exp=None``), or raw synaptic
    sums of mantissas whose Lava current is ``shift(2 * sum, weight_exp)`` (floats holding
    exact integers are fine). Writes ``spikes`` (c, B, n) bool, optionally ``spikes_f``
    (c, B, n) float32 copies for a following float GEMM and ``trace = (v_d, v_s)`` (c, B, n)
    int64; returns the spike count per step (c,) int64 (numpy or torch).
    """
    if isinstance(state.v_d, np.ndarray) and numba_active():
        return _run_compiled(p, t0, currents, weight_exp, state, spikes, spikes_f, trace)
    return _run_arrays(p, t0, currents, weight_exp, state, spikes, spikes_f, trace)


# --------------------------------------------------------------------------- array code
def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _where(cond, a, b):
    if _is_torch(cond):
        import torch

        return torch.where(cond, a, b)
    return np.where(cond, a, b)


def _round_product(f, v, rounding: int):
    x = f * v
    if rounding == 0:
        return (x + 2048) >> 12
    if rounding == 2:
        return x >> 12
    return _where(x >= 0, x >> 12, -((-x) >> 12))


def _overflow(x, mode: int):
    """(handled x, number of out-of-range values)."""
    hi = STATE_LIMIT - 1
    lo = -hi if mode == 1 else -STATE_LIMIT
    if mode == 2:  # Lava LIF's u wrap: 2**23 itself is kept, -2**23 becomes 2**23
        out = (x > STATE_LIMIT) | (x <= -STATE_LIMIT)
        if not bool(out.any()):
            return x, 0
        w = _where(x > STATE_LIMIT, x - WRAP_SPAN, x)
        return _where(w <= -STATE_LIMIT, x + WRAP_SPAN, w), int(out.sum())
    if bool(x.min() >= lo) and bool(x.max() <= hi):
        return x, 0
    count = int(((x < lo) | (x > hi)).sum())
    return (x.clamp(lo, hi) if _is_torch(x) else np.clip(x, lo, hi)), count


def _lava_current(cur, weight_exp: int | None):
    """int64 ``a_in`` from one step of ``currents``."""
    if _is_torch(cur):
        import torch

        a = torch.round(cur).to(torch.int64) if cur.is_floating_point() else cur.to(torch.int64)
    else:
        a = np.rint(cur).astype(np.int64) if cur.dtype.kind == "f" else cur.astype(np.int64)
    if weight_exp is None:
        return a
    a = a * 2
    return a << weight_exp if weight_exp >= 0 else a >> -weight_exp


def _factor_rows(p: NeuronParams, like):
    rows = (p.mu_d, p.mu_s, p.lam_d, p.lam_s, p.bias_d, p.bias_s)
    if not _is_torch(like):
        return rows
    import torch

    return tuple(torch.as_tensor(np.array(r), device=like.device) for r in rows)


def _run_arrays(p, t0, currents, weight_exp, state, spikes, spikes_f, trace):
    mu_d, mu_s, lam_d, lam_s, bias_d, bias_s = _factor_rows(p, state.v_d)
    counts = []
    for s in range(currents.shape[0]):
        k = min(t0 + s, p.rows - 1)
        a = _lava_current(currents[s], weight_exp)
        if p.input_shift:
            a = a << p.input_shift
        v_d = _round_product(mu_d[k], state.v_d, p.rounding)
        v_d = v_d + _round_product(mu_s[k], state.v_s, p.rounding) + a + bias_d
        v_d, sat_d = _overflow(v_d, p.overflow_d)
        m = _round_product(lam_s[k], state.v_s, p.rounding)
        m = m + _round_product(lam_d[k], v_d, p.rounding) + bias_s
        if p.next_step and not p.reset_set:  # a delayed subtractive reset: inside the sum
            m = m - p.theta * state.s_prev
        m, sat_s = _overflow(m, p.overflow_s)
        if p.next_step and p.reset_set:
            m = _where(state.s_prev, p.reset_value, m)
        spk = m > p.theta if p.threshold_gt else m >= p.theta
        if p.next_step:
            state.s_prev[...] = spk
        elif p.reset_set:
            m = _where(spk, p.reset_value, m)
        else:
            m = m - p.theta * spk
        state.v_d[...] = v_d
        state.v_s[...] = m
        state.saturation += sat_d + sat_s
        state.fired |= spk
        state.neuron_spikes += spk.sum(0)
        spikes[s] = spk
        if spikes_f is not None:
            spikes_f[s] = spk
        if trace is not None:
            trace[0][s] = v_d
            trace[1][s] = m
        counts.append(spk.sum())
    if _is_torch(state.v_d):
        import torch

        return torch.stack(counts).to(torch.int64)
    return np.asarray(counts, np.int64)


# --------------------------------------------------------------------------- numba kernel
def _run_compiled(p, t0, currents, weight_exp, state, spikes, spikes_f, trace):
    counts = np.zeros(currents.shape[0], np.int64)
    empty_f = np.zeros((0, 0, 0), np.float32)
    empty_i = np.zeros((0, 0, 0), np.int64)
    rules = _rules_of(p)
    kernel = _compiled(rules, weight_exp is not None, spikes_f is not None, trace is not None)
    sat = kernel(currents, 0 if weight_exp is None else int(weight_exp), t0,
                 p.mu_d, p.mu_s, p.lam_d, p.lam_s, p.bias_d, p.bias_s, p.theta, p.reset_value,
                 p.input_shift, np.asarray(rules, np.int64), state.v_d, state.v_s,
                 state.s_prev, state.fired, state.neuron_spikes, spikes,
                 empty_f if spikes_f is None else spikes_f,
                 empty_i if trace is None else trace[0], empty_i if trace is None else trace[1],
                 counts)
    state.saturation += int(sat)
    return counts


def _rules_of(p: NeuronParams) -> tuple[int, ...]:
    return (p.rounding, p.overflow_d, p.overflow_s, int(p.threshold_gt), int(p.reset_set),
            int(p.next_step))


#: Rule sets compiled with the rules as constants (about 3x faster than the generic kernel,
#: which reads them at run time): the lmh profile and Lava's CUBA-LIF (loihi-lif).
SPECIALISED_RULES = {(0, 0, 0, 0, 0, 0), (1, 2, 1, 1, 1, 0)}
_KERNELS: dict[tuple, Any] = {}


def _compiled(rules: tuple[int, ...], scaled: bool, write_f: bool, write_tr: bool):
    """The numba kernel for one rule set: specialised (rules folded in as constants, no rule
    branches left in the inner loop) for :data:`SPECIALISED_RULES`, else the generic one
    (one compilation for every other combination). Compiled once per process and cached on
    disk by numba."""
    fixed = rules if rules in SPECIALISED_RULES else None
    key = (fixed, scaled, write_f, write_tr)
    if key not in _KERNELS:
        _KERNELS[key] = _build_kernel(fixed, scaled, write_f, write_tr)
    return _KERNELS[key]


def _build_kernel(fixed: tuple[int, ...] | None, scaled: bool,
                  write_f: bool, write_tr: bool):
    generic = fixed is None
    c_round, c_ov_d, c_ov_s, c_gt, c_set, c_next = fixed or (0, 0, 0, 0, 0, 0)

    @numba.njit(cache=True, nogil=True)
    def kernel(cur, wexp, t0, mu_d, mu_s, lam_d, lam_s, bias_d, bias_s, theta, reset_value,
               in_shift, rules, v_d, v_s, s_prev, fired, neuron_spikes, spikes, spikes_f,
               tr_d, tr_s, counts):
        rounding = rules[0] if generic else c_round
        ov_d = rules[1] if generic else c_ov_d
        ov_s = rules[2] if generic else c_ov_s
        thr_gt = rules[3] if generic else c_gt
        reset_set = rules[4] if generic else c_set
        next_step = rules[5] if generic else c_next
        # R(x) = (x + half + neg * (x < 0)) >> 12: half-up (2048, 0), floor (0, 0),
        # toward-zero (0, 4095): trunc(x / 4096) == (x + 4095) >> 12 for negative x
        half = 2048 if rounding == 0 else 0
        neg = 4095 if rounding == 1 else 0
        # wrap (Lava LIF's u): 2**23 itself is kept, -2**23 becomes 2**23
        hi_d = 8388608 if ov_d == 2 else 8388607
        lo_d = -8388608 if ov_d == 0 else -8388607
        hi_s = 8388608 if ov_s == 2 else 8388607
        lo_s = -8388608 if ov_s == 0 else -8388607
        wrap_d = ov_d == 2
        wrap_s = ov_s == 2
        fire_at = theta + 1 if thr_gt else theta
        steps, batch, n = cur.shape
        sat = 0
        for s in range(steps):
            k = min(t0 + s, mu_d.shape[0] - 1)
            total = 0
            for b in range(batch):
                for i in range(n):
                    a = np.int64(cur[s, b, i])  # float sums hold exact integers
                    if scaled:
                        a = (2 * a) << wexp if wexp >= 0 else (2 * a) >> -wexp
                    vd0 = v_d[b, i]
                    vs0 = v_s[b, i]
                    p1 = mu_d[k, i] * vd0
                    p2 = mu_s[k, i] * vs0
                    x = ((p1 + half + neg * (p1 < 0)) >> 12) + ((p2 + half + neg * (p2 < 0)) >> 12) \
                        + (a << in_shift) + bias_d[i]
                    if x > hi_d:
                        x = x - 16777216 if wrap_d else hi_d
                        sat += 1
                    elif x < lo_d:
                        x = x + 16777216 if wrap_d else lo_d
                        sat += 1
                    p3 = lam_s[k, i] * vs0
                    p4 = lam_d[k, i] * x
                    m = ((p3 + half + neg * (p3 < 0)) >> 12) + ((p4 + half + neg * (p4 < 0)) >> 12) \
                        + bias_s[i]
                    if next_step and not reset_set and s_prev[b, i]:
                        m -= theta  # a delayed subtractive reset is part of the soma sum
                    if m > hi_s:
                        m = m - 16777216 if wrap_s else hi_s
                        sat += 1
                    elif m < lo_s:
                        m = m + 16777216 if wrap_s else lo_s
                        sat += 1
                    if next_step and reset_set and s_prev[b, i]:
                        m = reset_value
                    spk = m >= fire_at
                    if next_step:
                        s_prev[b, i] = spk
                    elif spk:
                        m = reset_value if reset_set else m - theta
                    v_d[b, i] = x
                    v_s[b, i] = m
                    spikes[s, b, i] = spk
                    if write_f:
                        spikes_f[s, b, i] = spk
                    if write_tr:
                        tr_d[s, b, i] = x
                        tr_s[s, b, i] = m
                    total += spk
                    fired[b, i] |= spk
                    neuron_spikes[i] += spk
            counts[s] = total
        return sat

    return kernel
