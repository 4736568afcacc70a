"""The vectorised fused kernel (sim/fused.py) bit for bit, on the paths its bounds choose.

Its int32 arithmetic is only exact inside bounds that :func:`kernel_form` derives; these
tests drive it AT those bounds (states at the 24-bit edges, currents at the largest value
the int32 path accepts) and beyond them (the int64 path), for every rule set, scaled and
unscaled currents of every dtype the simulator hands it, static (one row for every step)
and per-step currents, against the shared design's integer step in Python ints and
against the array code.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lmh_deploy.sim import fused
from lmh_deploy.sim import neuron as N
from lmh_deploy.sim.params import NeuronParams, neuron_params

from lmh_deploy.ir import QLMH

# the reference step and layer strategy of test_sim_kernels (pytest's importlib mode does not
# put tests/ on the path)
_spec = importlib.util.spec_from_file_location(
    "_sim_kernel_tests", Path(__file__).with_name("test_sim_kernels.py")
)
_kernel_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_kernel_tests)
LIMIT, neuron_layers, python_step = (
    _kernel_tests.LIMIT,
    _kernel_tests.neuron_layers,
    _kernel_tests.python_step,
)

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
EDGES = [-LIMIT, -LIMIT + 1, -4097, -4096, -1, 0, 1, 4095, 4096, LIMIT - 1, LIMIT]


def lava_shift(c: int, weight_exp: int | None) -> int:
    """``shift(2 c, weight_exp)`` (floor for a negative exponent); the raw input otherwise."""
    if weight_exp is None:
        return c
    return (2 * c) << weight_exp if weight_exp >= 0 else (2 * c) >> -weight_exp


def expected(
    p: NeuronParams,
    currents: np.ndarray,
    steps: int,
    weight_exp: int | None,
    v_d0: np.ndarray,
    v_s0: np.ndarray,
):
    """Spikes, traces and saturation count from :func:`python_step`, element by element."""
    _, batch, n = currents.shape
    spikes = np.zeros((steps, batch, n), bool)
    tr_d, tr_s = np.zeros((steps, batch, n), np.int64), np.zeros((steps, batch, n), np.int64)
    sat = 0
    for b in range(batch):
        for i in range(n):
            v_d, v_s, prev = int(v_d0[b, i]), int(v_s0[b, i]), False
            for t in range(steps):
                c = int(currents[min(t, currents.shape[0] - 1), b, i])
                v_d, v_s, prev, spike, events = python_step(
                    p, t, v_d, v_s, prev, lava_shift(c, weight_exp), i
                )
                spikes[t, b, i], tr_d[t, b, i], tr_s[t, b, i] = spike, v_d, v_s
                sat += events
    return spikes, tr_d, tr_s, sat


def run(p: NeuronParams, currents, steps: int, weight_exp, v_d0, v_s0, peak, arrays: bool):
    state = N.initial_state(p, currents.shape[1])
    state.v_d[...], state.v_s[...] = v_d0, v_s0
    shape = (steps,) + currents.shape[1:]
    spikes = np.zeros(shape, bool)
    trace = (np.zeros(shape, np.int64), np.zeros(shape, np.int64))
    if arrays:
        with N.array_code_only():
            counts = N.run_neuron_chunk(
                p, 0, currents, weight_exp, state, spikes, trace=trace, steps=steps, peak=peak
            )
    else:
        counts = N.run_neuron_chunk(
            p, 0, currents, weight_exp, state, spikes, trace=trace, steps=steps, peak=peak
        )
    return state, spikes, trace, counts


@st.composite
def edge_layers(draw):
    """Random layers (any rules, profiles' shifts, K rows) starting at the 24-bit edges."""
    p = draw(neuron_layers())
    return p, draw(st.sampled_from(EDGES)), draw(st.sampled_from(EDGES))


@SETTINGS
@given(
    layer=edge_layers(),
    steps=st.integers(1, 5),
    batch=st.integers(1, 3),
    weight_exp=st.one_of(st.none(), st.integers(-8, 6)),
    dtype=st.sampled_from([np.float32, np.int32, np.int64]),
    where=st.sampled_from(["limit", "small", "beyond"]),
    static=st.booleans(),
    known_peak=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_fused_kernel_equals_the_integer_step_at_and_beyond_its_bounds(
    layer, steps, batch, weight_exp, dtype, where, static, known_peak, seed
) -> None:
    """ "limit": currents of exactly +-(the largest magnitude the int32 path takes), so any
    slack missing from the bounds overflows int32 and shows; "beyond": the int64 path."""
    p, v_d_edge, v_s_edge = layer
    rng = np.random.default_rng(seed)
    form = N.layer_form(p)
    left = fused.input_shifts(weight_exp, p.input_shift)[1]
    limit = fused.raw_limit(form, left)
    cap = 2**24 if dtype is np.float32 else 2**30  # float32 holds integers below 2**24
    cap = min(cap, 2**40 >> left)  # wrapped states stay small enough for int64 products
    top = {"limit": max(limit, 0), "small": 3000, "beyond": 2 * max(limit, 1) + 5}[where]
    top = min(top, cap)
    currents = rng.choice([-top, top, 0, 1, -1], (1 if static else steps, batch, p.size))
    currents.flat[0] = top * rng.choice([-1, 1])  # the bound itself, at least once
    currents = currents.astype(dtype)
    v_d0 = np.full((batch, p.size), v_d_edge)
    v_s0 = np.full((batch, p.size), v_s_edge)
    if batch > 1:  # one sample from random in-range states
        v_d0[-1], v_s0[-1] = rng.integers(-LIMIT, LIMIT + 1, (2, p.size))
    want = expected(p, currents.astype(np.int64), steps, weight_exp, v_d0, v_s0)
    peak = float(top) if known_peak else None
    for arrays in (False, True):
        state, spikes, trace, counts = run(p, currents, steps, weight_exp, v_d0, v_s0, peak, arrays)
        assert np.array_equal(spikes, want[0]), arrays
        assert np.array_equal(trace[0], want[1]) and np.array_equal(trace[1], want[2]), arrays
        assert np.array_equal(state.v_d, want[1][-1]), arrays
        assert np.array_equal(state.v_s, want[2][-1]), arrays
        assert state.saturation == want[3], arrays
        assert np.array_equal(counts, want[0].sum((1, 2))), arrays
        assert np.array_equal(state.neuron_spikes, want[0].sum((0, 1))), arrays
        assert np.array_equal(state.fired, want[0].any(0)), arrays
        if not arrays and form.int32_ok and top <= limit:
            assert state.v_d.dtype == np.int32  # the int32 path ran (it was entitled to)
        if not arrays and top > limit:
            assert state.v_d.dtype == np.int64  # the int64 path ran


def _layer(profile: str, **rules) -> NeuronParams:
    n = 6
    if profile == "lmh":
        kw = dict(mu_d=[[-819]], mu_s=[[410]], lam_d=[[4915]], lam_s=[[3277]], bias=[0] * n)
    else:  # Lava CUBA-LIF: du = 0.1, dv = 0.05 (4096 - d)
        kw = dict(
            mu_d=[[3686]],
            mu_s=[[0]],
            lam_d=[[4096]],
            lam_s=[[3891]],
            bias=[64 * 50] * n,
            reset="set",
            threshold_test=">",
            v_s_init=0,
        )
    kw.update(rules)
    theta = 6400 if profile == "lmh" else 64 * 1000
    return neuron_params(QLMH(size=n, theta=theta, state_scale=1.0, profile=profile, **kw))


@pytest.mark.parametrize("profile", ["lmh", "loihi-lif"])
def test_deployed_layers_run_the_specialised_int32_kernel(profile: str) -> None:
    """What compiled networks hand the kernel (float32 BLAS sums, int32 gather sums, a
    weight exponent) takes the int32 path of a kernel specialised to the profile's rules,
    and matches the array code bit for bit."""
    p = _layer(profile)
    assert N._rules_of(p) in fused.SPECIALISED_RULES and N.layer_form(p).int32_ok
    rng = np.random.default_rng(3)
    for dtype, weight_exp in ((np.float32, -2), (np.int32, 4)):
        currents = rng.integers(-2000, 6000, (4, 5, p.size)).astype(dtype)
        got = run(
            p,
            currents,
            4,
            weight_exp,
            np.zeros((5, p.size)),
            np.zeros((5, p.size)),
            127.0 * 100,
            arrays=False,
        )
        want = run(
            p, currents, 4, weight_exp, np.zeros((5, p.size)), np.zeros((5, p.size)), None, arrays=True
        )
        assert got[0].v_d.dtype == np.int32
        assert got[1].any() and not got[1].all()  # spiking, not saturated
        for a, b in (
            (got[1], want[1]),
            (got[2][0], want[2][0]),
            (got[2][1], want[2][1]),
            (got[0].v_s, want[0].v_s),
        ):
            assert np.array_equal(a, b)


def test_layers_beyond_the_int32_bounds_keep_int64_states() -> None:
    """A factor, bias or reset value too large for the int32 proof: int64 from the start."""
    base = _layer("lmh")
    assert N.initial_state(base, 2).v_d.dtype == np.int32
    for change in (
        dict(bias_d=np.full(base.size, 2**30)),
        dict(reset_value=LIMIT + 1),
        dict(mu_d=np.full((1, base.size), 9000)),
    ):
        p = NeuronParams(**{**base.__dict__, **change})
        form = fused.kernel_form(p)
        assert not form.int32_ok and form.input_limit == -1
        assert fused.raw_limit(form, 0) == fused.raw_limit(form, 40) == -1  # any shift
        assert N.initial_state(p, 2).v_d.dtype == np.int64
        # the kernel then takes int64 factors and biases too (a bias past 2**31 stays whole)
        assert form.factors.dtype == form.bias_d.dtype == form.bias_s.dtype == np.int64


def test_currents_exactly_at_the_int32_limit_stay_int32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The int32 path takes ``|a| <= limit``: currents exactly at the layer's raw limit keep
    int32 states (one more: int64), equal to the integer step; a known peak exactly at the
    limit is enough (the currents are then not measured)."""
    p = _layer("lmh")
    limit = N.int32_input_limit(p, None)
    assert limit == 2**30  # the cap (lmh: no input shift)
    zero = np.zeros((1, p.size), np.int64)
    for top, dtype in ((limit, np.int32), (limit + 1, np.int64)):
        currents = np.zeros((2, 1, p.size), np.int64)
        currents[0, 0, :2] = top, -top
        want = expected(p, currents, 2, None, zero, zero)
        state, spikes, trace, _ = run(p, currents, 2, None, zero, zero, None, False)
        assert state.v_d.dtype == dtype, top
        assert np.array_equal(spikes, want[0]) and np.array_equal(trace[1], want[2]), top

    def unmeasured(currents):
        raise AssertionError("currents measured, though their known peak is within the limit")

    monkeypatch.setattr(N, "_peak", unmeasured)
    state = run(p, currents * 0 + limit, 2, None, zero, zero, limit, False)[0]
    assert state.v_d.dtype == np.int32


def test_a_lone_or_negative_current_past_the_int32_bound_runs_int64() -> None:
    """The int32 path is chosen from ``max |currents|``: a single current (one step, sample and
    neuron) and a current whose magnitude is only in its minimum, -(2**33 + 5) (its low 32
    bits read -5), must both send the layer to int64 states, which saturate at -2**23."""
    base = _layer("lmh")
    p = NeuronParams(**{k: v[..., :1] if isinstance(v, np.ndarray) else v for k, v in base.__dict__.items()})
    zero = np.zeros((1, 1), np.int64)
    for currents in (np.array([[[-(2**33) - 5]]]), np.array([[[-(2**33) - 5]], [[7]]])):
        steps = len(currents)
        assert 0 <= fused.raw_limit(N.layer_form(p), 0) < 2**31
        want = expected(p, currents, steps, None, zero, zero)
        state, spikes, trace, _ = run(p, currents, steps, None, zero, zero, None, False)
        assert state.v_d.dtype == np.int64 and trace[0][0, 0, 0] == -LIMIT
        assert np.array_equal(spikes, want[0])
        assert np.array_equal(trace[0], want[1]) and np.array_equal(trace[1], want[2])
        assert state.saturation == want[3]


def test_shifted_current_is_one_shift_each_way() -> None:
    """``shift(2 a, e) << s == (a >> r) << l`` for every exponent and sign."""
    for e in range(-8, 16):
        for s in (0, 6):
            r, left = fused.input_shifts(e, s)
            for a in (-1001, -3, -1, 0, 1, 2, 3, 1001):
                assert (lava_shift(a, e) << s) == ((a >> r) << left), (a, e, s)
    assert fused.input_shifts(None, 6) == (0, 6)


@pytest.mark.parametrize("overflow_d", [0, 2])
@pytest.mark.parametrize("input_shift", [0, 6])
def test_int32_path_is_exact_at_its_input_bound(overflow_d: int, input_shift: int) -> None:
    """Currents of exactly +-(the int32 path's bound) for every shift, states at the edges:
    the int32 path runs and equals the integer step (a looser bound overflows int32 here)."""
    n = len(EDGES)
    base = _layer("lmh")
    rows = lambda v: np.full((1, n), v)
    p = NeuronParams(
        **{
            **base.__dict__,
            "mu_d": rows(-2048),
            "mu_s": rows(4096),
            "lam_d": rows(6143),
            "lam_s": rows(6143),
            "bias_d": np.full(n, -999),
            "bias_s": np.full(n, 777),
            "input_shift": input_shift,
            "overflow_d": overflow_d,
        }
    )
    v_d0 = np.array([EDGES, EDGES[::-1]])
    v_s0 = np.array([EDGES[::-1], EDGES])
    for weight_exp in (None, -8, -2, -1, 0, 3, 15):
        left = fused.input_shifts(weight_exp, input_shift)[1]
        limit = fused.raw_limit(N.layer_form(p), left)
        assert limit >= 0
        currents = np.array([[[limit, -limit] * (n // 2) + [limit]] * 2] * 2, np.int64)
        want = expected(p, currents, 2, weight_exp, v_d0, v_s0)
        state, spikes, trace, _ = run(p, currents, 2, weight_exp, v_d0, v_s0, None, False)
        assert state.v_d.dtype == np.int32, weight_exp
        assert np.array_equal(spikes, want[0]), weight_exp
        assert np.array_equal(trace[0], want[1]) and np.array_equal(trace[1], want[2]), weight_exp
        assert state.saturation == want[3], weight_exp


def _worst_case(p: NeuronParams, a_max: int) -> tuple[int, int, int]:
    """Over extreme states (+-2**23, the most a 24-bit state holds after a wrap) and inputs
    (+-a_max), by enumeration in Python ints: the largest |sum| the kernel forms in the
    state's type (either state's sum, and ``a + bias_d``), and the largest |v_d|, |v_s| left
    after the layer's overflow handling (saturation or one wrap)."""
    lim = 1 << 23

    def handled(x: int, mode: int) -> int:
        if mode == 2:  # one wrap, as Lava LIF and the kernel do
            return x - 2 * lim if x > lim else x + 2 * lim if x <= -lim else x
        return min(max(x, -lim), lim - 1)

    top = {"sum": 0, "v_d": 0, "v_s": 0}
    states = (-lim, lim)
    for k in range(p.rows):
        for i in range(p.size):
            f = [int(rows[k, i]) for rows in (p.mu_d, p.mu_s, p.lam_d, p.lam_s)]
            rnd = lambda g, v: (g * v + 2048) >> 12  # f * 2**23 is a multiple of 4096: exact
            for v_d, v_s, a, prev in itertools.product(states, states, (-a_max, a_max), (0, 1)):
                part = a + int(p.bias_d[i])
                x = rnd(f[0], v_d) + rnd(f[1], v_s) + part
                x_new = handled(x, p.overflow_d)
                for v in (x_new, -lim, lim):  # the soma sees the handled v_d (or any 24-bit one)
                    delayed = p.theta if p.next_step and not p.reset_set and prev else 0
                    m = rnd(f[3], v_s) + rnd(f[2], v) + int(p.bias_s[i]) - delayed
                    top["sum"] = max(top["sum"], abs(part), abs(x), abs(m))
                    top["v_s"] = max(top["v_s"], abs(handled(m, p.overflow_s)))
                top["v_d"] = max(top["v_d"], abs(x_new))
    return top["sum"], top["v_d"], top["v_s"]


def _margin_layer(overflow_d: int, overflow_s: int, soma_factors: int, **change) -> NeuronParams:
    """Two neurons, two factor rows: the largest factors sit in neuron 1's second row (so a
    bound must take the maximum over both), mu_d and mu_s of opposite signs."""
    rows = lambda small, big: np.array([[small, small], [small, big]])
    lam_d = soma_factors // 3
    base = dict(
        mu_d=rows(5, -4000),
        mu_s=rows(-7, 3000),
        lam_d=rows(9, lam_d),
        lam_s=rows(11, soma_factors - lam_d),
        bias_d=np.array([1, -70_000]),
        bias_s=np.array([3, -90_000]),
        theta=1 << 20,
        reset_value=0,
        v_d_init=0,
        v_s_init=0,
        input_shift=0,
        rounding=0,
        overflow_d=overflow_d,
        overflow_s=overflow_s,
        threshold_gt=False,
        reset_set=False,
        next_step=True,
    )
    return NeuronParams(**{**base, **change})


@pytest.mark.parametrize("overflow_d", [0, 1, 2])
@pytest.mark.parametrize("overflow_s", [0, 2])
@pytest.mark.parametrize("next_step, reset_set", [(True, False), (True, True), (False, False)])
def test_int32_bounds_are_sound_and_tight_at_their_margins(overflow_d, overflow_s, next_step, reset_set):
    """kernel_form's int32 verdict and input bound against the worst case by enumeration:
    at the bound every sum fits int32 and every state stays within 24 bits (the int32
    kernel's premise); where a wrap makes a margin exact, a little beyond it (the bound's
    slack of 2 from rounding, plus 1) breaks that. So a bound off by a term, a sign, an
    index or a comparison is caught: it lets the int32 path take what it cannot hold, or
    sends layers it could hold to int64."""
    lim = 1 << 23
    theta = 1 << 20
    delayed = theta if next_step and not reset_set else 0  # the next-step subtraction
    for soma_factors in (11_000, 11_500):
        p = _margin_layer(
            overflow_d, overflow_s, soma_factors, theta=theta, next_step=next_step, reset_set=reset_set
        )
        if soma_factors == 11_500:  # the soma's bound exactly 3 * 2**23: the most one wrap brings back
            bias = 3 * lim - 2 - soma_factors * 2048 - delayed
            p = NeuronParams(**{**p.__dict__, "bias_s": np.array([3, -bias])})
        for over_by in (0, 1, 3) if soma_factors == 11_500 else (0,):
            q = NeuronParams(**{**p.__dict__, "bias_s": p.bias_s - [0, over_by]})
            form = fused.kernel_form(q)
            if overflow_s == 2 and over_by:
                assert not form.int32_ok, over_by  # beyond the margin: int64 states
                if over_by == 3:  # and rightly so: one wrap is not enough
                    assert _worst_case(q, 0)[2] > lim
                continue
            assert form.int32_ok, (soma_factors, over_by)
            assert N.layer_form(q).state_dtype == np.int32
            limit = fused.raw_limit(form, 0)
            biggest, v_d, v_s = _worst_case(q, limit)
            assert biggest < 2**31 and v_d <= lim and v_s <= lim, (limit, biggest, v_d, v_s)
            if overflow_d == 2:  # an exact margin: 3 more break the dendrite's wrap
                assert _worst_case(q, limit + 3)[1] > lim
            else:  # saturation: the cap of 2**30 is the bound
                assert limit == 1 << 30
    # dendrite factors whose worst case alone passes 3 * 2**23: no int32 under a wrap
    q = NeuronParams(**{**p.__dict__, "mu_d": p.mu_d * 2, "mu_s": p.mu_s * 2})
    assert fused.kernel_form(q).int32_ok == (overflow_d != 2)
    if overflow_d == 2:
        assert _worst_case(q, 0)[1] > lim


def test_shifts_of_31_or_more_leave_no_int32_input() -> None:
    """A weight exponent of 30 or more shifts a raw current of 1 to 2**31 or beyond: the int32
    path takes no input then (raw limit 0), and +-1 runs in int64, equal to the step."""
    p = _layer("lmh")
    form = N.layer_form(p)
    assert p.input_shift == 0 and form.input_limit == 2**30
    for weight_exp in (29, 30, 31):
        left = fused.input_shifts(weight_exp, p.input_shift)[1]
        # the input limit is 2**30 (its cap): 1 from a left shift of 30, 0 from 31 on
        assert fused.raw_limit(form, left) == (1 if left == 30 else 0), left
        currents = np.array([[[1, -1, 0, 1, -1, 0]]], np.int64)
        zeros = np.zeros((1, p.size), np.int64)
        want = expected(p, currents, 2, weight_exp, zeros, zeros)
        state, spikes, trace, _ = run(p, currents, 2, weight_exp, zeros, zeros, None, False)
        assert state.v_d.dtype == (np.int32 if left < 31 else np.int64), weight_exp
        assert np.array_equal(spikes, want[0]) and np.array_equal(trace[0], want[1]), weight_exp
        assert state.saturation == want[3], weight_exp


def test_float_spike_copies_equal_the_spikes() -> None:
    """``spikes_f``: float32 copies of the spikes (for a following float GEMM), written by
    the compiled kernel and the array code alike."""
    p = _layer("lmh")
    currents = np.random.default_rng(4).integers(-2000, 9000, (3, 2, p.size)).astype(np.float32)
    for arrays in (False, True):
        state = N.initial_state(p, 2)
        spikes = np.zeros(currents.shape, bool)
        spikes_f = np.full(currents.shape, -1.0, np.float32)
        with N.array_code_only() if arrays else contextlib.nullcontext():
            N.run_neuron_chunk(p, 0, currents, None, state, spikes, spikes_f)
        assert spikes.any() and not spikes.all(), arrays
        assert np.array_equal(spikes_f, spikes.astype(np.float32)), arrays


def test_kernel_form_bounds_are_inclusive_and_its_arrays_in_the_state_width() -> None:
    """Every premise of the int32 proof at its exact bound still gives the int32 path: a
    factor of +-(2**13 - 1), biases of +-2**29, theta 0 and 2**29, reset value and initial
    states of +-2**23; a saturating dendrite's input limit is then the cap 2**30, and the
    form's factors and biases are int32 (the kernel's width). One past any bound: int64."""
    from dataclasses import replace

    at = NeuronParams(
        mu_d=np.array([[fused.FACTOR_SAFE, -fused.FACTOR_SAFE]]),
        mu_s=np.array([[-fused.FACTOR_SAFE, 0]]),
        lam_d=np.array([[0, fused.FACTOR_SAFE]]),
        lam_s=np.array([[fused.FACTOR_SAFE, 1]]),
        bias_d=np.array([2**29, -(2**29)]),
        bias_s=np.array([-(2**29), 2**29]),
        theta=2**29,
        reset_value=-(2**23),
        v_d_init=2**23,
        v_s_init=-(2**23),
        input_shift=0,
        rounding=0,
        overflow_d=0,
        overflow_s=1,
        threshold_gt=False,
        reset_set=False,
        next_step=False,
    )
    assert fused.FACTOR_SAFE == 2**13 - 1 and fused.INT32_SAFE == 2**29 and fused.STATE_LIMIT == 2**23
    for p in (at, replace(at, theta=0)):
        form = fused.kernel_form(p)
        assert form.int32_ok and form.input_limit == 2**30 and form.state_dtype == np.int32
        assert form.factors.dtype == form.bias_d.dtype == form.bias_s.dtype == np.int32
        assert form.factors.tolist() == [p.mu_d.tolist(), p.mu_s.tolist(), p.lam_d.tolist(), p.lam_s.tolist()]
        assert form.bias_d.tolist() == p.bias_d.tolist() and form.bias_s.tolist() == p.bias_s.tolist()
    past = [dict(theta=2**29 + 1), dict(theta=-1)]
    past += [{k: np.array([[2**13, 0]])} for k in ("mu_d", "mu_s", "lam_d", "lam_s")]
    past += [{k: np.array([0, -(2**29) - 1])} for k in ("bias_d", "bias_s")]
    past += [{k: v} for k in ("reset_value", "v_d_init", "v_s_init") for v in (2**23 + 1, -(2**23) - 1)]
    for change in past:
        form = fused.kernel_form(replace(at, **change))
        assert not form.int32_ok and form.state_dtype == np.int64, change
        assert form.factors.dtype == form.bias_d.dtype == np.int64 and form.input_limit == -1, change


def test_a_wrapping_dendrite_at_its_margin_takes_only_zero_currents_in_int32() -> None:
    """No factors, a wrapping dendrite: its worst case is ``2 + bias_d`` (the bound's rounding
    slack, the bias); at ``bias_d = 3 * 2**23 - 2`` that is exactly the most one wrap brings
    back, so the int32 path takes only currents of 0 (input limit 0); at 3 * 2**23 - 3, +-1;
    one bias more (3 * 2**23 - 1): int64. The same margin on a wrapping soma, where the
    delayed subtraction of theta adds to the bound: 2 + bias_s + theta <= 3 * 2**23."""
    from dataclasses import replace

    zero = np.zeros((1, 1), np.int64)
    base = NeuronParams(
        mu_d=zero, mu_s=zero, lam_d=zero, lam_s=zero, bias_d=np.array([0]), bias_s=np.array([0]),
        theta=100, reset_value=0, v_d_init=0, v_s_init=0, input_shift=0, rounding=0,
        overflow_d=2, overflow_s=2, threshold_gt=False, reset_set=False, next_step=True,
    )  # fmt: skip
    margin = 3 * 2**23 - 2
    for bias, ok, limit in ((margin - 1, True, 1), (margin, True, 0), (margin + 1, False, -1)):
        form = fused.kernel_form(replace(base, bias_d=np.array([-bias])))
        assert (form.int32_ok, form.input_limit) == (ok, limit), bias
    for bias, ok in ((margin - 100, True), (margin - 99, False)):  # theta 100 (next-step subtract)
        assert fused.kernel_form(replace(base, bias_s=np.array([bias]))).int32_ok == ok, bias
    # the subtraction is in the soma only under a next-step subtract reset
    assert fused.kernel_form(replace(base, bias_s=np.array([margin]), reset_set=True)).int32_ok


def test_the_profiles_rule_sets_get_kernels_of_their_own() -> None:
    """The lmh profile's and Lava LIF's rule sets run kernels compiled with their rules as
    constants (one each); every other set shares the one generic kernel, which reads the
    rules at run time (its ``generic`` flag, a constant of the compiled closure)."""

    def constants(kernel) -> dict:  # the compiled closure's cells (through the wrapper that
        # calls the kernel taking initial states: compiled_starting's)
        cells = dict(zip(kernel.py_func.__code__.co_freevars, kernel.py_func.__closure__, strict=True))
        return constants(cells["starting"].cell_contents) if "starting" in cells else cells

    def generic(kernel) -> bool:
        return constants(kernel)["generic"].cell_contents

    lmh, lif = (0, 0, 0, 0, 0, 0), (1, 2, 1, 1, 1, 0)
    assert {lmh, lif} == fused.SPECIALISED_RULES
    sets = (lmh, lif, (2, 1, 0, 0, 0, 0), (0, 1, 0, 0, 0, 0))
    kernels = [fused.compiled(rules, False, False) for rules in sets]
    assert [generic(k) for k in kernels] == [False, False, True, True]
    assert kernels[2] is kernels[3] and len({id(k) for k in kernels}) == 3
    assert fused.compiled(lmh, True, False) is not kernels[0]  # the spike copies: another kernel
    # factors read once a step (uniform): another kernel per set, the generic one's too
    uniform = [fused.compiled(rules, False, False, True) for rules in sets]
    assert [generic(k) for k in uniform] == [False, False, True, True]
    assert not {id(k) for k in uniform} & {id(k) for k in kernels}
    assert [constants(k)["uniform"].cell_contents for k in uniform] == [True] * 4
    # the layer-wise kernels (compiled_starting's, counting_starting's): the same constants,
    # but for how they treat saturation
    for starting in (fused.compiled_starting, fused.counting_starting):
        kept = [constants(starting(rules, False, False, True)) for rules in sets]
        assert [[c for k, c in d.items() if k not in ("count_saturation", "rerun")] for d in kept] == [
            [c for k, c in constants(u).items() if k not in ("count_saturation", "rerun")] for u in uniform
        ]


def _leaving_rows(case: str) -> tuple[QLMH, np.ndarray]:
    """A layer of 6 neurons and currents (6 steps, 5 rows) that keep rows 0, 2 and 4 in the
    24-bit range and take neurons 0 and 2 of row 1 (at step 1) and of row 3 (at step 4) out
    of it, after steps that keep them from firing: brought back into range they do not
    fire at that step, left out of range they do. Under the lmh rules two more neurons of
    row 3 fire once, at step 2 and at step 3: a later chunk of row 3 starts with one of
    them as the spike before (a next-step reset's)."""
    n = 6
    bias = np.zeros(n, np.int64)
    if case == "loihi-lif":
        factors = {"mu_d": 3686, "mu_s": 0, "lam_d": 4096, "lam_s": 3891}
        rules = {"reset": "set", "threshold_test": ">", "v_s_init": 0}
        theta, low, high, quiet, big = 64 * 1000, -200, 400, -200, 150_000  # a_in << 6: u wraps
    else:
        factors = {"mu_d": 1000, "mu_s": 0, "lam_d": 2048, "lam_s": 2048}
        rules = {"reset_timing": "next-step" if case == "lmh-next-step" else "same-step"}
        theta, low, high, quiet, big = 6_000_000, -2_000_000, 5_000_000, -2_000_000, 1 << 25
    node = QLMH(
        size=n, theta=theta, state_scale=1.0, profile=case.removesuffix("-next-step"), bias=bias,
        **{k: np.array([[v]]) for k, v in factors.items()}, **rules,
    )  # fmt: skip
    currents = np.random.default_rng(5).integers(low, high, (6, 5, n))
    for row, step in ((1, 1), (3, 4)):
        currents[:, row, [0, 2]] = quiet
        currents[step, row, [0, 2]] = big
    if case != "loihi-lif":  # row 3: neuron 1 fires at step 2 only, neuron 3 at step 3 only
        currents[:, 3, [1, 3]] = quiet
        currents[:3, 3, 1] = 6_000_000
        currents[1:4, 3, 3] = 7_000_000
    return node, currents


@pytest.mark.parametrize("case", ["lmh", "lmh-next-step", "loihi-lif"])
@pytest.mark.parametrize("chunk, threads, trace", [(3, 1, False), (6, 1, False), (3, 3, True), (2, 1, True)])
@pytest.mark.parametrize("keep_last", [True, False])
def test_layer_rows_out_of_range_run_again_counting(
    case: str, chunk: int, threads: int, trace: bool, keep_last: bool
) -> None:
    """The layer-wise kernel (:func:`fused.compiled_starting`, run_neuron_chunk's) runs each
    batch row's steps without counting saturation; a row that went out of range, put back,
    and the rows after it run with the counting kernel (:func:`fused.counting_starting`),
    from their initial values (row 1; row 3 too where the chunk holds all 6 steps) or from
    the states kept before the chunk (row 3 in a later chunk):
    spikes, both states at every step and at the end, step totals, saturation count,
    per-neuron spike counts and fired marks equal the reference step's
    (:func:`lmh_step`), with the rows split over threads too. The code that does not count,
    run once over the whole run, gets rows 1 and 3 wrong (spikes, and fired marks where
    the reference has none), so a rerun that kept anything of the first run would too.
    ``keep_last`` False: the last chunk keeps no states (``keep_states=False``; scratch rows
    started fresh where the chunk holds all 6 steps, else copied from the kept states): the
    same spikes, totals, traces, counts, and the fired marks' count in ``active``."""
    from lmh_deploy.semantics import integer as fx

    node, currents = _leaving_rows(case)
    steps, batch, n = currents.shape
    fp = fx.layer_params(node)
    v_d, v_s = fp.initial_state((batch, n))
    want, want_d, want_s, want_sat, prev = [], [], [], np.zeros(batch, int), None
    for t in range(steps):
        for b in range(batch):  # the saturation count row by row
            _, _, _, sat = fx.lmh_step(fp, t, v_d[b : b + 1], v_s[b : b + 1], currents[t, b : b + 1],
                                       None if prev is None else prev[b : b + 1])  # fmt: skip
            want_sat[b] += sat
        v_d, v_s, prev, _ = fx.lmh_step(fp, t, v_d, v_s, currents[t], prev)
        want.append(prev)
        want_d.append(v_d)
        want_s.append(v_s)
    want = np.array(want)
    assert list(want_sat > 0) == [False, True, False, True, False]  # the rows out of range
    if case != "loihi-lif":
        assert want[:, 3, 1].tolist() == [0, 0, 1, 0, 0, 0] and want[:, 3, 3].tolist() == [0, 0, 0, 1, 0, 0]

    p = neuron_params(node)
    state = N.initial_state(p, batch, lazy=True)
    spikes = np.zeros(currents.shape, bool)
    traced = (np.zeros(currents.shape, np.int64), np.zeros(currents.shape, np.int64))
    with _kernel_tests.threads_at_any_size(threads):
        for t0 in range(0, steps, chunk):
            part = slice(t0, t0 + chunk)
            totals = N.run_neuron_chunk(
                p, t0, currents[part].astype(np.int32), None, state, spikes[part],
                trace=(traced[0][part], traced[1][part]) if trace else None,
                keep_states=keep_last or t0 + chunk < steps,
            )  # fmt: skip
            assert np.array_equal(totals, want[part].sum((1, 2)))
    assert state.v_d.dtype == np.int32  # the int32 kernel ran
    assert np.array_equal(spikes, want)
    if trace:
        assert np.array_equal(traced[0], np.array(want_d)) and np.array_equal(traced[1], np.array(want_s))
    assert state.saturation == want_sat.sum()
    assert np.array_equal(state.neuron_spikes, want.sum((0, 1)))
    assert state.active_count() == np.count_nonzero(want.any(0))
    if keep_last:
        assert state.active is None
        assert np.array_equal(state.v_d, v_d) and np.array_equal(state.v_s, v_s)
        assert np.array_equal(state.fired, want.any(0))
    else:
        assert state.active == np.count_nonzero(want.any(0))
        with pytest.raises(ValueError, match="not kept"):
            N.run_neuron_chunk(p, steps, currents[:1].astype(np.int32), None, state, spikes[:1])

    # the code that does not count, over the whole run: right where nothing left the range
    fast = fused.compiled(N.rule_set(p)[0], False, False, N.layer_form(p).uniform, count_saturation=False)
    once = N.initial_state(p, batch)
    got = np.zeros(currents.shape, bool)
    empty_f, empty_i = np.zeros((1, 1, 0), np.float32), np.zeros((1, 1, 0), np.int64)
    form = N.layer_form(p)
    told = fast(
        currents.astype(np.int32), steps, 0, p.input_shift, 0, form.factors, form.bias_d, form.bias_s,
        p.theta, p.reset_value, N.rule_set(p)[1], once.v_d, once.v_s, once.s_prev, once.fired,
        once.neuron_spikes, got, empty_f, empty_i, empty_i, np.zeros(steps, np.int64), 0, batch,
    )  # fmt: skip
    assert told == -1
    same = [np.array_equal(got[:, b], want[:, b]) for b in range(batch)]
    assert same == [True, False, True, False, True]
    assert (once.fired & ~want.any(0))[[1, 3]].any()  # marks the reference does not have


@pytest.mark.parametrize("saturating", [True, False])
def test_kernels_that_skip_fired_marks_or_saturation_counts_compute_the_same(saturating: bool) -> None:
    """The dense chain's kernels (sim/chain.py): ``mark_fired=False`` leaves its ``fired``
    argument as it was, every row; ``count_saturation=False`` returns -1 where a value was
    out of range (the counting kernel's count > 0), else 0; every other output (states,
    spikes, step counts, per-neuron spike counts) equals the marking, counting kernel's,
    on currents that never saturate, and on ones that do (up to 9,000,000 against the
    bound 2**23) for every kernel that counts; a kernel that does not count leaves values
    out of range there (it does not bring them back: its caller reruns the call)."""
    lmh = (0, 0, 0, 0, 0, 0)
    p = _layer("lmh")
    form = N.layer_form(p)
    rng = np.random.default_rng(3)
    batch, steps = 3, 7
    top = 9_000_000 if saturating else 30_000
    cur = rng.integers(-top, top, (steps, batch, p.size)).astype(np.int32)
    runs = []
    for mark, count in itertools.product((True, False), (True, False)):
        kernel = fused.compiled(lmh, False, False, form.uniform, mark_fired=mark, count_saturation=count)
        v_d = np.zeros((batch, p.size), np.int32)
        v_s = np.zeros((batch, p.size), np.int32)
        fired = np.zeros((batch, p.size), bool)
        fired[1, ::2] = True  # what the non-marking kernel must leave as it is
        before = fired.copy()
        per_neuron = np.zeros(p.size, np.int64)
        spikes = np.zeros((steps, batch, p.size), bool)
        counts = np.zeros(steps, np.int64)
        empty_f, empty_i = np.zeros((1, 1, 0), np.float32), np.zeros((1, 1, 0), np.int64)
        sat = kernel(
            cur, steps, 0, 0, 0, form.factors, form.bias_d, form.bias_s, p.theta, p.reset_value,
            N.rule_set(p)[1], v_d, v_s, np.zeros((batch, p.size), bool), fired, per_neuron,
            spikes, empty_f, empty_i, empty_i, counts, 0, batch,
        )  # fmt: skip
        runs.append((v_d, v_s, spikes, counts, per_neuron))
        assert np.array_equal(fired, before | spikes.any(0) if mark else before)
        if saturating and not count:
            runs.pop()
            assert np.abs(np.concatenate([v_d, v_s])).max() > 2**23
        if count:
            assert (sat > 0) == saturating
        else:
            assert sat == (-1 if saturating else 0)
    assert runs[0][2].any() and not runs[0][2].all()
    for run in runs[1:]:
        for got, want in zip(run, runs[0], strict=True):
            assert np.array_equal(got, want)
    assert (
        len(
            {
                id(fused.compiled(lmh, False, False, True, *flags))
                for flags in itertools.product((0, 1), (0, 1))
            }
        )
        == 4
    )


@pytest.mark.parametrize("profile, dtype", [("lmh", np.int32), ("lmh", np.int64), ("loihi-lif", np.int64)])
def test_a_kernel_without_saturation_counts_tells_out_of_range_at_the_bounds(profile, dtype) -> None:
    """``count_saturation=False`` returns -1 exactly where the counting kernel counts: a
    dendrite at the bounds themselves (2**23 - 1 and -2**23 under saturation; Lava LIF's
    wrap keeps 2**23) is in range, one past them is not; the lmh rules' bit test and the
    other rules' lowest / highest values alike, in int32 and int64 states."""
    rules = (0, 0, 0, 0, 0, 0) if profile == "lmh" else (1, 2, 1, 1, 1, 0)
    p = _layer(profile, mu_d=[[0]], mu_s=[[0]], lam_d=[[1]], lam_s=[[0]], bias=[0] * 6)
    form = N.layer_form(p)
    hi = 2**23 if profile == "loihi-lif" else 2**23 - 1
    lo = -(2**23) if profile == "lmh" else -(2**23) + 1
    empty_f, empty_i = np.zeros((1, 1, 0), np.float32), np.zeros((1, 1, 0), np.int64)
    for values, out in (
        ([hi, lo, 0, 1, -1, hi], 0),
        ([hi + 1, lo, 0, 1, -1, 0], 1),
        ([0, 0, lo - 1, 0, 0, 0], 1),
    ):
        got = []
        for count in (True, False):
            kernel = fused.compiled(
                rules, False, False, form.uniform, mark_fired=False, count_saturation=count
            )
            states = np.zeros((2, 1, p.size), dtype)
            cur = np.array(values, dtype).reshape(1, 1, -1)
            got.append(
                kernel(
                    cur,
                    1,
                    0,
                    0,
                    0,
                    form.factors.astype(dtype),
                    form.bias_d.astype(dtype),
                    form.bias_s.astype(dtype),
                    p.theta,
                    p.reset_value,
                    N.rule_set(p)[1],
                    states[0],
                    states[1],
                    np.zeros((1, p.size), bool),
                    np.zeros((1, p.size), bool),
                    np.zeros(p.size, np.int64),
                    np.zeros((1, 1, p.size), bool),
                    empty_f,
                    empty_i,
                    empty_i,
                    np.zeros(1, np.int64),
                    0,
                    1,
                )  # fmt: skip
            )
        assert got == [out, -out], (values, got)


def test_out_of_range_count_is_exact_over_the_whole_integer_range() -> None:
    """The overflow count (one unsigned compare of ``x - lo``): 1 exactly outside
    ``[lo, hi]``, for saturation's and the wrap's bounds, at their edges and at the ends of
    int32 and int64 (where ``x - lo`` wraps)."""
    import numba

    @numba.njit
    def counts(xs, lo, hi):
        out = np.empty(xs.shape, xs.dtype)
        for i in range(xs.size):
            out[i] = fused._outside(xs[i], xs.dtype.type(lo), xs.dtype.type(hi))
        return out

    for dtype in (np.int32, np.int64):
        info = np.iinfo(dtype)
        for lo, hi in ((-(2**23), 2**23 - 1), (-(2**23) + 1, 2**23), (-(2**23) + 1, 2**23 - 1)):
            xs = np.array(
                [
                    info.min,
                    info.min + 1,
                    lo - 2,
                    lo - 1,
                    lo,
                    lo + 1,
                    0,
                    hi - 1,
                    hi,
                    hi + 1,
                    info.max - 1,
                    info.max,
                ],
                dtype,
            )
            want = ((xs < lo) | (xs > hi)).astype(dtype)
            assert np.array_equal(counts(xs, lo, hi), want), (dtype, lo, hi)


def test_a_layer_with_one_factor_each_is_uniform() -> None:
    """``KernelForm.uniform``: every factor one number for all neurons (at every step), not
    where one neuron's differs."""
    from dataclasses import replace

    p = _layer("lmh")
    assert fused.kernel_form(p).uniform
    mu_d = np.full((1, p.size), -819)
    mu_d[0, -1] = -818
    assert not fused.kernel_form(replace(p, mu_d=mu_d)).uniform
    assert fused.kernel_form(replace(p, mu_d=np.full((1, p.size), 7))).uniform


@pytest.mark.parametrize("rules", [{}, {"reset_timing": "next-step", "reset": "set", "reset_value": -300}])
@pytest.mark.parametrize("threads", [1, 3])
def test_lazy_states_start_in_the_kernel_as_filled_ones(monkeypatch, rules, threads: int) -> None:
    """A lazy state (arrays left unwritten, the kernel writes each row's initial values in
    its first step) runs as a filled one: per-neuron and layer initial states, the generic
    kernel's next-step set reset (the previous spikes start at none), rows split over
    threads, a first chunk whose currents widen the states to int64, and the array code
    (which fills the state first)."""
    p = replace(_layer("lmh", **rules), v_d_init=np.arange(-3, 3) * 700, v_s_init=2500)
    monkeypatch.setattr(N, "MIN_THREAD_WORK", 1)
    monkeypatch.setattr(N, "sim_threads", lambda: threads)
    rng = np.random.default_rng(5)
    batch = 7
    chunks = [rng.integers(-3000, 9000, (3, batch, p.size)).astype(np.float32) for _ in range(2)]
    huge = chunks[0].copy()
    huge[0, 0, 0] = 2.0**31  # beyond every int32 input bound: the states widen on a lazy state
    for first, arrays in ((chunks[0], False), (huge, False), (chunks[0], True)):
        runs = []
        for lazy in (False, True):
            state = N.initial_state(p, batch, lazy=lazy)
            assert (state.start is not None) == lazy
            if lazy:  # what unwritten memory may hold: nothing of it may be read
                state.v_d[...], state.v_s[...], state.s_prev[...], state.fired[...] = 12345, -777, True, True
            got = []
            with N.array_code_only() if arrays else contextlib.nullcontext():
                for t0, cur in zip((0, 3), (first, chunks[1]), strict=True):
                    spikes = np.empty((3, batch, p.size), bool)
                    counts = N.run_neuron_chunk(p, t0, cur, -1, state, spikes)
                    got += [spikes, np.asarray(counts)]
            assert state.start is None
            runs.append([*got, state.v_d, state.v_s, state.fired, state.neuron_spikes, state.saturation])
        filled, lazy_run = runs
        assert filled[0].any() and not filled[0].all()
        for a, b in zip(filled, lazy_run, strict=True):
            assert np.array_equal(a, b)
