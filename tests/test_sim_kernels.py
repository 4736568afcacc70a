"""sim/ kernels bit for bit: the fused numba loop and the array code (numpy, torch) against
the integer step of the semantics, for every profile and rule; synaptic sums every way."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lmh_deploy.sim import neuron as N
from lmh_deploy.sim.fused import SPECIALISED_RULES
from lmh_deploy.sim.params import OVERFLOW_CODES, ROUNDING_CODES, NeuronParams, neuron_params
from lmh_deploy.sim.synapse import SynapsePath, lava_current

from lmh_deploy.ir import QLMH, QDense
from lmh_deploy.ir.synapses import qdense_matrix
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import PROFILES
from shared import threads_at_any_size

SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
LIMIT = 1 << 23


def python_step(p: NeuronParams, t: int, v_d: int, v_s: int, s_prev: bool, a: int, i: int):
    """The shared design's integer step for one neuron with Python ints (no numpy)."""
    k = min(t, p.rows - 1)

    def rnd(x: int) -> int:
        if p.rounding == ROUNDING_CODES["half-up"]:
            return (x + 2048) >> 12
        if p.rounding == ROUNDING_CODES["floor"]:
            return x >> 12
        return x >> 12 if x >= 0 else -((-x) >> 12)

    def over(x: int, mode: int) -> tuple[int, int]:
        if mode == OVERFLOW_CODES["wrap"]:  # Lava LIF: 2**23 is kept, -2**23 becomes 2**23
            w = x - 2 * LIMIT if x > LIMIT else x
            w = x + 2 * LIMIT if w <= -LIMIT else w
            return w, int(w != x)
        lo = -(LIMIT - 1) if mode == OVERFLOW_CODES["saturate-symmetric"] else -LIMIT
        return min(max(x, lo), LIMIT - 1), int(x < lo or x > LIMIT - 1)

    f = lambda rows: int(rows[k][i])
    d, o1 = over(
        rnd(f(p.mu_d) * v_d) + rnd(f(p.mu_s) * v_s) + (a << p.input_shift) + int(p.bias_d[i]), p.overflow_d
    )
    delayed = p.next_step and s_prev
    m, o2 = over(
        rnd(f(p.lam_s) * v_s)
        + rnd(f(p.lam_d) * d)
        + int(p.bias_s[i])
        - (p.theta if delayed and not p.reset_set else 0),
        p.overflow_s,
    )
    if delayed and p.reset_set:
        m = p.reset_value
    spike = m > p.theta if p.threshold_gt else m >= p.theta
    if not p.next_step and spike:
        m = p.reset_value if p.reset_set else m - p.theta
    return d, m, spike if p.next_step else False, spike, o1 + o2


@st.composite
def neuron_layers(draw):
    """Random layer parameters of any profile/rule, per-layer or per-neuron, K factor rows."""
    n = draw(st.integers(1, 6))
    rows = draw(st.integers(1, 4))
    per_neuron = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    def factors(lo, hi):
        return rng.integers(lo, hi + 1, (rows, n if per_neuron else 1)).repeat(1 if per_neuron else n, axis=1)

    theta = int(draw(st.sampled_from([1, 2, 1000, 2**20, LIMIT - 1])))
    bias = rng.integers(-theta, theta + 1, n) * draw(st.sampled_from([0, 1, 64]))
    to_soma = draw(st.booleans())
    zero = np.zeros(n, np.int64)
    return NeuronParams(
        mu_d=factors(-2048, 4096),
        mu_s=factors(-2048, 4096),
        lam_d=factors(0, 6143),
        lam_s=factors(0, 6143),
        bias_d=zero if to_soma else bias,
        bias_s=bias if to_soma else zero,
        theta=theta,
        reset_value=int(rng.integers(-theta, theta + 1)),
        v_d_init=int(rng.integers(-LIMIT, LIMIT)),
        v_s_init=int(rng.integers(-LIMIT, LIMIT)),
        input_shift=draw(st.sampled_from([0, 6])),
        **draw(rule_sets()),
    )


def rule_sets():
    """Any combination of rules, or one of the rule sets with specialised kernels."""
    names = ("rounding", "overflow_d", "overflow_s", "threshold_gt", "reset_set", "next_step")
    special = st.sampled_from(sorted(SPECIALISED_RULES))
    anything = st.tuples(
        st.sampled_from(sorted(ROUNDING_CODES.values())),
        st.sampled_from(sorted(OVERFLOW_CODES.values())),
        st.sampled_from(sorted(OVERFLOW_CODES.values())),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    )
    return st.one_of(special, anything).map(
        lambda r: {k: (bool(v) if k in names[3:] else int(v)) for k, v in zip(names, r)}
    )


def _run_kernel(p: NeuronParams, currents: np.ndarray, chunk: int, where: str):
    """``where``: "numba", "arrays", "torch", or "numba-threads" (the compiled kernel over
    batch rows split between 3 threads, however little the work)."""
    if where == "numba-threads":
        with threads_at_any_size(3):
            return _run_kernel(p, currents, chunk, "numba")
    batch = currents.shape[1]
    like = None if where != "torch" else torch.zeros(1)
    state = N.initial_state(p, batch, like)
    steps = currents.shape[0]
    spikes = np.zeros(currents.shape, bool)
    trace = (np.zeros(currents.shape, np.int64), np.zeros(currents.shape, np.int64))
    for t0 in range(0, steps, chunk):
        t1 = min(steps, t0 + chunk)
        cur = currents[t0:t1]
        if where == "torch":
            sp_t = torch.zeros(cur.shape, dtype=torch.bool)
            tr_t = (torch.zeros(cur.shape, dtype=torch.int64), torch.zeros(cur.shape, dtype=torch.int64))
            got = N.run_neuron_chunk(p, t0, torch.as_tensor(cur), None, state, sp_t, trace=tr_t)
            assert got.dtype == torch.int64 and torch.equal(got, sp_t.sum((1, 2)))  # totals: a tensor
            spikes[t0:t1] = sp_t.numpy()
            trace[0][t0:t1], trace[1][t0:t1] = tr_t[0].numpy(), tr_t[1].numpy()
        elif where == "arrays":
            with N.array_code_only():
                N.run_neuron_chunk(
                    p, t0, cur, None, state, spikes[t0:t1], trace=(trace[0][t0:t1], trace[1][t0:t1])
                )
        else:
            got = N.run_neuron_chunk(
                p, t0, cur, None, state, spikes[t0:t1], trace=(trace[0][t0:t1], trace[1][t0:t1])
            )
            # the totals per step, int64 however the rows were split over threads
            assert got.dtype == np.int64 and np.array_equal(got, spikes[t0:t1].sum((1, 2)))
    as_np = lambda a: a if isinstance(a, np.ndarray) else a.numpy()
    # each neuron's spike count adds up over the chunks (a split run adds its threads' counts)
    assert np.array_equal(as_np(state.neuron_spikes), spikes.sum((0, 1))), where
    return spikes, trace, as_np(state.v_d), as_np(state.v_s), state.saturation


@SETTINGS
@given(
    p=neuron_layers(),
    steps=st.integers(1, 7),
    batch=st.integers(1, 3),
    chunk=st.integers(1, 7),
    scale=st.sampled_from([1, 1000, 2**22, 2**26]),
    seed=st.integers(0, 2**32 - 1),
)
def test_neuron_kernels_equal_the_integer_step(p, steps, batch, chunk, scale, seed) -> None:
    """Every kernel (numba, numpy array code, torch array code), any chunking, every rule."""
    currents = np.random.default_rng(seed).integers(-scale, scale + 1, (steps, batch, p.size))
    want_spikes = np.zeros(currents.shape, bool)
    want_d, want_s = np.zeros(currents.shape, np.int64), np.zeros(currents.shape, np.int64)
    want_sat = 0
    for b in range(batch):
        for i in range(p.size):
            v_d, v_s, s_prev = p.v_d_init, p.v_s_init, False
            for t in range(steps):
                v_d, v_s, s_prev, spike, sat = python_step(p, t, v_d, v_s, s_prev, int(currents[t, b, i]), i)
                want_spikes[t, b, i], want_d[t, b, i], want_s[t, b, i] = spike, v_d, v_s
                want_sat += sat
    ways = ["arrays", "torch"] + (["numba", "numba-threads"] if N.numba is not None else [])
    for where in ways:
        spikes, trace, v_d, v_s, sat = _run_kernel(p, currents, chunk, where)
        assert np.array_equal(spikes, want_spikes), where
        assert np.array_equal(trace[0], want_d) and np.array_equal(trace[1], want_s), where
        assert np.array_equal(v_d, want_d[-1]) and np.array_equal(v_s, want_s[-1]), where
        assert sat == want_sat, where


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 4),
    steps=st.integers(1, 6),
    batch=st.integers(1, 4),
    per_neuron=st.booleans(),
    big=st.booleans(),
)
def test_lmh_profile_kernels_equal_semantics_lmh_step(seed, rows, steps, batch, per_neuron, big) -> None:
    """The lmh profile against the semantics module's own step (radical rows, saturation)."""
    rng = np.random.default_rng(seed)
    n = 5
    shape = (rows, n if per_neuron else 1)
    fp = fx.LMHFixedParams(
        mu_d=rng.integers(-2048, 2048, shape),
        mu_s=rng.integers(-2048, 2048, shape),
        lam_d=rng.integers(2048, 6144, shape),
        lam_s=rng.integers(2048, 6144, shape),
        theta=int(rng.integers(1, 1 << 22)),
        bias=rng.integers(-500, 500, n),
    )
    node = QLMH(
        size=n,
        theta=fp.theta,
        mu_d=fp.mu_d,
        mu_s=fp.mu_s,
        lam_d=fp.lam_d,
        lam_s=fp.lam_s,
        bias=fp.bias,
        state_scale=1.0,
    )
    from lmh_deploy.sim.params import neuron_params

    p = neuron_params(node)
    scale = (1 << 24) if big else 3000
    currents = rng.integers(-scale, scale, (steps, batch, n))
    v_d, v_s = fp.initial_state((batch, n))
    want, sat_total = [], 0
    for t in range(steps):
        v_d, v_s, spikes, sat = fx.lmh_step(fp, t, v_d, v_s, currents[t])
        want.append(spikes)
        sat_total += sat
    for where in ["arrays", "torch"] + (["numba", "numba-threads"] if N.numba is not None else []):
        spikes, _, got_d, got_s, sat = _run_kernel(p, currents, 2, where)
        assert np.array_equal(spikes, np.array(want)), where
        assert np.array_equal(got_d, v_d) and np.array_equal(got_s, v_s), where
        assert sat == sat_total, where


def test_numba_is_installed_and_used() -> None:
    """numba is a declared dependency: the fused kernel is what runs by default."""
    assert N.numba is not None, (
        "numba is not installed here: run `bash scripts/install.sh` "
        "(numba is pinned in scripts/requirements.lock)"
    )
    assert N.numba_active()
    with N.array_code_only():
        assert not N.numba_active()
    assert N.numba_active()


# --------------------------------------------------------------------------- synapses
def _dense_node(rng, n_out, n_in, exp, graded, sparse=False, peak=127):
    mant = rng.integers(-peak, peak + 1, (n_out, n_in))
    if sparse:
        mant = sp.csr_matrix(mant * (rng.random((n_out, n_in)) < 0.3))
    return QDense(weight_mant=mant, weight_exp=exp, graded=graded, weight_scale=1.0)


def _reference_current(node: QDense, pre: np.ndarray) -> np.ndarray:
    """``shift(sum 2 m x, exp)`` in int64 from the full integer matrix."""
    m = qdense_matrix(node, fx.WEIGHT_LAVA_SCALE)
    m = m.toarray() if sp.issparse(m) else np.asarray(m)
    return fx.shift_sum(pre.astype(np.int64) @ m.astype(np.int64).T, node.weight_exp)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    rows=st.integers(1, 40),
    n_in=st.integers(1, 70),
    n_out=st.integers(1, 30),
    exp=st.integers(-8, 6),
    graded=st.sampled_from([None, (8, False), (8, True), (16, True), (24, True)]),
    sparse=st.booleans(),
    rate=st.sampled_from([0.0, 0.02, 0.3, 1.0]),
)
def test_synaptic_sums_every_way_equal_the_integer_sum(
    seed, rows, n_in, n_out, exp, graded, sparse, rate
) -> None:
    """Spikes, or graded inputs of every width and sign (signed 16- and 24-bit messages
    push the sums past float32's and int32's exact range)."""
    rng = np.random.default_rng(seed)
    node = _dense_node(rng, n_out, n_in, exp, graded is not None, sparse)
    largest = None if graded is None else fx.input_levels(*graded)
    if graded is None:
        pre = rng.random((rows, n_in)) < rate
    else:
        lo, hi = fx.input_range(*graded)
        pre = rng.integers(lo, hi + 1, (rows, n_in)) * (rng.random((rows, n_in)) < rate)
        pre[0] = hi  # the extremes of the range
        pre[-1] = lo
    want = _reference_current(node, pre)
    path = SynapsePath(node, largest_input=largest)
    got = {
        "gemm": path._gemm(pre),
        "events": path._events(pre),
        "auto": path.sums(pre),
        "torch": SynapsePath(node, "cpu", largest_input=largest)._sums_torch(torch.as_tensor(pre)).numpy(),
    }
    if path.int8_ok:
        assert "int8" in path.ways
        got["int8"] = path._int8(pre)
    for way, sums in got.items():
        assert np.array_equal(lava_current(sums, exp), want), way


def test_synaptic_sums_beyond_float32_and_float64_stay_exact() -> None:
    """Graded input with wide fan-in: float64 (bound >= 2**24) and int64 (>= 2**53) ways."""
    rng = np.random.default_rng(1)
    node = _dense_node(rng, 3, 600, 0, graded=True)
    path = SynapsePath(node, largest_input=255)
    assert path.bound >= 2**24 and path.float_dtype is np.float64
    pre = np.full((2, 600), 255)
    assert np.array_equal(lava_current(path.sums(pre), 0), _reference_current(node, pre))
    huge = QDense(weight_mant=np.full((2, 3), 127), weight_exp=0, graded=True, weight_scale=1.0)
    path = SynapsePath(huge, largest_input=255)
    path.bound = 2.0**60  # as if the fan-in were astronomically wide
    path.float_dtype = None
    path._prepare(huge.weight_mant)
    pre = np.array([[255, 255, 1]])
    assert np.array_equal(lava_current(path.sums(pre), 0), _reference_current(huge, pre))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    stride=st.sampled_from([1, 2]),
    padding=st.integers(0, 2),
    graded=st.booleans(),
    exp=st.integers(-4, 3),
)
def test_convolution_sums_equal_the_integer_matrix(seed, stride, padding, graded, exp) -> None:
    rng = np.random.default_rng(seed)
    kernel = rng.integers(-127, 128, (3, 2, 3, 3))
    node = QDense(
        weight_mant=kernel,
        weight_exp=exp,
        graded=graded,
        weight_scale=1.0,
        conv_input_shape=(2, 5, 6),
        conv_stride=(stride, stride),
        conv_padding=(padding, padding),
    )
    pre = rng.integers(0, 256 if graded else 2, (4, 60))
    want = _reference_current(node, pre)
    for device in (None, "cpu"):
        path = SynapsePath(node, device, largest_input=255 if graded else None)
        sums = path.sums(pre if device is None else torch.as_tensor(pre))
        sums = sums if isinstance(sums, np.ndarray) else sums.numpy()
        assert np.array_equal(lava_current(sums, exp), want), device


def test_way_choice_follows_the_measured_costs() -> None:
    """Both ways are timed after a first (possibly compiling) use; later calls take the
    cheaper prediction."""
    rng = np.random.default_rng(0)
    path = SynapsePath(_dense_node(rng, 50, 80, 0, graded=False))
    pre = rng.random((8, 80)) < 0.1
    first = [path.sums(pre) for _ in range(2 * len(path.ways))]
    assert set(path.costs.cost) == set(path.ways) >= {"gemm", "events"}
    assert all(np.array_equal(first[0], f) for f in first)
    for cheap in path.ways:
        path.costs.cost = {way: 1e-9 if way == cheap else 1.0 for way in path.ways}
        path.costs.calls = 100  # the next call re-times no way (way_costs.EARLY_RETIMES, every 64th)
        assert path.costs.choose(dict.fromkeys(path.ways, 100)) == cheap


@pytest.mark.parametrize("rows", [1, 17])
def test_int8_products_refuse_what_they_cannot_hold_exactly(rows: int) -> None:
    rng = np.random.default_rng(0)
    graded = SynapsePath(_dense_node(rng, 4, 8, 0, graded=True), largest_input=255)
    with pytest.raises(ValueError, match="int8 products need binary input"):
        graded.int8_sums(np.ones((rows, 8), np.int64))


#: Every numeric profile with every rule combination it allows.
PROFILE_RULES = [
    (profile.name, reset, test, timing)
    for profile in PROFILES.values()
    for reset in profile.resets
    for test in profile.threshold_tests
    for timing in profile.reset_timings
]


def _assert_kernels_equal_lmh_step(node: QLMH, currents: np.ndarray) -> np.ndarray:
    """sim/'s neuron copies (array code, torch, numba where installed) run ``node`` on
    ``currents`` (steps, batch, n) exactly as :func:`lmh_step` does at every step: spikes,
    both states, final states and saturation count. Returns the reference spikes."""
    from lmh_deploy.sim.params import neuron_params

    fp = fx.layer_params(node)
    v_d, v_s = fp.initial_state(currents.shape[1:])
    want, want_d, want_s, sat_total, prev = [], [], [], 0, None
    for t in range(len(currents)):
        v_d, v_s, spikes, sat = fx.lmh_step(fp, t, v_d, v_s, currents[t], prev)
        want.append(spikes)
        want_d.append(v_d)
        want_s.append(v_s)
        prev = spikes
        sat_total += sat
    p = neuron_params(node)
    for where in ["arrays", "torch"] + (["numba", "numba-threads"] if N.numba is not None else []):
        spikes, trace, got_d, got_s, sat = _run_kernel(p, currents, 2, where)
        assert np.array_equal(spikes, np.array(want)), where
        assert np.array_equal(trace[0], np.array(want_d)), where
        assert np.array_equal(trace[1], np.array(want_s)), where
        assert np.array_equal(got_d, v_d) and np.array_equal(got_s, v_s), where
        assert sat == sat_total, where
    return np.array(want)


@pytest.mark.parametrize("rules", PROFILE_RULES, ids="-".join)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(1, 6),
    batch=st.integers(1, 3),
    big=st.booleans(),
    same=st.booleans(),
)
def test_kernels_equal_semantics_lmh_step_for_every_profile_and_rule(
    rules, seed, steps, batch, big, same
) -> None:
    """sim/'s fast neuron copies (numba kernels of sim/fused.py, numpy and torch array code of
    sim/neuron.py) equal the reference rule :func:`lmh_deploy.semantics.integer.lmh_step`
    at every step (spikes, both states, saturation count), on every profile and rule, with
    factors per neuron and (``same``) one per layer (the kernel that reads them once a step)."""
    profile, reset, test, timing = rules
    rng = np.random.default_rng(seed)
    n = 5
    per = 1 if same else n
    if profile == "lmh":
        f = dict(
            mu_d=rng.integers(-2048, 2048, (1, per)),
            mu_s=rng.integers(-2048, 2048, (1, 1)),
            lam_d=rng.integers(2048, 6144, (1, 1)),
            lam_s=rng.integers(2048, 6144, (1, per)),
            bias=rng.integers(-500, 500, n),
            reset_value=int(rng.integers(-999, 999)),
            v_d_init=rng.integers(-99, 99, n),  # per neuron (a rockpool bias)
            v_s_init=int(rng.integers(-99, 999)),
        )
    else:
        f = dict(
            mu_d=rng.integers(0, 4096, (1, 1)),
            mu_s=np.zeros((1, 1), np.int64),
            lam_d=np.full((1, 1), 4096),
            lam_s=rng.integers(1, 4097, (1, 1)),
            bias=rng.integers(-4096, 4096, n) << 6,
            reset_value=0,
            v_d_init=0,
            v_s_init=0,
        )
    node = QLMH(
        size=n,
        theta=int(rng.integers(1, 1 << 16)) << 6,
        state_scale=1.0,
        profile=profile,
        reset=reset,
        threshold_test=test,
        reset_timing=timing,
        **f,
    )
    assert N.layer_form(neuron_params(node)).uniform == (same or profile != "lmh")
    scale = (1 << 22) if big else 3000
    _assert_kernels_equal_lmh_step(node, rng.integers(-scale, scale, (steps, batch, n)))


@pytest.mark.parametrize("threads", [1, 3])
def test_event_gather_exact_on_both_sides_of_its_int16_bound(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """Rows with k events are summed in int16 while k * max|w| < 2**15, else in int32: both
    sides of that bound, extreme weights (all +127, all -128, random) and every remainder of
    the four-rows-at-a-time pass; at one thread and with the rows cut into three ragged
    ranges over threads (15 rows), binary and integer rows."""
    from lmh_deploy.sim import gather
    from lmh_deploy.sim.gather import gather_rows

    monkeypatch.setattr(N, "sim_threads", lambda: threads)
    monkeypatch.setattr(N, "MIN_THREAD_WORK", 1)  # split even these small rows
    ranges = []
    split = gather._in_threads
    monkeypatch.setattr(
        gather,
        "_in_threads",
        lambda fn, rows, work: ranges.append(N.row_ranges(rows, work, threads)) or split(fn, rows, work),
    )
    rng = np.random.default_rng(3)
    n_in, n_out = 600, 37
    events = [0, 1, 2, 3, 4, 5, 7, 254, 255, 256, 257, 258, 259, 300, 600]
    pre = np.zeros((len(events), n_in), bool)
    for row, k in enumerate(events):
        pre[row, rng.choice(n_in, k, replace=False)] = True
    for w in (
        np.full((n_in, n_out), 127),
        np.full((n_in, n_out), -128),
        rng.integers(-128, 128, (n_in, n_out)),
    ):
        w8 = w.astype(np.int8)
        want = pre.astype(np.int64) @ w.astype(np.int64)
        for peak in (None, int(np.abs(w).max())):
            out = np.zeros((len(events), n_out), np.int32)
            gather_rows(pre, w8, out, peak)
            assert np.array_equal(out, want)
        counts = rng.integers(-3, 4, pre.shape) * pre  # integer rows: the values' gather
        out = np.zeros((len(events), n_out), np.int64)
        gather_rows(counts, w8, out)
        assert np.array_equal(out, counts @ w.astype(np.int64))
    assert ranges and all(len(r) == threads for r in ranges)


def test_nearly_dense_csr_weights_run_dense_with_the_same_integers() -> None:
    """A CSR matrix at >= DENSE_ENOUGH density (pool-composed classifier layers) is kept dense
    by the simulator; sparser ones stay CSR; every way gives the integer sum either way."""
    from lmh_deploy.sim.synapse import DENSE_ENOUGH

    rng = np.random.default_rng(5)
    for density, stays_sparse in ((0.99, False), (DENSE_ENOUGH / 2, True)):
        mant = rng.integers(-127, 128, (30, 50)) * (rng.random((30, 50)) < density)
        node = QDense(weight_mant=sp.csr_matrix(mant), weight_exp=-2, graded=False, weight_scale=1.0)
        path = SynapsePath(node)
        assert path.sparse is stays_sparse
        pre = rng.random((9, 50)) < 0.3
        want = _reference_current(node, pre)
        sums = [path._gemm(pre), path._events(pre)] + ([] if stays_sparse else [path.int8_sums(pre).numpy()])
        for got in sums:
            assert np.array_equal(lava_current(got, -2), want)


@pytest.mark.parametrize("graded", [False, True])
def test_wide_dense_layer_keeps_no_float_copy_and_the_same_integers(monkeypatch, graded) -> None:
    """A dense layer above FLOAT_COPY_BYTES (here all) keeps only its int8 rows: the float
    product converts blocks of them (here 5 rows of 40), exact as the whole copy's."""
    import lmh_deploy.sim.synapse as S

    rng = np.random.default_rng(11)
    node = _dense_node(rng, 40, 37, -3, graded, False)
    pre = (
        rng.integers(0, 256, (13, 37)) * (rng.random((13, 37)) < 0.5)
        if graded
        else rng.random((13, 37)) < 0.4
    )
    whole = SynapsePath(node, largest_input=255 if graded else None)
    monkeypatch.setattr(S, "FLOAT_COPY_BYTES", 0)
    monkeypatch.setattr(S, "GEMM_BLOCK_ENTRIES", 5 * 40)
    blocked = SynapsePath(node, largest_input=255 if graded else None)
    assert whole.w_t is not None and blocked.w_t is None and blocked.w_t_int.dtype == np.int8
    assert blocked._gemm(pre).dtype == np.float32  # the bound is below 2**24
    want = _reference_current(node, pre)
    for got in (blocked._gemm(pre), blocked._events(pre), blocked.sums(pre), whole._gemm(pre)):
        assert np.array_equal(lava_current(got, -3), want)
    with N.array_code_only():  # the sparse events product reads the rows converted for one use
        assert np.array_equal(lava_current(blocked._events(pre), -3), want)


@pytest.mark.parametrize("rules", PROFILE_RULES, ids="-".join)
def test_kernels_equal_lmh_step_at_the_threshold_and_the_state_edges(rules) -> None:
    """Hand-picked edges the random test above rarely hits: with neutral factors (no decay,
    unit gain, no feedback) a current of exactly ``theta`` puts ``v_s`` on the threshold (a
    spike under ``>=``, none under ``>``), and currents at ``STATE_MAX``, ``STATE_MAX + 1``,
    ``STATE_MIN`` and one beyond (and 2**17, which loihi-lif's 6-bit input shift makes 2**23)
    drive both states to the 24-bit edges, where wrap, saturation and the saturation count
    must agree with the reference too. +-2**26 (2**32 after the 6-bit shift) is a value one
    wrap leaves beyond 32 bits: int32 states must be widened before it is stored."""
    profile, reset, test, timing = rules
    n, theta = 14, 1 << 12
    lif = profile != "lmh"
    node = QLMH(
        size=n,
        theta=theta,
        state_scale=1.0,
        profile=profile,
        reset=reset,
        threshold_test=test,
        reset_timing=timing,
        mu_d=np.zeros((1, 1), np.int64),
        mu_s=np.zeros((1, 1), np.int64),
        lam_d=np.full((1, 1), 4096),
        lam_s=np.full((1, 1), 4096 if not lif else 1),
        bias=np.zeros(n, np.int64),
        reset_value=0,
        v_d_init=0,
        v_s_init=0,
    )
    wrap = (fx.STATE_MAX + 1) >> 6  # loihi-lif shifts its input by 6: 2**23 after the shift
    edge = [theta, theta - 1, theta + 1, fx.STATE_MAX, fx.STATE_MAX + 1, fx.STATE_MIN, fx.STATE_MIN - 1, 0]
    edge += [wrap, wrap - 1, -wrap, -wrap - 1, 1 << 26, -(1 << 26)]
    currents = np.array([[edge], [edge[::-1]], [edge], [[-c for c in edge]]], dtype=np.int64)
    want = _assert_kernels_equal_lmh_step(node, currents)
    if not lif:  # the neutral factors did what the docstring says: theta itself sits on the threshold
        assert bool(want[0][0, 0]) == (test == ">=") and not want[0][0, 1] and want[0][0, 2]


# ---------------------------------------------------------------------------------------------
# Edges of sim/neuron.py that the tests above do not reach (each kills mutants that
# scripts/mutation.sh found surviving; docs/testing.md).


def _run_chunks(p: NeuronParams, currents, weight_exp, where: str, chunk: int, steps: int):
    """``p`` over ``steps`` steps in chunks of ``chunk`` (``currents`` (1, B, n): the same at
    every step), with float spike copies and a trace; returns spikes, float copies, trace,
    per-step totals (checked to be int64, a tensor on torch states) and the final state."""
    batch, n = currents.shape[1:]
    torch_states = where == "torch"
    state = N.initial_state(p, batch, torch.zeros(1) if torch_states else None)
    new = (lambda shape, dt: torch.zeros(shape, dtype=dt)) if torch_states else np.zeros
    spikes = new((steps, batch, n), torch.int16 if torch_states else np.int16)
    spikes_f = new((steps, batch, n), torch.float32 if torch_states else np.float32)
    trace = tuple(new((steps, batch, n), torch.int64 if torch_states else np.int64) for _ in "ds")
    totals = []
    for t0 in range(0, steps, chunk):
        t1 = min(steps, t0 + chunk)
        cur = currents if len(currents) == 1 else currents[t0:t1]
        cur = torch.as_tensor(cur) if torch_states else cur
        with N.array_code_only() if where == "arrays" else contextlib.nullcontext():
            got = N.run_neuron_chunk(
                p, t0, cur, weight_exp, state, spikes[t0:t1], spikes_f[t0:t1],
                (trace[0][t0:t1], trace[1][t0:t1]), steps=t1 - t0,
            )  # fmt: skip
        assert isinstance(got, torch.Tensor) == torch_states and got.dtype in (np.int64, torch.int64)
        totals.append(np.asarray(got))
    as_np = lambda a: a.numpy() if isinstance(a, torch.Tensor) else a
    return as_np(spikes), as_np(spikes_f), tuple(map(as_np, trace)), np.concatenate(totals), state, as_np


@pytest.mark.parametrize(
    "max_spikes, v_s_min, reset, timing",
    [
        (3, None, "subtract", "same-step"),  # graded spikes
        (3, -300, "subtract", "same-step"),  # graded spikes on a floor
        (1, -300, "subtract", "next-step"),  # a floor under a delayed reset
        (1, -300, "set", "next-step"),
    ],
)
def test_graded_and_floored_layers_step_as_lmh_step(max_spikes, v_s_min, reset, timing) -> None:
    """Layers with graded spikes or a soma floor run :func:`lmh_step` itself, one step at a time
    (sim/neuron.py ``_run_semantics``): in chunks of 2 from step ``t0`` (factors differ per
    step, so a wrong ``t0`` shows) and as one static current, on numpy and torch states, with
    raw sums shifted by a weight exponent, they give lmh_step's counts, float copies, both
    states, saturation count, per-step totals (all spikes) and synaptic events (one per neuron
    that fires, whatever its count). A delayed reset reaches the next step (``s_prev``)."""
    rng = np.random.default_rng(11)
    n, batch, steps, theta, weight_exp = 6, 2, 5, 1000, 1
    node = QLMH(
        size=n,
        theta=theta,
        state_scale=1.0,
        profile="lmh",
        reset=reset,
        reset_timing=timing,
        mu_d=rng.integers(-2048, 2048, (3, n)),
        mu_s=rng.integers(-2048, 2048, (3, 1)),
        lam_d=rng.integers(2048, 6144, (3, 1)),
        lam_s=rng.integers(2048, 6144, (3, n)),
        bias=rng.integers(-200, 200, n),
        reset_value=-7,
        v_d_init=5,
        v_s_init=-3,
        max_spikes=max_spikes,
        v_s_min=v_s_min,
    )
    node.check("l")
    p = neuron_params(node)
    assert p.by_semantics
    varying = rng.choice([-2_500_000, -900, -200, 0, 300, 800, 1500, 2_500_000], (steps, batch, n))
    for currents in (varying, varying[:1]):
        fp = fx.layer_params(node)
        v_d, v_s = fp.initial_state((batch, n))
        want, want_d, want_s, sat, prev = [], [], [], 0, None
        for t in range(steps):
            a_in = (currents[min(t, len(currents) - 1)].astype(np.int64) * 2) << weight_exp
            v_d, v_s, prev, events = fx.lmh_step(fp, t, v_d, v_s, a_in, prev)
            want.append(prev)
            want_d.append(v_d)
            want_s.append(v_s)
            sat += events
        want = np.array(want)
        assert sat > 0 and want.any() and (max_spikes == 1 or want.max() > 1)
        assert v_s_min is None or np.array(want_s).min() == v_s_min  # the floor binds
        for where in ("arrays", "torch", "numba"):
            chunk = 2 if len(currents) > 1 else steps
            spikes, spikes_f, trace, totals, state, as_np = _run_chunks(
                p, currents.astype(np.float32), weight_exp, where, chunk, steps
            )
            assert np.array_equal(spikes, want) and np.array_equal(spikes_f, want), where
            assert np.array_equal(trace[0], want_d) and np.array_equal(trace[1], want_s), where
            assert np.array_equal(as_np(state.v_d), v_d) and np.array_equal(as_np(state.v_s), v_s), where
            assert state.saturation == sat, where
            assert np.array_equal(totals, want.sum((1, 2))), where
            assert np.array_equal(as_np(state.neuron_spikes), (want > 0).sum((0, 1))), where
            assert np.array_equal(as_np(state.fired), (want > 0).any(0)), where


def test_lava_current_rounds_float_sums_and_keeps_int64_exact() -> None:
    """``a_in`` from one step of sums: a float sum a rounding error off an integer (what a
    device convolution may return) is rounded to the nearest, not truncated, on numpy and
    torch; an int64 sum is taken as it is, even past float64's exact range (2**53 + 1)."""
    near = [2.9999, -2.9999, 3.0001, -3.0001]
    assert N._lava_current(np.array(near), None).tolist() == [3, -3, 3, -3]
    assert N._lava_current(torch.tensor(near, dtype=torch.float64), None).tolist() == [3, -3, 3, -3]
    assert N._lava_current(np.array(near, np.float32), 1).tolist() == [12, -12, 12, -12]  # 2 a << 1
    big = [2**53 + 1, -(2**53) - 1]
    assert N._lava_current(np.array(big), None).tolist() == big
    assert N._lava_current(torch.tensor(big), None).tolist() == big


def _integrator(n: int) -> NeuronParams:
    """``n`` lmh neurons that add their input (no decay, no feedback), threshold 100."""
    one, zero = np.full((1, 1), 4096), np.zeros((1, 1), np.int64)
    return neuron_params(
        QLMH(size=n, theta=100, state_scale=1.0, profile="lmh", mu_d=zero, mu_s=zero, lam_d=one, lam_s=one,
             bias=np.zeros(n, np.int64), v_s_init=0)
    )  # fmt: skip


@pytest.mark.parametrize("where", ["arrays", "numba"])
def test_no_steps_give_empty_int64_totals(where: str) -> None:
    """A chunk of no steps changes nothing and returns an empty int64 total (not float64)."""
    p = _integrator(3)
    state = N.initial_state(p, 2)
    with N.array_code_only() if where == "arrays" else contextlib.nullcontext():
        got = N.run_neuron_chunk(p, 0, np.zeros((0, 2, 3), np.int64), None, state, np.zeros((0, 2, 3), bool))
    assert got.dtype == np.int64 and got.shape == (0,)
    assert not state.v_s.any() and state.saturation == 0


def test_currents_for_another_step_count_are_refused() -> None:
    """Currents must cover one step (static) or every step asked: the error names both counts."""
    p = _integrator(2)
    state = N.initial_state(p, 4)
    with pytest.raises(ValueError, match=r"^currents for 3 steps, 2 steps asked$"):
        N.run_neuron_chunk(p, 0, np.zeros((3, 4, 2)), None, state, np.zeros((2, 4, 2), bool), steps=2)


def test_initial_states_have_the_declared_types(monkeypatch) -> None:
    """:class:`NeuronState`'s types: ``v_d``, ``v_s`` at their initial values, int32 where the
    fused kernel's bounds prove it (int64 for a layer beyond them, for torch, and without
    numba, which then runs the array code), bool ``s_prev`` and ``fired``, int64
    ``neuron_spikes``: the int32 kernel needs int32 states, and counts must not be floats."""
    base = _integrator(3)
    wide = NeuronParams(**{**base.__dict__, "bias_d": np.full(3, 2**30)})  # no int32 proof
    cases = [(base, None, np.int32), (wide, None, np.int64), (base, torch.zeros(1), torch.int64)]
    for p, like, state_dtype in cases:
        state = N.initial_state(dataclasses.replace(p, v_d_init=5, v_s_init=-7), 2, like)
        assert state.v_d.dtype == state.v_s.dtype == state_dtype
        assert state.v_d.tolist() == [[5] * 3] * 2 and state.v_s.tolist() == [[-7] * 3] * 2
        assert state.s_prev.dtype == state.fired.dtype == (bool if like is None else torch.bool)
        assert state.s_prev.shape == state.fired.shape == (2, 3) and not state.fired.any()
        assert state.neuron_spikes.dtype == (np.int64 if like is None else torch.int64)
        assert tuple(state.neuron_spikes.shape) == (3,) and not state.neuron_spikes.any()
    for p, _, state_dtype in cases[:2]:  # lazy: unwritten arrays of the same types, the start kept
        state = N.initial_state(dataclasses.replace(p, v_d_init=5, v_s_init=-7), 2, lazy=True)
        assert state.v_d.dtype == state.v_s.dtype == state_dtype and state.start == (5, -7)
        assert state.s_prev.dtype == state.fired.dtype == bool and state.v_d.shape == (2, 3)
        assert state.neuron_spikes.dtype == np.int64 and state.neuron_spikes.tolist() == [0] * 3
    monkeypatch.setattr(N, "numba", None)
    assert not N.numba_active() and N.initial_state(base, 2).v_d.dtype == np.int64


def test_kernel_form_memo_stays_bounded_past_its_size() -> None:
    """``layer_form`` keeps the forms of at most 256 layers (the oldest goes first) and goes on
    answering past that: 300 distinct layers, each form equal to a fresh ``kernel_form``."""
    from lmh_deploy.sim.fused import kernel_form

    base = _integrator(2)
    N._FORMS.clear()
    for i in range(300):
        p = dataclasses.replace(base, theta=100 + i)
        form = N.layer_form(p)
        assert form.input_limit == kernel_form(p).input_limit and N.layer_form(p) is form
        assert len(N._FORMS) <= 256
    assert len(N._FORMS) == 256


def test_event_gather_is_exact() -> None:
    """The compiled gather of binary rows (the chunked run's events way): exact for row
    lengths around and between whole words, every density from none to all, events in the
    last bytes of a row."""
    from lmh_deploy.sim.gather import gather_binary

    rng = np.random.default_rng(4)
    for n_in in (1, 7, 8, 9, 63, 64, 65, 600):
        for density in (0.0, 0.003, 0.03, 0.1, 0.5, 1.0):
            pre = rng.random((40, n_in)) < density
            pre[0, -1] = True  # an event in the last byte, alone
            pre[1, :] = False
            pre[1, -min(n_in, 3) :] = True  # the last bytes, after empty words
            w = rng.integers(-128, 128, (n_in, 21)).astype(np.int8)
            out = np.zeros((40, 21), np.int32)
            gather_binary(pre.view(np.uint8), w, out, 128)
            assert np.array_equal(out, pre.astype(np.int64) @ w.astype(np.int64)), (n_in, density)


@pytest.mark.parametrize("batch", [1, 2, 5, 16])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_row_ranges_cover_the_batch_once(batch: int, threads: int) -> None:
    """The batch rows of a neuron update split between threads: contiguous, disjoint, every
    row once, at most one range per thread and row, near-equal sizes; one range (no thread)
    when a row's work is below ``MIN_THREAD_WORK``."""
    parts = N.row_ranges(batch, N.MIN_THREAD_WORK, threads)
    assert parts[0][0] == 0 and parts[-1][1] == batch
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    assert len(parts) == min(threads, batch)
    sizes = [hi - lo for lo, hi in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    small = (N.MIN_THREAD_WORK - 1) // batch  # the whole batch below one thread's share
    assert N.row_ranges(batch, small, threads) == [(0, batch)]


def test_thread_ranges_by_hand() -> None:
    """``contiguous_ranges``: the bounds ``batch * k // parts``; ``row_ranges``: as many parts
    as threads, rows and whole ``MIN_THREAD_WORK`` (2**16 neuron-steps) shares allow, at least
    one."""
    assert N.contiguous_ranges(3, 1) == [(0, 3)]
    assert N.contiguous_ranges(5, 2) == [(0, 2), (2, 5)]
    assert N.contiguous_ranges(7, 3) == [(0, 2), (2, 4), (4, 7)]  # 7 // 3, 14 // 3
    assert N.contiguous_ranges(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert N.MIN_THREAD_WORK == 2**16
    assert N.row_ranges(8, 2**16, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]  # 4 threads
    assert N.row_ranges(8, 2**14, 4) == [(0, 4), (4, 8)]  # 8 * 2**14 = 2 shares
    assert N.row_ranges(8, 2**13 - 1, 4) == [(0, 8)]  # less than one share
    assert N.row_ranges(3, 2**20, 8) == [(0, 1), (1, 2), (2, 3)]  # 3 rows


def test_a_chunk_is_split_by_its_neuron_steps_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled update asks ``row_ranges`` for its batch rows, each row's work (steps x
    neurons: 4 x 3 here) and ``sim_threads()`` threads."""
    p = _integrator(3)
    state = N.initial_state(p, 5)
    asked = []
    real = N.row_ranges
    monkeypatch.setattr(N, "sim_threads", lambda: 7)
    monkeypatch.setattr(N, "row_ranges", lambda *args: asked.append(args) or real(*args))
    N.run_neuron_chunk(p, 0, np.ones((4, 5, 3), np.int64), None, state, np.zeros((4, 5, 3), bool))
    assert asked == [(5, 12, 7)]


def test_sim_threads_reads_numbas_count_without_starting_its_threading_layer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numba's configured count while its threading layer has not started; the layer's own
    count once it has (``numba.set_num_threads`` was called); 1 without numba."""
    import numba
    from numba.np.ufunc import parallel

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 5)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 3)
    monkeypatch.setattr(parallel, "_is_initialized", False)
    assert N.sim_threads() == 5
    monkeypatch.setattr(parallel, "_is_initialized", True)
    assert N.sim_threads() == 3
    monkeypatch.setattr(N, "numba", None)
    assert N.sim_threads() == 1


def test_run_in_threads_runs_the_first_range_here_and_the_others_in_one_named_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One range: called here, no pool. More: the first here, the others in a pool of
    ``len(parts) - 1`` threads named ``lmh-sim_*``, results in the ranges' order; the pool is
    kept for fewer ranges and replaced (the old one shut down) by a larger one for more
    (where torch's OpenMP team is not used: tests/test_sim_omp_team.py)."""
    import threading

    monkeypatch.setattr(N, "_POOL", [])
    monkeypatch.setattr(N, "team", lambda: None)
    here = threading.current_thread().name

    def where(lo: int, hi: int) -> tuple[int, int, str]:
        return lo, hi, threading.current_thread().name

    assert N.run_in_threads(where, [(0, 5)]) == [(0, 5, here)] and N._POOL == []
    got = N.run_in_threads(where, [(0, 1), (1, 3), (3, 4)])
    assert [g[:2] for g in got] == [(0, 1), (1, 3), (3, 4)] and got[0][2] == here
    assert all(name.startswith("lmh-sim_") for _, _, name in got[1:]), got
    ((workers, pool),) = N._POOL
    assert workers == 2 and pool._max_workers == 2
    assert [g[:2] for g in N.run_in_threads(where, [(0, 1), (1, 2)])] == [(0, 1), (1, 2)]
    assert len(N.run_in_threads(where, [(0, 1), (1, 2), (2, 3)])) == 3  # as many: kept too
    assert [(2, pool)] == N._POOL
    try:
        assert len(N.run_in_threads(where, [(0, 1), (1, 2), (2, 3), (3, 4)])) == 4
        ((workers, bigger),) = N._POOL
        assert workers == bigger._max_workers == 3 and pool._shutdown and not bigger._shutdown
    finally:
        for _, executor in N._POOL:
            executor.shutdown()


def test_blocked_event_gather_is_exact() -> None:
    """The blocked gather of a dense chain (sim/chain.py) writes every output of every block,
    whatever was in ``out`` before: exact for input and output counts around the 16-byte
    steps and 32-output blocks (single blocks, groups of four and groups with single blocks
    after them), every density from none (rows skipped) over sparse rows
    (a word at a time) to all inputs active (more events than an int16 sum holds: 600 x 128
    in parts of 255 rows), events in the last input alone; outputs past the last block's
    columns untouched."""
    from lmh_deploy.sim.gather import BLOCK, block_rows, gather_blocks, padded_inputs

    rng = np.random.default_rng(5)
    for n_in in (1, 15, 16, 17, 65, 600):
        n_pad = padded_inputs(n_in)
        assert n_pad % 16 == 0 and n_in <= n_pad < n_in + 16
        for n_out in (1, 32, 33, 70, 130, 288):
            for density in (0.0, 0.003, 0.1, 1.0):
                pre = rng.random((9, n_in)) < density
                pre[0, :] = False
                pre[0, -1] = True
                w = rng.integers(-128, 128, (n_in, n_out)).astype(np.int8)
                w[0, 0] = -128
                blocks = block_rows(w)
                assert blocks.shape == (-(-n_out // BLOCK), n_in, BLOCK) and blocks.dtype == np.int16
                assert blocks.flags.c_contiguous and blocks.ctypes.data % 64 == 0
                padded = np.zeros((9, n_pad), np.uint8)
                padded[:, :n_in] = pre
                out = np.full((9, blocks.shape[0] * BLOCK + 5), 99, np.int32)
                idx, starts = np.empty(9 * n_pad, np.int32), np.empty(10, np.int64)
                gather_blocks(padded, pre.sum(1).astype(np.int64), blocks, 128, out, idx, starts)
                expected = pre.astype(np.int64) @ w.astype(np.int64)
                assert np.array_equal(out[:, :n_out], expected), (n_in, n_out, density)
                assert not out[:, n_out : blocks.shape[0] * BLOCK].any()
                assert (out[:, blocks.shape[0] * BLOCK :] == 99).all()
    # every partial sum at its largest: 600 events of 127 (or -128) in parts of exactly
    # 32767 // peak rows, the most an int16 sum holds
    for value, peak in ((127, 127), (-128, 128)):
        w = np.full((600, 140), value, np.int8)
        pre = np.zeros((2, 608), np.uint8)
        pre[:, :600] = 1
        out = np.zeros((2, 160), np.int32)
        scratch = np.empty(2 * 608, np.int32), np.empty(3, np.int64)
        gather_blocks(pre, np.full(2, 600), block_rows(w), peak, out, *scratch)
        assert (out[:, :140] == 600 * value).all()
    with pytest.raises(ValueError, match="padded"):  # rows the 16-byte steps would overrun
        gather_blocks(np.ones((2, 600), np.uint8), np.full(2, 600), block_rows(w), 128, out, *scratch)


def test_active_inputs_are_listed_alike_both_ways() -> None:
    """The blocked gather lists a row's active inputs by compresses (a dense row, where the
    CPU has AVX-512) or by bit masks (64 bytes, then 16, at a time): both give every
    nonzero index in order, after the ``k`` entries already listed, for rows around the
    64-byte steps, every density from none to all, events in the first and last byte."""
    import numba

    from lmh_deploy.sim.gather import _active_inputs

    @numba.njit
    def listed(row, idx, k, dense):
        return _active_inputs(row, idx, k, dense)

    rng = np.random.default_rng(6)
    for n_pad in (16, 48, 64, 80, 128, 416):
        for density in (0.0, 0.02, 0.1, 0.5, 1.0):
            row = (rng.random(n_pad) < density).astype(np.uint8)
            row[[0, -1]] = rng.random(2) < 0.5
            expected = np.flatnonzero(row)
            for dense in (False, True):
                idx = np.full(3 + n_pad + 16, -7, np.int32)
                k = listed(row, idx, 3, dense)
                assert k == 3 + len(expected) and np.array_equal(idx[3:k], expected), (n_pad, density, dense)
                assert (idx[:3] == -7).all()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_residual_sums_shortcuts_and_initial_states_are_the_same_at_any_thread_count(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """The residual layers' summed currents (``add_shifted``), the identity shortcuts
    (``scale_spikes``, both layouts) and the initial states (``filled_rows``, one value and
    one per neuron) run in ranges over threads where the work is large enough: equal to
    the numpy result at 1-3 threads, ragged ranges included; non-contiguous arrays refused."""
    from lmh_deploy.sim.gather import add_shifted, scale_spikes

    monkeypatch.setattr(N, "sim_threads", lambda: threads)
    rng = np.random.default_rng(9)
    size = 3 * N.MIN_THREAD_WORK + 5  # three ranges at three threads, of unequal length
    assert len(N.row_ranges(size, 1, threads)) == threads
    a = rng.integers(-(2**20), 2**20, size).astype(np.float32)
    b = rng.integers(-(2**28), 2**28, size)
    out = np.empty(size, np.int64)
    add_shifted(a, (2, 1), b, (0, 3), out)
    assert np.array_equal(out, ((a.astype(np.int64) >> 2) << 1) + (b << 3))
    with pytest.raises(ValueError, match="contiguous"):
        add_shifted(a[::2], (0, 0), b[::2], (0, 0), out[::2])

    rows, c, hw = 7, 6, 10_000  # 7 rows of 60,000 entries: ranges of rows
    pre = rng.random((rows, c * hw)) < 0.3
    scale = rng.integers(-99, 99, c).astype(np.int32)
    for channels_last in (False, True):
        got = np.empty(pre.shape, np.int32)
        scale_spikes(pre, scale, got, channels_last)
        per_entry = np.tile(scale, hw) if channels_last else np.repeat(scale, hw)
        assert np.array_equal(got, np.where(pre, per_entry, 0))

    n = 3 * N.MIN_THREAD_WORK // 5 + 1  # 5 rows: ranges at 2 and 3 threads
    for value in (-7, np.arange(n) - 50):
        state = N.filled_rows(5, n, value, np.int32)
        assert state.dtype == np.int32 and np.array_equal(state, np.broadcast_to(value, (5, n)))


@pytest.mark.parametrize("threads", [1, 3])
def test_conv_scatter_and_sum_pool_are_the_same_at_any_thread_count(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """The event scatter of a convolution and the sum-pool before an int8 convolution run in
    ranges of rows over threads where the work is large enough: equal to torch's integer
    convolution and pool at one and three threads (ragged ranges), both layouts."""
    import torch.nn.functional as F
    from lmh_deploy.sim.conv import ConvPlan, pooled_integers
    from lmh_deploy.sim.gather import conv_scatter

    monkeypatch.setattr(N, "sim_threads", lambda: threads)
    rng = np.random.default_rng(11)
    rows, c_in, c_out, hw = 13, 4, 5, 64  # 13 rows of 16,384 inputs: three ranges
    pre = (rng.random((rows, c_in, hw, hw)) < 0.2).astype(np.uint8)
    kernel = rng.integers(-99, 99, (c_out, c_in, 3, 3))
    w_t = np.ascontiguousarray(kernel.transpose(1, 2, 3, 0)).astype(np.int32)
    out = np.empty((rows, c_out, hw // 2, hw // 2), np.int32)
    conv_scatter(pre, w_t, out, (2, 2), (1, 1))
    want = F.conv2d(torch.from_numpy(pre).double(), torch.from_numpy(kernel).double(), stride=2, padding=1)
    assert np.array_equal(out, want.numpy())

    plan = ConvPlan((c_in, hw, hw), kernel, (1, 1), (1, 1), (2, 2), (0, 0), (hw // 2, hw // 2))
    flat = pre.reshape(rows, -1).astype(bool)
    pooled = pooled_integers(plan, flat)
    want = F.avg_pool2d(torch.from_numpy(pre).double(), 2, divisor_override=1).numpy()
    assert pooled.dtype == np.uint8 and np.array_equal(pooled, want)
    cl = np.ascontiguousarray(pre.transpose(0, 2, 3, 1)).reshape(rows, -1).astype(bool)
    assert np.array_equal(pooled_integers(plan, cl, channels_last=True), want)


@pytest.mark.parametrize(
    "case",
    [
        # (rows, c_in, c_out, hw, kernel, stride, padding, values, peak, out_hw crop)
        (3, 16, 32, 5, (3, 3), (1, 1), (1, 1), 1, 127, 0),  # binary, AVX-512 compress
        (2, 20, 40, 7, (3, 3), (2, 2), (1, 1), 1, 127, 0),  # channels not a multiple of 16
        (2, 32, 70, 6, (3, 3), (1, 1), (1, 1), 4, 127, 0),  # sum-pooled counts, 3 blocks
        (2, 64, 96, 4, (3, 3), (1, 1), (2, 2), 1, 127, 1),  # all active; output cropped
        (2, 48, 160, 5, (1, 1), (1, 1), (0, 0), 1, 127, 0),  # 1 x 1, 5 blocks (4 + 1)
        (2, 16, 64, 5, (3, 2), (2, 1), (1, 0), 255, 32767, 0),  # int16 taps: one event a sum
        (5, 16, 32, 64, (3, 3), (2, 2), (1, 1), 1, 127, 0),  # 5 rows of 65,536 inputs: ranges
    ],
)
@pytest.mark.parametrize("threads", [1, 3])
def test_conv_gather_equals_the_integer_convolution(
    monkeypatch: pytest.MonkeyPatch, case, threads: int
) -> None:
    """The event gather of a convolution (per output, the rows of the taps at the active
    input channels, in int16 vector sums of at most ``32767 // peak`` events) equals torch's
    convolution in float64 (exact here), for binary and count inputs, int8 and int16 taps,
    strides, paddings, odd channel counts, a cropped output, and at any thread count; a
    wrong block, tap, offset or split of a long sum changes some output."""
    import torch.nn.functional as F
    from lmh_deploy.sim.gather import BLOCK, conv_gather, tap_blocks

    monkeypatch.setattr(N, "sim_threads", lambda: threads)
    rows, c_in, c_out, hw, (kh, kw), stride, padding, values, peak, crop = case
    rng = np.random.default_rng(c_in + c_out)
    density = 1.0 if crop else 0.3
    x = (
        rng.integers(1, values + 1, (rows, hw, hw, c_in)) * (rng.random((rows, hw, hw, c_in)) < density)
    ).astype(np.uint8)
    kernel = rng.integers(-peak, peak + 1, (c_out, c_in, kh, kw))
    kernel[0, 0, 0, 0] = peak
    want = F.conv2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2)).double(),
        torch.from_numpy(kernel).double(),
        stride=stride,
        padding=padding,
    ).numpy()
    oh, ow = want.shape[2] - crop, want.shape[3] - crop
    taps = tap_blocks(kernel, np.int8 if peak <= 127 else np.int16)
    assert taps.ctypes.data % 64 == 0 and taps.shape == (kh * kw, -(-c_out // BLOCK), c_in, BLOCK)
    out = np.full((rows * oh * ow, taps.shape[1] * BLOCK), -1, np.int32)
    conv_gather(x, taps, (kh, kw), (oh, ow), peak, out, stride, padding)
    got = out.reshape(rows, oh, ow, -1)
    assert np.array_equal(got[..., :c_out], want[:, :, :oh, :ow].transpose(0, 2, 3, 1))
    assert not got[..., c_out:].any()  # the padding outputs of the last block
