"""The integer neuron update over a chunk of steps: one fused compiled loop, or array code.

**A fast copy, not the definition.** The reference rule is
:func:`lmh_deploy.semantics.integer.lmh_step` (the Lava ProcessModels run it too); this module
and :mod:`lmh_deploy.sim.fused` restate it for speed (whole chunks, no per-step dispatch).
``tests/test_sim_kernels.py::test_kernels_equal_semantics_lmh_step_for_every_profile_and_rule``
keeps the copies equal: on every numeric profile and every reset / threshold / timing rule it
allows, all three (numba, numpy, torch) must give the reference's spikes, states and
saturation count at every step. A change to the rule goes into ``semantics/`` first.

Per step ``t`` and neuron, with ``R`` the profile's
rounding of ``f * v / 4096`` and ``OV`` its overflow handling (counted)::

    a    = currents[t]                  (or (2 * currents[t]) shifted by the weight exponent)
    v_d' = OVd(R(mu_d v_d) + R(mu_s v_s) + (a << input_shift) + bias_d)
    m    = OVs(R(lam_s v_s) + R(lam_d v_d') + bias_s  [- theta * s_prev: next-step subtract])
    next-step set reset: m := reset_value where s_prev
    s    = m >= theta   (or m > theta)
    same-step timing: v_s' = m - theta * s  (or reset_value where s); next-step: v_s' = m, s_prev = s

:func:`run_neuron_chunk` picks the numba kernels of :mod:`lmh_deploy.sim.fused` (in place,
vectorised int32 arithmetic with an exact int64 path for what int32 cannot hold) for numpy
arrays when numba is importable, else the array code, which runs unchanged on numpy arrays
and on torch tensors of any device. numpy states are int32 where every value provably
fits (:func:`lmh_deploy.sim.fused.kernel_form`), else int64; torch states are int64.

**Threads.** The compiled kernel releases the GIL, and samples are independent: a chunk's
batch rows are cut into contiguous ranges (:func:`row_ranges`), one per thread, each range
updated by its own kernel call with its own spike counters, summed afterwards, so the bits
do not depend on the thread count. The kernel uses numba's thread count
(:func:`sim_threads`; ``numba.set_num_threads``), the convolutions torch's
(``torch.set_num_threads``); both default to every CPU. The ranges run on torch's own
OpenMP team where that is safe (:mod:`lmh_deploy.sim.omp_team`: its workers spin idle after
each torch op, and shared a core with any thread of ours), else on a pool of Python threads.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from lmh_deploy.sim.omp_team import run_on_team, team
from lmh_deploy.sim.params import NeuronParams
from lmh_deploy.sim.way_costs import WayCosts

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
    """Mutable per-layer state of a batch: integer ``v_d``, ``v_s``; bool ``s_prev``, ``fired``.

    ``neuron_spikes`` (n,) int64 counts every spike per neuron (synaptic-event accounting).
    ``start``: ``(v_d_init, v_s_init)`` while the arrays are not written yet (a lazy state:
    the compiled kernel writes each row in its first step; anything else fills them first).
    ``active``: None while the arrays hold the states; after a last chunk that kept none
    (:func:`run_neuron_chunk`'s ``keep_states``), the number of (sample, neuron) pairs that
    fired at some step (what ``fired`` would count), the arrays no longer the states.
    """

    v_d: Any
    v_s: Any
    s_prev: Any
    fired: Any
    neuron_spikes: Any
    saturation: int = 0
    start: tuple[Any, Any] | None = None
    active: int | None = None

    def active_count(self) -> int:
        """The (sample, neuron) pairs that fired at some step so far."""
        if self.active is not None:
            return self.active
        return int(np.count_nonzero(as_numpy(self.fired)))

    def settle(self) -> None:
        """Write a lazy state's initial values (no spikes yet)."""
        if self.start is not None:
            self.v_d[...], self.v_s[...] = self.start
            self.s_prev[...] = False
            self.fired[...] = False
            self.start = None


def initial_state(p: NeuronParams, batch: int, like=None, lazy: bool = False) -> NeuronState:
    """States at t = 0 as numpy arrays, or torch tensors on ``like``'s device.

    ``lazy`` (numpy): the arrays are left unwritten (:attr:`NeuronState.start`) for the
    compiled kernel to start each row in its first step, in cache, instead of a separate
    pass over every state before the kernel's own (:func:`filled_rows`)."""
    shape = (batch, p.size)
    if like is None:
        dtype = _state_dtype(p)
        if lazy:
            made = (
                np.empty(shape, dtype),
                np.empty(shape, dtype),
                np.empty(shape, bool),
                np.empty(shape, bool),
            )
            return NeuronState(*made, np.zeros(p.size, np.int64), start=(p.v_d_init, p.v_s_init))
        return NeuronState(
            filled_rows(batch, p.size, p.v_d_init, dtype),
            filled_rows(batch, p.size, p.v_s_init, dtype),
            np.zeros(shape, bool),
            np.zeros(shape, bool),
            np.zeros(p.size, np.int64),
        )
    import torch

    kw = {"device": like.device}
    return NeuronState(
        torch.as_tensor(np.full(shape, p.v_d_init, np.int64), **kw),
        torch.full(shape, p.v_s_init, dtype=torch.int64, **kw),
        torch.zeros(shape, dtype=torch.bool, **kw),
        torch.zeros(shape, dtype=torch.bool, **kw),
        torch.zeros(p.size, dtype=torch.int64, **kw),
    )


def as_numpy(a) -> np.ndarray:
    """A numpy view/copy of a numpy array or torch tensor (any device)."""
    return a if isinstance(a, np.ndarray) else a.detach().cpu().numpy()


def filled_rows(batch: int, n: int, value: int | np.ndarray, dtype) -> np.ndarray:
    """A (batch, n) array of ``value``, one number or (n,) per neuron, filled by ranges of
    rows in threads (:func:`row_ranges`; numpy's fill releases the GIL): the first touch of
    a large state's fresh pages is most of its cost, and serial it was 7 % of a VGG-13 run
    at one thread (bench/sim_vs_float.py's vgg13 row), more of one at two."""
    out = np.empty((batch, n), dtype)

    def fill(lo: int, hi: int) -> None:
        out[lo:hi] = value

    run_in_threads(fill, row_ranges(batch, n, sim_threads()), work=batch * n)
    return out


def run_neuron_chunk(
    p: NeuronParams,
    t0: int,
    currents,
    weight_exp: int | None,
    state: NeuronState,
    spikes,
    spikes_f=None,
    trace=None,
    steps: int | None = None,
    peak: float | None = None,
    keep_states: bool = True,
):
    """Advance ``state`` over ``c`` steps starting at step ``t0``, in place.

    ``currents`` (c, B, n): the integer input ``a_in`` (``weight_exp=None``), or raw synaptic
    sums of mantissas whose Lava current is ``shift(2 * sum, weight_exp)`` (floats holding
    exact integers are fine); (1, B, n) with ``steps=c`` for a current that is the same at
    every step. Writes ``spikes`` (c, B, n) bool, optionally ``spikes_f`` (c, B, n) float32
    copies for a following float GEMM and ``trace = (v_d, v_s)`` (c, B, n) int64; returns
    the spike count per step (c,) int64 (numpy or torch). ``peak``: a known bound on
    ``|currents|`` (e.g. the synapse path's); None: measured here when it matters.
    ``keep_states=False``: nothing reads the states after this chunk (a run's last chunk,
    no final states recorded); the compiled kernel then runs each row in scratch states and
    writes back neither them nor the fired marks, only their count
    (:attr:`NeuronState.active`); the other paths keep them as ever.
    """
    if state.active is not None:
        raise ValueError("the states were not kept after the last chunk (keep_states=False)")
    steps = currents.shape[0] if steps is None else steps
    if currents.shape[0] not in (1, steps):
        raise ValueError(f"currents for {currents.shape[0]} steps, {steps} steps asked")
    compiled = not p.by_semantics and isinstance(state.v_d, np.ndarray) and numba_active()
    if not compiled or steps == 0:
        state.settle()
    if compiled:
        return _run_compiled(
            p, t0, currents, weight_exp, state, spikes, spikes_f, trace, steps, peak, keep_states
        )
    if p.by_semantics:
        return _run_semantics(p, t0, currents, weight_exp, state, spikes, spikes_f, trace, steps)
    return _run_arrays(p, t0, currents, weight_exp, state, spikes, spikes_f, trace, steps)


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
    """int64 ``a_in`` from one step of ``currents`` (floats rounded: see ``lava_current``)."""
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


def _run_arrays(p, t0, currents, weight_exp, state, spikes, spikes_f, trace, steps):
    if 2 in (p.overflow_d, p.overflow_s):
        _widen(state)  # a wrap may leave 32 bits on inputs the int32 bounds do not cover
    mu_d, mu_s, lam_d, lam_s, bias_d, bias_s = _factor_rows(p, state.v_d)
    counts = []
    for s in range(steps):
        k = min(t0 + s, p.rows - 1)
        a = _lava_current(currents[min(s, currents.shape[0] - 1)], weight_exp)
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
        _record_step(state, s, spk, spk, v_d, m, spikes, spikes_f, trace, counts)
    return _step_totals(counts, state.v_d)


def _record_step(state, s, spk, sent, v_d, v_s, spikes, spikes_f, trace, counts) -> None:
    """Book step ``s``: ``sent`` (the neurons that sent a message; ``spk`` itself for binary
    spikes) into the state's counters, ``spk`` into the outputs, the states into ``trace``."""
    state.fired |= sent
    state.neuron_spikes += sent.sum(0)
    spikes[s] = spk
    if spikes_f is not None:
        spikes_f[s] = spk
    if trace is not None:
        trace[0][s] = v_d
        trace[1][s] = v_s
    counts.append(spk.sum())


def _step_totals(counts: list, like):
    """The per-step spike totals as one int64 array (a tensor when the states are)."""
    if _is_torch(like):
        import torch

        return torch.stack(counts)  # sums of bool or int tensors: int64 already
    return np.asarray(counts, np.int64)


def _run_semantics(p, t0, currents, weight_exp, state, spikes, spikes_f, trace, steps):
    """A layer with graded spikes (``max_spikes > 1``) or a soma floor (``v_s_min``): the
    reference step :func:`lmh_deploy.semantics.integer.lmh_step` itself, one step at a time (no
    fast copy of these rules exists); ``spikes`` receive the counts, the returned per-step totals
    count every spike, ``neuron_spikes`` the messages (a graded spike is one synaptic event)."""
    from lmh_deploy.semantics.integer import lmh_step

    _widen(state)
    fixed = p.fixed_params()
    if _is_torch(state.v_d):
        import torch

        fixed = replace(
            fixed,
            **{
                k: torch.as_tensor(np.array(getattr(fixed, k)), device=state.v_d.device)
                for k in ("mu_d", "mu_s", "lam_d", "lam_s", "bias")
            },
        )
    counts = []
    for s in range(steps):
        a = _lava_current(currents[min(s, currents.shape[0] - 1)], weight_exp)
        v_d, v_s, spk, events = lmh_step(fixed, t0 + s, state.v_d, state.v_s, a, state.s_prev)
        state.v_d, state.v_s = v_d, v_s
        state.saturation += events
        sent = spk > 0  # one graded message per neuron that fires: the synaptic events
        state.s_prev[...] = sent  # read by a delayed (next-step) reset only
        _record_step(state, s, spk, sent, v_d, v_s, spikes, spikes_f, trace, counts)
    return _step_totals(counts, state.v_d)


# --------------------------------------------------------------------------- numba kernel
def _state_dtype(p: NeuronParams):
    """int32 where the fused kernel's bounds prove every state value fits, else int64."""
    if numba is None:
        return np.int64
    return layer_form(p).state_dtype


_FORMS: dict[int, tuple[NeuronParams, Any]] = {}


def layer_form(p: NeuronParams):
    """``p``'s :class:`~lmh_deploy.sim.fused.KernelForm`, prepared once per layer."""
    cached = _FORMS.get(id(p))
    if cached is None or cached[0] is not p:
        from lmh_deploy.sim.fused import kernel_form

        if len(_FORMS) >= 256:
            _FORMS.pop(next(iter(_FORMS)))
        cached = _FORMS[id(p)] = (p, kernel_form(p))  # holds p: the id stays unique
    return cached[1]


def int32_input_limit(p: NeuronParams, weight_exp: int | None) -> int:
    """Largest ``|raw current|`` (synaptic sums of a path with ``weight_exp``, or ``a_in``
    for None) that the int32 kernel takes exactly for layer ``p``; -1 where ``p`` is not
    int32-safe at all (:func:`lmh_deploy.sim.fused.kernel_form`)."""
    from lmh_deploy.sim import fused

    return fused.raw_limit(layer_form(p), fused.input_shifts(weight_exp, p.input_shift)[1])


def _run_compiled(p, t0, currents, weight_exp, state, spikes, spikes_f, trace, steps, peak, keep_states):
    from lmh_deploy.sim import fused

    form = layer_form(p)
    right, left = fused.input_shifts(weight_exp, p.input_shift)
    limit = int32_input_limit(p, weight_exp)
    # a layer that is not int32-safe has limit -1, which no peak (a magnitude) is below
    use32 = state.v_d.dtype == np.int32 and (peak is not None and peak <= limit or _peak(currents) <= limit)
    if not use32:  # the kernel computes in the states' type: int64 from now on (a wrap on
        _widen(state)  # inputs beyond the int32 bounds may leave even 32 bits)
    rules, rule_codes = rule_set(p)
    write_f, write_tr = spikes_f is not None, trace is not None
    before = (currents, steps, right, left, t0, form.factors, form.bias_d, form.bias_s)
    before += (p.theta, p.reset_value, rule_codes, state.v_d, state.v_s, state.s_prev, state.fired)
    after = (
        spikes,
        _EMPTY_F if spikes_f is None else spikes_f,
        _EMPTY_I if trace is None else trace[0],
        _EMPTY_I if trace is None else trace[1],
    )
    if state.start is None:
        start = (form.bias_d, form.bias_s, False, keep_states)  # placeholders: not read
    else:  # the kernel writes each row's initial values in its first step
        start = (
            *(
                np.ascontiguousarray(np.broadcast_to(np.asarray(v, state.v_d.dtype), p.size))
                for v in state.start
            ),
            True,
            keep_states,
        )
        state.start = None
    parts = row_ranges(state.v_d.shape[0], steps * p.size, sim_threads())
    kernel = fused.compiled_starting(rules, write_f, write_tr, form.uniform)

    def rows(lo: int, hi: int, counts: np.ndarray, neuron_spikes: np.ndarray, active: np.ndarray) -> int:
        """Rows ``lo:hi`` (every argument given: numba's fast dispatch; an omitted default
        takes its slow path, ~1 ms a call); their saturation count. Where a row went out of
        range, it and the rows after it run again with the counting kernel."""
        done = kernel(*before, neuron_spikes, *after, counts, lo, hi, *start, active)
        if done == hi:
            return 0
        more = np.zeros(steps, np.int64)
        counting = fused.counting_starting(rules, write_f, write_tr, form.uniform)
        sat = counting(*before, neuron_spikes, *after, more, done, hi, *start, active)
        counts += more
        return sat

    if len(parts) == 1:
        counts, active = np.zeros(steps, np.int64), np.zeros(1, np.int64)
        sat = rows(0, state.v_d.shape[0], counts, state.neuron_spikes, active)
    else:  # disjoint batch rows in threads (the kernel releases the GIL); bits unchanged

        def run(lo: int, hi: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
            own_counts, own_spikes = np.zeros(steps, np.int64), np.zeros(p.size, np.int64)
            own_active = np.zeros(1, np.int64)
            return rows(lo, hi, own_counts, own_spikes, own_active), own_counts, own_spikes, own_active

        done = run_in_threads(run, parts, work=state.v_d.shape[0] * steps * p.size)
        sat = sum(d[0] for d in done)
        counts = np.sum([d[1] for d in done], axis=0)
        state.neuron_spikes += np.sum([d[2] for d in done], axis=0)
        active = np.sum([d[3] for d in done], axis=0)
    state.saturation += int(sat)
    if not keep_states:
        state.active = int(active[0])
    return counts


#: Neuron-steps of one batch row below which a chunk's rows are not split over threads
#: (a thread hand-off costs some 10-50 us; the kernel takes about 1-2 ns a neuron-step)
MIN_THREAD_WORK = 1 << 16


_POOL: list[tuple[int, ThreadPoolExecutor]] = []  # (workers, pool): one pool, grown on demand
_IN_PARTS = threading.local()  # .active: this thread runs a part of a run_in_threads call


def sim_threads() -> int:
    """Threads the neuron kernel may use: numba's thread count (``numba.set_num_threads``,
    default ``NUMBA_NUM_THREADS``, every CPU); the dense chain of :mod:`lmh_deploy.sim.chain`
    splits its mini-batch by it too.

    Read without starting numba's threading layer (sim/ runs its own Python threads, never a
    numba parallel loop): ``numba.get_num_threads()`` would start it, and starting it fixes
    the multiprocessing start method, after which importing Lava (``mp.set_start_method``)
    fails, e.g. a ``verify`` that runs sim/ before Lava in one process."""
    if numba is None or getattr(_IN_PARTS, "active", False):
        return 1  # a part of a split run (a batch shard, a layer's rows) runs on one thread
    from numba.np.ufunc import parallel

    if parallel._is_initialized:  # someone set (or read) the count: the layer runs already
        return int(numba.get_num_threads())
    return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]


@contextmanager
def one_thread_shard() -> Iterator[None]:
    """This thread runs one shard of a run split over threads (the simulator's batch
    shards, each a part of :func:`run_in_threads`, so sim/'s own code sees one thread:
    :func:`sim_threads`): torch's intra-op loops and oneDNN here get one thread too
    (``torch.set_num_threads`` sets the calling thread's OpenMP count, and the count new
    threads start with; the caller of the shards restores its own afterwards:
    :func:`restore_torch_threads`)."""
    torch = sys.modules.get("torch")  # sim/ imports torch only for paths that use it
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    yield


@contextmanager
def restore_torch_threads() -> Iterator[None]:
    """torch's thread count of this thread put back after the block (shards set theirs to
    one: :func:`one_thread_shard`)."""
    torch = sys.modules.get("torch")  # not imported yet: no shard sets its threads either
    saved = None if torch is None else torch.get_num_threads()
    try:
        yield
    finally:
        if saved is not None and torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


def row_ranges(batch: int, row_work: int, threads: int) -> list[tuple[int, int]]:
    """``batch`` rows cut into at most ``threads`` contiguous ranges of near-equal size, each
    with at least :data:`MIN_THREAD_WORK` neuron-steps (one range: no threads)."""
    return contiguous_ranges(batch, max(1, min(threads, batch, batch * row_work // MIN_THREAD_WORK)))


def contiguous_ranges(batch: int, parts: int) -> list[tuple[int, int]]:
    """``batch`` rows cut into ``parts`` contiguous ``(lo, hi)`` ranges of near-equal size."""
    bounds = [batch * k // parts for k in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def run_in_threads(
    fn, parts: list[tuple[int, int]], *, work: float | None = None, omp_team: bool = True
) -> list:
    """``fn(lo, hi)`` for every range, the first in this thread, the others on other threads
    (the compiled kernels release the GIL: they run on separate cores); results in order.

    The other threads are torch's OpenMP team where :func:`lmh_deploy.sim.omp_team.team`
    allows it, or a pool of Python threads. On an idle machine the team is faster (its
    workers spin idle after every torch op, sharing the cores with any thread of ours:
    VGG-13's neuron kernels at 2 threads, bench/sim_vs_float.py's row, took 15-17 ms on the
    team and 19-24 ms on Python threads); on a loaded one (more busy threads than cores) its
    spinning barrier costs more than it saves (the same run 250 ms against 163 ms). A small
    split may cost more to hand off than it saves: all parts in this thread, one after the
    other, is the third way (bench/sim_vs_float.py's VGG-13 at two threads, alternated in one
    process: its neuron layers of 2,048 and 4,096 neurons took 0.50 and 0.68 ms a call with
    the team and the pool to choose from, 0.40 and 0.55 ms with this way too; the run 71.9
    against 68.0 ms). So each function (its code) measures the ways for each size of
    ``work`` (the parts' rows where not given) and takes the cheapest
    (:class:`~lmh_deploy.sim.way_costs.WayCosts`): the team from the first call, one thread
    first on the 8th and 12th calls, the pool on the 16th and 20th
    (:data:`DISPATCH_RETIMES`; without the team: the pool, then one thread).
    ``omp_team=False``: the pool only (parts that run torch ops themselves, as the
    simulator's batch shards do).

    A call made from inside a part (a batch shard whose layer splits its rows again) runs
    its parts one after the other in its own thread: submitting them to the pool whose
    workers all wait for such calls would deadlock."""
    if len(parts) == 1 or getattr(_IN_PARTS, "active", False):
        return [fn(*part) for part in parts]
    marked = _marked_part(fn)
    if not omp_team:
        return _run_in_pool(marked, parts)
    runtime = team()
    units = parts[-1][1] - parts[0][0] if work is None else work
    # one closure's code serves every layer: each layer size learns its own choice (a small
    # layer's split is mostly dispatch, a large one's mostly kernel)
    site = (getattr(fn, "__code__", fn), units, len(parts), runtime is None)
    costs = _DISPATCH.get(site)
    if costs is None:
        if len(_DISPATCH) >= 1024:
            _DISPATCH.pop(next(iter(_DISPATCH)))
        # the other ways first tried on the site's 8th call, not its 2nd: they win only for
        # small work or on a loaded machine, and the parts' caller may be a synapse way
        # timing its first calls (a conv path's event gather); without the team, the pool first
        order = ["team", "one thread", "threads"] if runtime is not None else ["threads", "one thread"]
        prior = {way: float(rank) for rank, way in enumerate(order, 1)}
        costs = _DISPATCH[site] = WayCosts(prior, eager=False, early=DISPATCH_RETIMES)
    way = costs.choose(dict.fromkeys(costs.ways, units))
    start = time.perf_counter()
    if way == "team":
        results = run_on_team(runtime, marked, parts)
    elif way == "threads":
        results = _run_in_pool(marked, parts)
    else:
        results = [marked(*part) for part in parts]
    costs.record(way, units, time.perf_counter() - start)
    return results


#: per function split over threads (its code object), work, part count and whether the team
#: was there: the measured costs of torch's OpenMP team, one thread and the Python threads
#: (:func:`run_in_threads`)
_DISPATCH: dict[Any, WayCosts] = {}
#: the calls of a site that try (a way's first use is not timed) or time again the ways not
#: taken, before every 64th: each of the three timed within a run's first 20 calls
DISPATCH_RETIMES = (8, 12, 16, 20, 32)


def _run_in_pool(fn, parts: list[tuple[int, int]]) -> list:
    """:func:`run_in_threads`' parts on a pool of Python threads (``len(parts) - 1`` workers,
    kept; replaced by a larger one when more are needed), the first part in this thread."""
    if not _POOL or _POOL[0][0] < len(parts) - 1:
        if _POOL:
            _POOL.pop()[1].shutdown()
        _POOL.append((len(parts) - 1, ThreadPoolExecutor(len(parts) - 1, thread_name_prefix="lmh-sim")))
    futures = [_POOL[0][1].submit(fn, lo, hi) for lo, hi in parts[1:]]
    try:
        first = fn(*parts[0])
    finally:  # none left running past the call, even where this thread's part failed
        wait(futures)
    return [first] + [f.result() for f in futures]


def _marked_part(fn):
    """``fn`` run with this thread marked as running a part (:func:`run_in_threads`)."""

    def part(lo: int, hi: int):
        _IN_PARTS.active = True
        try:
            return fn(lo, hi)
        finally:
            _IN_PARTS.active = False

    return part


def _widen(state: NeuronState) -> None:
    if isinstance(state.v_d, np.ndarray) and state.v_d.dtype != np.int64:
        state.v_d, state.v_s = state.v_d.astype(np.int64), state.v_s.astype(np.int64)


def _peak(currents: np.ndarray) -> float:
    """``max |currents|`` (0 for none)."""
    if currents.size == 0:
        return 0.0
    return max(float(currents.max()), -float(currents.min()))


#: Placeholders for the kernel outputs a call does not write (empty: nothing to write).
_EMPTY_F = np.zeros((1, 1, 0), np.float32)
_EMPTY_I = np.zeros((1, 1, 0), np.int64)
_RULES: dict[tuple[int, ...], np.ndarray] = {}


def rule_set(p: NeuronParams) -> tuple[tuple[int, ...], np.ndarray]:
    """``p``'s rule codes as a tuple and as the int64 array the kernel takes (one per set)."""
    rules = _rules_of(p)
    if rules not in _RULES:
        _RULES[rules] = np.asarray(rules, np.int64)
    return rules, _RULES[rules]


def _rules_of(p: NeuronParams) -> tuple[int, ...]:
    return (p.rounding, p.overflow_d, p.overflow_s, int(p.threshold_gt), int(p.reset_set), int(p.next_step))
