"""Tests of lmh_deploy.semantics.integer, the single definition of the integer semantics.

Hand examples carry their expected integers literally (worked out in the comments),
so a change of rounding, saturation or update order fails here first.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import get_profile

A = np.array

# --------------------------------------------------------------------------- constants


def test_format_constants() -> None:
    assert (fx.STATE_MIN, fx.STATE_MAX) == (-8388608, 8388607)  # 24-bit signed
    assert (fx.FACTOR_MIN, fx.FACTOR_MAX, fx.FACTOR_ONE) == (-2048, 2047, 4096)  # 12-bit / 4096
    assert (fx.WEIGHT_MANT_MAX, fx.WEIGHT_LAVA_SCALE, fx.input_levels(fx.INPUT_BITS_UNSIGNED)) == (
        127,
        2,
        255,
    )


# --------------------------------------------------------------------------- mul_shift


@pytest.mark.parametrize(
    "f, v, expected",
    [
        # (f*v + 2048) >> 12, i.e. round(f*v/4096) with halves going up (towards +inf).
        (2048, 3, 2),  # 0.5*3 = 1.5     -> 2   (half up)
        (2048, -3, -1),  # 0.5*-3 = -1.5   -> -1  (half up, not away from zero)
        (2048, 1, 1),  # 0.5             -> 1
        (2048, -1, 0),  # -0.5            -> 0
        (-2048, 5, -2),  # -2.5            -> -2
        (-2048, -5, 3),  # 2.5             -> 3
        (1000, 7, 2),  # 1.709           -> 2
        (1000, -7, -2),  # -1.709          -> -2  (floor of -1.209)
        (1, 2047, 0),  # 0.49976         -> 0
        (1, -2049, -1),  # -0.50024        -> -1
        (0, 8388607, 0),
        (2047, 8388607, 4192256),  # 4192255.75  -> 4192256 (no overflow: int64)
        (-2048, 8388607, -4194303),  # -4194303.5  -> -4194303
        (-2048, -8388608, 4194304),  # exactly 2**22
    ],
)
def test_mul_shift_hand_examples(f: int, v: int, expected: int) -> None:
    assert int(fx.mul_shift(A(f), A(v))) == expected


def test_mul_shift_is_elementwise_int64() -> None:
    out = fx.mul_shift(A([2048, 2048, -2048], dtype=np.int32), A([3, -3, 5], dtype=np.int32))
    assert out.dtype == np.int64
    assert out.tolist() == [2, -1, -2]


@settings(max_examples=300, deadline=None)
@given(f=st.integers(fx.FACTOR_MIN, fx.FACTOR_MAX), v=st.integers(fx.STATE_MIN, fx.STATE_MAX))
def test_mul_shift_equals_python_floor(f: int, v: int) -> None:
    # Python's // is floor division on unbounded ints: the reference definition.
    assert int(fx.mul_shift(A(f), A(v))) == (f * v + 2048) // 4096


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(fx.FACTOR_MIN, fx.FACTOR_MAX), st.integers(fx.STATE_MIN, fx.STATE_MAX)),
        min_size=1,
        max_size=20,
    )
)
def test_mul_shift_vectorised_matches_scalars(pairs: list[tuple[int, int]]) -> None:
    fs, vs = A([p[0] for p in pairs]), A([p[1] for p in pairs])
    assert fx.mul_shift(fs, vs).tolist() == [(f * v + 2048) // 4096 for f, v in pairs]


# --------------------------------------------------------------------------- saturate


def test_saturate_24_bit() -> None:
    x = A([2**23, -(2**23) - 1, 5, 2**23 - 1, -(2**23), 10**12, -(10**12)], dtype=np.int64)
    clipped, mask = fx.saturate(x)
    assert clipped.tolist() == [8388607, -8388608, 5, 8388607, -8388608, 8388607, -8388608]
    assert mask.tolist() == [True, True, False, False, False, True, True]


def test_saturate_other_width() -> None:
    clipped, mask = fx.saturate(A([128, -129, 127, -128]), bits=8)
    assert clipped.tolist() == [127, -128, 127, -128]
    assert mask.tolist() == [True, True, False, False]


# --------------------------------------------------------------------------- factors


def test_quantize_factor_hand_values() -> None:
    assert fx.quantize_factor(0.25).item() == 1024
    assert fx.quantize_factor(-0.5).item() == -2048
    assert fx.quantize_factor(1.25, offset=1.0).item() == 1024  # lambda stored as lambda - 1
    assert fx.quantize_factor(0.5, offset=1.0).item() == -2048  # lambda = 0.5 is the lowest code
    assert fx.quantize_factor(1.0, offset=1.0).item() == 0  # lambda = 1 is exact
    # numpy rounding: halves go to the even code.
    assert fx.quantize_factor(0.5 / 4096).item() == 0
    assert fx.quantize_factor(1.5 / 4096).item() == 2


def test_quantize_factor_clamps() -> None:
    assert fx.quantize_factor(0.5).item() == 2047  # top of [-0.5, 0.5) is not a code
    assert fx.quantize_factor(0.7).item() == 2047
    assert fx.quantize_factor(-0.9).item() == -2048
    assert fx.quantize_factor(1.6, offset=1.0).item() == 2047
    assert fx.quantize_factor(0.2, offset=1.0).item() == -2048
    assert fx.dequantize_factor(A(2047)) == pytest.approx(0.5 - 2**-12, abs=0)
    assert fx.dequantize_factor(A(2047), offset=1.0) == pytest.approx(1.5 - 2**-12, abs=0)


def test_factor_round_trip() -> None:
    mu = np.linspace(-0.5, 0.5 - 2**-13, 20001)
    assert np.abs(fx.dequantize_factor(fx.quantize_factor(mu)) - mu).max() <= 2**-13
    lam = mu + 1.0
    err = np.abs(fx.dequantize_factor(fx.quantize_factor(lam, 1.0), 1.0) - lam).max()
    assert err <= 2**-13 + 1e-15
    # Just below the open top end, clamping to 2047 costs up to (but below) one LSB.
    top = np.linspace(0.5 - 2**-13, 0.5 - 1e-9, 101)
    err_top = np.abs(fx.dequantize_factor(fx.quantize_factor(top)) - top).max()
    assert 2**-13 < err_top < 2**-12
    # Every code is exactly representable and survives the round trip.
    codes = np.arange(fx.FACTOR_MIN, fx.FACTOR_MAX + 1)
    assert np.array_equal(fx.quantize_factor(fx.dequantize_factor(codes)), codes)
    assert np.array_equal(fx.quantize_factor(fx.dequantize_factor(codes, 1.0), 1.0), codes)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(-2.0, 2.0), b=st.floats(-2.0, 2.0))
def test_quantize_factor_monotone_and_sign_preserving(a: float, b: float) -> None:
    lo, hi = min(a, b), max(a, b)
    q_lo, q_hi = int(fx.quantize_factor(lo)), int(fx.quantize_factor(hi))
    assert q_lo <= q_hi
    for x, q in ((lo, q_lo), (hi, q_hi)):
        assert fx.FACTOR_MIN <= q <= fx.FACTOR_MAX
        assert q * x >= 0  # never the opposite sign
        if abs(x) > 2**-13:
            assert np.sign(q) == np.sign(x)


# --------------------------------------------------------------------------- LM-H step


def _params(mu_d, mu_s, lam_d_off, lam_s_off, theta, bias) -> fx.LMHFixedParams:
    """Lambdas given as offsets from one (lam - 4096); the params hold full multipliers."""
    col = lambda v: np.atleast_2d(A(v, dtype=np.int64))
    return fx.LMHFixedParams(
        mu_d=col(mu_d),
        mu_s=col(mu_s),
        lam_d=col(lam_d_off) + 4096,
        lam_s=col(lam_s_off) + 4096,
        theta=theta,
        bias=np.atleast_1d(A(bias, dtype=np.int64)),
    )


def test_lmh_three_steps_by_hand() -> None:
    """Eq. 4 in integers: mu_d = 1000/4096, mu_s = -700/4096, lam_d = 1 + 300/4096,
    lam_s = 1 - 1500/4096, theta = 100, bias = 3, inputs 97, 41, -20.

    ms(f, v) = (f*v + 2048) >> 12.  Start: vD = 0, vS = theta // 2 = 50.
    t=0: vD = ms(1000,0)=0 + ms(-700,50)=-9 + 97 + 3 = 91            [-32952>>12 = -9]
         mS = 50 + ms(-1500,50)=-18 + 91 + ms(300,91)=7 = 130   [-72952>>12=-18, 29348>>12=7]
         s = 1, vS = 130 - 100 = 30
    t=1: vD = ms(1000,91)=22 + ms(-700,30)=-5 + 41 + 3 = 61          [93048>>12=22, -18952>>12=-5]
         mS = 30 + ms(-1500,30)=-11 + 61 + ms(300,61)=4 = 84         [-42952>>12=-11, 20348>>12=4]
         s = 0, vS = 84
    t=2: vD = ms(1000,61)=15 + ms(-700,84)=-14 - 20 + 3 = -16        [63048>>12=15, -56752>>12=-14]
         mS = 84 + ms(-1500,84)=-31 - 16 + ms(300,-16)=-1 = 36       [-123952>>12=-31, -2752>>12=-1]
         s = 0, vS = 36
    """
    p = _params(1000, -700, 300, -1500, theta=100, bias=3)
    v_d, v_s = p.initial_state((1, 1))
    assert (v_d.item(), v_s.item()) == (0, 50)
    expected = [(91, 30, True), (61, 84, False), (-16, 36, False)]
    for t, (a_in, want) in enumerate(zip([97, 41, -20], expected)):
        v_d, v_s, s, sat = fx.lmh_step(p, t, v_d, v_s, A([[a_in]]))
        assert (v_d.item(), v_s.item(), s.item()) == want, f"step {t}"
        assert sat == 0
        assert v_d.dtype == np.int64 and v_s.dtype == np.int64


def test_cuba_three_steps_by_hand() -> None:
    """Profile cuba (lmh's arithmetic, mu_d up to 4095/4096): a rockpool LIFTorch neuron in
    LM-H form, states in units of theta / 1000: beta = 0.95 -> mu_d = 3891, alpha = 0.9 ->
    lam_s = 3686, mu_s = 0, lam_d = 4096, its bias 1 threshold as v_d_init = 1000 and the
    dendrite drive round(1000 (1 - 3891/4096)) = 50; graded spikes up to K = 3, '>=',
    subtract; v_s starts at 0. Inputs 3000, 0, -6000.

    ms(f, v) = (f*v + 2048) >> 12.  Start: vD = 1000, vS = 0.
    t=0: vD = ms(3891,1000)=950 + 3000 + 50 = 4000              [3893048>>12 = 950]
         mS = ms(3686,0)=0 + ms(4096,4000)=4000 = 4000          [16386048>>12 = 4000]
         s = min(floor(4000/1000), 3) = 3, vS = 4000 - 3000 = 1000
    t=1: vD = ms(3891,4000)=3800 + 0 + 50 = 3850                [15566048>>12 = 3800]
         mS = ms(3686,1000)=900 + ms(4096,3850)=3850 = 4750     [3688048>>12 = 900]
         s = min(4, 3) = 3, vS = 4750 - 3000 = 1750
    t=2: vD = ms(3891,3850)=3657 - 6000 + 50 = -2293            [14982398>>12 = 3657]
         mS = ms(3686,1750)=1575 + ms(4096,-2293)=-2293 = -718  [6452548>>12 = 1575,
                                                                 -9390080>>12 = -2293]
         s = 0, vS = -718
    """
    p = fx.LMHFixedParams(
        mu_d=A([[3891]]),
        mu_s=A([[0]]),
        lam_d=A([[4096]]),
        lam_s=A([[3686]]),
        theta=1000,
        bias=A([50]),
        profile=get_profile("cuba"),
        v_d_init=1000,
        v_s_init=0,
        max_spikes=3,
    )
    v_d, v_s = p.initial_state((1, 1))
    expected = [(4000, 1000, 3), (3850, 1750, 3), (-2293, -718, 0)]
    for t, (a_in, want) in enumerate(zip([3000, 0, -6000], expected)):
        v_d, v_s, s, sat = fx.lmh_step(p, t, v_d, v_s, A([[a_in]]))
        assert (v_d.item(), v_s.item(), s.item()) == want, f"step {t}"
        assert sat == 0


def test_lmh_step_saturation_hand_example() -> None:
    # IF factors; theta = 2**23 - 1, so vS starts at 4194303.
    p = _params(0, 0, 0, 0, theta=fx.STATE_MAX, bias=0)
    v_d, v_s = p.initial_state((1, 2))
    a_in = A([[2**23 + 5, -(2**23) - 5]])
    v_d, v_s, s, sat = fx.lmh_step(p, 0, v_d, v_s, a_in)
    # neuron 0: vD clips to 8388607; mS = 4194303 + 8388607 clips to 8388607 >= theta: spike, vS = 0
    # neuron 1: vD clips to -8388608; mS = 4194303 - 8388608 = -4194305 fits: no spike
    assert v_d.tolist() == [[8388607, -8388608]]
    assert v_s.tolist() == [[0, -4194305]]
    assert s.tolist() == [[True, False]]
    assert sat == 3


def test_lmh_step_radical_rows_and_last_row_reuse() -> None:
    # Two rows: row 0 is IF, row 1 halves the dendrite; step 5 reuses row 1.
    p = fx.LMHFixedParams(
        mu_d=A([[0], [2048]]),
        mu_s=A([[0], [0]]),
        lam_d=A([[4096], [4096]]),
        lam_s=A([[4096], [4096]]),
        theta=1000,
        bias=A([0]),
    )
    assert [x.item() for x in p.factors_at(0)] == [0, 0, 4096, 4096]
    assert [x.item() for x in p.factors_at(1)] == [2048, 0, 4096, 4096]
    assert [x.item() for x in p.factors_at(5)] == [2048, 0, 4096, 4096]
    v_d, v_s, _, _ = fx.lmh_step(p, 5, A([[101]]), A([[0]]), A([[0]]))
    assert v_d.item() == 51  # (2048*101 + 2048) >> 12 = 51 (50.5 rounds up)
    v_d, v_s, _, _ = fx.lmh_step(p, 0, A([[101]]), A([[0]]), A([[0]]))
    assert v_d.item() == 0


def test_lmh_step_per_neuron_factors_broadcast() -> None:
    p = fx.LMHFixedParams(
        mu_d=A([[0, 2048, -2048]]),
        mu_s=A([[0, 0, 0]]),
        lam_d=A([[4096] * 3]),
        lam_s=A([[4096] * 3]),
        theta=10**6,
        bias=A([1, 2, 3]),
    )
    v_d, _, _, _ = fx.lmh_step(p, 0, A([[100, 100, 100], [7, 7, 7]]), A([[0, 0, 0]] * 2), A([[0, 0, 0]] * 2))
    assert v_d.tolist() == [[1, 52, -47], [1, 6, 0]]  # +-50 exact; 3.5 -> 4, -3.5 -> -3 (half up)


def _if_reference(theta: int, bias: list[int], inputs: list[list[int]]):
    """Integrate-and-fire with 24-bit saturation, in Python ints."""
    sat = lambda x: max(fx.STATE_MIN, min(fx.STATE_MAX, x))
    v_s = [theta // 2] * len(bias)
    spikes, events = [], 0
    for a in inputs:
        row = []
        for i, (ai, bi) in enumerate(zip(a, bias)):
            v_d = sat(ai + bi)
            m_s = sat(v_s[i] + v_d)
            events += (v_d != ai + bi) + (m_s != v_s[i] + v_d)
            row.append(m_s >= theta)
            v_s[i] = m_s - theta * (m_s >= theta)
        spikes.append(row)
    return spikes, v_s, events


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n=st.integers(1, 4), steps=st.integers(1, 6), theta=st.integers(1, fx.STATE_MAX))
def test_lmh_step_identity_factors_reduce_to_if(data, n: int, steps: int, theta: int) -> None:
    big = 2**23 + 2**20  # beyond the state range, so saturation is exercised too
    bias = data.draw(st.lists(st.integers(-(2**21), 2**21), min_size=n, max_size=n))
    inputs = data.draw(
        st.lists(st.lists(st.integers(-big, big), min_size=n, max_size=n), min_size=steps, max_size=steps)
    )
    p = _params([0] * n, [0] * n, [0] * n, [0] * n, theta=theta, bias=bias)
    v_d, v_s = p.initial_state((1, n))
    spikes, events = [], 0
    for t, a in enumerate(inputs):
        v_d, v_s, s, e = fx.lmh_step(p, t, v_d, v_s, A([a]))
        spikes.append(s[0].tolist())
        events += e
    want_spikes, want_vs, want_events = _if_reference(theta, bias, inputs)
    assert spikes == want_spikes
    assert v_s[0].tolist() == want_vs
    assert events == want_events


# --------------------------------------------------------------------------- dense / input


def test_dense_output_hand_example() -> None:
    w = A([[2, -4, 6], [254, 0, -254]])
    s = A([[1, 0, 1], [0, 1, 1]])
    assert fx.dense_output(w, 0, s).tolist() == [[8, 0], [2, -254]]
    assert fx.dense_output(w, 3, s).tolist() == [[64, 0], [16, -2032]]
    assert fx.dense_output(w, -1, s).tolist() == [[4, 0], [1, -127]]
    graded = A([[255, 0, 3]])
    assert fx.dense_output(w, 2, graded).tolist() == [[(510 + 18) * 4, (64770 - 762) * 4]]


def test_quantize_input_rounding_and_clipping() -> None:
    # floor(x * scale + 1/2), clipped to [0, 255]; values chosen exact in binary.
    x = A([0.0, 0.125, 0.375, -0.125, -3.0, 10.0, 63.75, 64.0, 100.0])
    assert fx.quantize_input(x, 4.0).tolist() == [0, 1, 2, 0, 0, 40, 255, 255, 255]
    assert fx.quantize_input(A([0.5, 1.5, 2.5]), 1.0).tolist() == [1, 2, 3]  # halves go up
    assert fx.quantize_input(A([1.0]), 255.0).dtype == np.int64


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("presyn_peak", [1, 1 << 12, 1 << 40])  # sums below 2**24, below 2**53, beyond
def test_dense_output_is_the_exact_integer_sum_whatever_arithmetic_it_picks(
    sparse: bool, presyn_peak: int
) -> None:
    """dense_output picks float32, float64 or int64 by a bound on the partial sums; a wrong
    bound (or dtype) shows as an inexact sum once the sums pass 2**24 or 2**53."""
    import scipy.sparse as sp

    rng = np.random.default_rng(7)
    w = 2 * rng.integers(-127, 128, (5, 300))
    presyn = rng.integers(-presyn_peak, presyn_peak + 1, (2, 3, 300), dtype=np.int64)
    presyn[0, 0, :] = presyn_peak  # the largest sums: every input at its peak
    want = np.einsum("oi,...i->...o", w.astype(object), presyn.astype(object))
    for exp in (-3, 0, 4):
        got = fx.dense_output(sp.csr_matrix(w) if sparse else w, exp, presyn)
        expected = np.vectorize(lambda v: int(v) << exp if exp >= 0 else int(v) >> -exp)(want)
        assert got.dtype == np.int64 and got.shape == (2, 3, 5)
        np.testing.assert_array_equal(got, expected.astype(np.int64))


# --------------------------------------------------------------------------- edges (mutation testing)
# Each test below kills mutants that scripts/mutation.sh found surviving (docs/testing.md).


def test_overflow_counts_only_the_elements_it_changes_at_both_ends() -> None:
    lo, hi = fx.STATE_MIN, fx.STATE_MAX
    out, events = fx.overflow(A([lo, hi + 5], np.int64), "saturate")  # lo itself is kept
    assert out.tolist() == [lo, hi] and events == 1
    out, events = fx.overflow(A([hi, lo - 1], np.int64), "saturate")  # hi itself is kept
    assert out.tolist() == [hi, lo] and events == 1
    out, events = fx.overflow(A([lo + 1, hi, lo], np.int64), "saturate-symmetric")
    assert out.tolist() == [lo + 1, hi, lo + 1] and events == 1
    out, events = fx.overflow(A([hi + 1, hi + 6], np.int64), "wrap")  # Lava keeps 2**23 itself
    assert out.tolist() == [hi + 1, lo + 5] and events == 1
    for mode in ("saturate", "saturate-symmetric", "wrap"):
        empty = np.zeros((0, 3), np.int64)
        out, events = fx.overflow(empty, mode)
        assert out.shape == (0, 3) and events == 0, mode
    with pytest.raises(ValueError, match="unknown overflow mode 'clip'"):
        fx.overflow(A([hi + 1]), "clip")


def test_dense_output_of_empty_matrices_and_batches() -> None:
    assert fx.dense_output(np.zeros((0, 4), np.int64), 0, np.ones((2, 4), np.int64)).shape == (2, 0)
    got = fx.dense_output(np.zeros((3, 4), np.int64), 2, np.ones((2, 4), np.int64))
    assert got.tolist() == [[0, 0, 0]] * 2 and got.dtype == np.int64
    assert fx.dense_output(A([[2, 4]]), 0, np.zeros((0, 2), np.int64)).shape == (0, 1)
    assert fx.dense_output(A([[2, 4]]), 0, np.zeros((3, 5, 2), np.int64)).shape == (3, 5, 1)


def test_dense_output_is_exact_just_past_the_float32_and_float64_limits() -> None:
    """Sums that float32 (or float64) cannot hold, under bounds just past 2**24 (2**53):
    odd integers above 2**24 are not float32 values, 2**53 + 1 is not a float64 value."""
    rng = np.random.default_rng(1)
    # all-positive weights and inputs: every partial sum grows, far past 2**24
    w = rng.integers(200, 255, (3, 4096))
    x = rng.integers(200, 256, (2, 4096))
    want = (w.astype(object) @ x.T.astype(object)).T
    np.testing.assert_array_equal(fx.dense_output(w, 0, x), want.astype(np.int64))
    # bound 255 * 99_999 < 2**25, sum 25_499_745 > 2**24 and odd
    got = fx.dense_output(np.ones((1, 99_999), np.int64), 0, np.full((1, 99_999), 255))
    assert got.tolist() == [[25_499_745]]
    # bound 2 * (2**53 - 1) < 2**54, sum 2**53 + 1
    got = fx.dense_output(A([[1, 1]]), 0, A([[2**53 - 1, 2]], np.int64))
    assert got.tolist() == [[2**53 + 1]]


def test_layer_params_carries_every_field_of_the_node() -> None:
    node = SimpleNamespace(
        mu_d=A([[1]]),
        mu_s=A([[2]]),
        lam_d=A([[4096]]),
        lam_s=A([[4]]),
        bias=A([5, 6]),
        theta=np.float64(640.0),
        profile="loihi-lif",
        reset="set",
        reset_value=np.int64(-3),
        threshold_test=">",
        reset_timing="next-step",
        v_d_init=np.int64(7),
        v_s_init=np.int64(9),
        max_spikes=np.int64(3),
        v_s_min=np.int64(-2),
    )
    p = fx.layer_params(node, convert=lambda a: 10 * a)
    assert [p.mu_d.tolist(), p.mu_s.tolist(), p.lam_d.tolist(), p.lam_s.tolist(), p.bias.tolist()] == [
        [[10]],
        [[20]],
        [[40960]],
        [[40]],
        [50, 60],
    ]
    assert (p.theta, p.reset_value, p.v_d_init, p.v_s_init) == (640, -3, 7, 9)
    assert (p.max_spikes, p.v_s_min) == (3, -2)
    assert all(
        type(v) is int for v in (p.theta, p.reset_value, p.v_d_init, p.v_s_init, p.max_spikes, p.v_s_min)
    )
    assert (p.profile.name, p.reset, p.threshold_test, p.reset_timing) == (
        "loihi-lif",
        "set",
        ">",
        "next-step",
    )
    assert p.initial_values() == (7, 9)
    v_d, v_s = p.initial_state((2, 3))
    assert v_d.tolist() == [[7] * 3] * 2 and v_s.tolist() == [[9] * 3] * 2
    assert v_d.dtype == v_s.dtype == np.int64
    default = fx.layer_params(
        SimpleNamespace(**{**vars(node), "v_s_init": None, "theta": 641, "v_s_min": None})
    )
    assert default.v_s_init is None and default.initial_values() == (7, 320)  # theta // 2
    assert default.v_s_min is None
    assert default.mu_d is node.mu_d  # no convert: the arrays themselves


def _lmh_params(**rules) -> fx.LMHFixedParams:
    one = A([[4096]])
    return fx.LMHFixedParams(A([[0]]), A([[0]]), one, one, theta=10, bias=A([0, 0]), **rules)


def test_lmh_step_reads_s_prev_only_under_next_step_timing() -> None:
    v_d, v_s, a_in = A([[0, 0]]), A([[4, 4]]), A([[0, 7]])  # m_s = 4, then 11 >= 10
    prev = A([[True, False]])
    for reset in ("set", "subtract"):
        p = _lmh_params(reset=reset, reset_value=-5)
        _, v_s_new, spikes, _ = fx.lmh_step(p, 1, v_d, v_s, a_in, prev)  # same-step: prev ignored
        assert spikes.tolist() == [[False, True]]
        assert v_s_new.tolist() == [[4, -5 if reset == "set" else 1]], reset
    p = _lmh_params(reset="set", reset_value=-5, reset_timing="next-step")
    _, v_s_new, spikes, _ = fx.lmh_step(p, 1, v_d, v_s, a_in, prev)
    assert v_s_new.tolist() == [[-5, 11]] and spikes.tolist() == [[False, True]]
    p = _lmh_params(reset="subtract", reset_timing="next-step")
    _, v_s_new, spikes, _ = fx.lmh_step(p, 1, v_d, v_s, a_in, prev)
    assert v_s_new.tolist() == [[-6, 11]] and spikes.tolist() == [[False, True]]


def test_quantize_factor_gives_int64_codes() -> None:
    assert fx.quantize_factor(A([0.25, -0.25])).dtype == np.int64
    assert fx.quantize_factor(1.25, offset=1.0).dtype == np.int64
    assert fx.quantize_multiplier(A([1.25]), 2048, 6143).dtype == np.int64


PROFILE_RULE_SETS = [
    (name, reset, test, timing)
    for name, prof in (("lmh", fx.LMH_PROFILE), ("loihi-lif", fx.get_profile("loihi-lif")))
    for reset in prof.resets
    for test in prof.threshold_tests
    for timing in prof.reset_timings
]


@pytest.mark.parametrize("profile, reset, test, timing", PROFILE_RULE_SETS)
def test_int64_torch_tensors_give_the_numpy_integers(profile, reset, test, timing) -> None:
    """The semantics run on int64 torch tensors too (any device): the same integers, spikes
    and overflow counts as on numpy, tensors in and tensors out, with states driven past
    both 24-bit ends (saturation and wrap)."""
    import torch

    rng = np.random.default_rng(4)
    n, lif = 6, profile == "loihi-lif"
    factors = (
        dict(mu_d=A([[3000]]), mu_s=A([[0]]), lam_d=A([[4096]]), lam_s=A([[4000]]))
        if lif
        else dict(mu_d=A([[-1500] * n]), mu_s=A([[2047]]), lam_d=A([[6143]]), lam_s=A([[2500] * n]))
    )
    p = fx.LMHFixedParams(
        **factors,
        theta=1 << 20,
        bias=rng.integers(-(1 << 18), 1 << 18, n),
        profile=fx.get_profile(profile),
        reset=reset,
        reset_value=0 if lif else -77,
        threshold_test=test,
        reset_timing=timing,
    )
    as_t = lambda a: torch.as_tensor(np.asarray(a, np.int64))
    tp = fx.layer_params(
        SimpleNamespace(**{**vars(p), "profile": profile, "v_s_init": p.v_s_init}), convert=as_t
    )
    v_d, v_s = p.initial_state((3, n))
    t_d, t_s, prev, t_prev, events = as_t(v_d), as_t(v_s), None, None, 0
    for t in range(6):
        a_in = rng.integers(-(1 << 23), 1 << 23, (3, n)) * (t % 3)
        v_d, v_s, s, e = fx.lmh_step(p, t, v_d, v_s, a_in, prev)
        t_d, t_s, t_spk, t_e = fx.lmh_step(tp, t, t_d, t_s, as_t(a_in), t_prev)
        assert all(isinstance(a, torch.Tensor) for a in (t_d, t_s, t_spk))
        assert t_d.tolist() == v_d.tolist() and t_s.tolist() == v_s.tolist() and t_spk.tolist() == s.tolist()
        assert t_e == e
        prev, t_prev, events = s, t_spk, events + e
    assert events > 0  # states left 24 bits
    # the building blocks on tensors, at the edges
    x = as_t([fx.STATE_MIN - 1, fx.STATE_MIN, 0, fx.STATE_MAX, fx.STATE_MAX + 1])
    for mode in ("saturate", "saturate-symmetric", "wrap"):
        out, count = fx.overflow(x, mode)
        want, want_count = fx.overflow(x.numpy(), mode)
        assert isinstance(out, torch.Tensor) and out.tolist() == want.tolist() and count == want_count
    clipped, mask = fx.saturate(x)
    assert isinstance(clipped, torch.Tensor)
    assert clipped.tolist() == [fx.STATE_MIN, fx.STATE_MIN, 0, fx.STATE_MAX, fx.STATE_MAX]
    assert mask.tolist() == [True, False, False, False, True]
    assert fx.overflow(as_t(np.zeros(0)), "saturate")[1] == 0
    f, v = as_t([4095, -4095, 2048]), as_t([-(2**23), 2**23 - 1, -3])
    got = fx.mul_shift(f, v)
    assert isinstance(got, torch.Tensor) and got.tolist() == fx.mul_shift(f.numpy(), v.numpy()).tolist()
    for rounding in ("half-up", "floor", "toward-zero"):
        got = fx.product(f, v, rounding)
        assert isinstance(got, torch.Tensor)
        assert got.tolist() == fx.product(f.numpy(), v.numpy(), rounding).tolist(), rounding


def test_input_ranges_and_signed_quantisation() -> None:
    assert fx.input_range() == (0, 255) and fx.input_range(4) == (0, 15)
    assert fx.input_range(signed=True) == (-127, 127) and fx.input_range(4, signed=True) == (-7, 7)
    x = A([-2.0, -0.5, -0.375, 0.375, 2.0])
    assert fx.quantize_input(x, 100.0, signed=True).tolist() == [-127, -50, -37, 38, 127]
    assert fx.quantize_input(x, 100.0).tolist() == [0, 0, 0, 38, 200]
    # float32 pixels are scaled in float64: 0.60980391502 * 255 = 155.49999833 -> 155
    # (in float32 arithmetic the product rounds to 155.5 -> 156)
    assert fx.quantize_input(np.float32([0.6098039150238037]), 255.0).tolist() == [155]


def test_quantize_multiplier_clips_to_the_profile_range() -> None:
    assert fx.quantize_multiplier(A([0.1, 1.0, 1.25, 1.9]), 2048, 6143).tolist() == [2048, 4096, 5120, 6143]


def test_product_default_rounding_and_errors() -> None:
    assert fx.product(A([1]), A([2048])).tolist() == [1]  # half up by default: 0.5 -> 1
    assert fx.product(A([1]), A([-2048])).tolist() == [0]  # -0.5 -> 0
    with pytest.raises(ValueError, match="unknown rounding 'up'"):
        fx.product(A([1]), A([1]), "up")


def test_product_with_one_tensor_operand_gives_a_tensor() -> None:
    """A tensor factor with a numpy value, or a Python int factor with a tensor value."""
    import torch

    f, v = A([4095, -3]), A([-4095, 2049])
    got = fx.product(torch.as_tensor(f), v, "toward-zero")
    assert isinstance(got, torch.Tensor) and got.tolist() == fx.product(f, v, "toward-zero").tolist()
    got = fx.product(4095, torch.as_tensor(v), "floor")
    assert isinstance(got, torch.Tensor) and got.tolist() == fx.product(4095, v, "floor").tolist()


def test_conv_output_is_exact_past_the_float32_limit_and_refuses_past_float64() -> None:
    rng = np.random.default_rng(2)
    kernel = rng.integers(200, 255, (2, 64, 3, 3))  # all positive: sums ~ 3e7 > 2**24
    x = rng.integers(200, 256, (1, 64 * 5 * 5))
    cols = np.lib.stride_tricks.sliding_window_view(x.reshape(64, 5, 5), (3, 3), axis=(1, 2))
    want = np.einsum("oikl,ihwkl->ohw", kernel.astype(object), cols.astype(object)).reshape(1, -1)
    got = fx.conv_output(kernel, 0, x, (64, 5, 5), (1, 1), (0, 0))
    np.testing.assert_array_equal(got, want.astype(np.int64))
    # 1 x 1 conv over 99_999 channels: bound 255 * 99_999 < 2**25, sum 25_499_745 odd > 2**24
    got = fx.conv_output(
        np.ones((1, 99_999, 1, 1), np.int64), 0, np.full((1, 99_999), 255), (99_999, 1, 1), (1, 1), (0, 0)
    )
    assert got.tolist() == [[25_499_745]]
    with pytest.raises(OverflowError, match="convolution sums up to 1.8e\\+16 exceed exact float64 range"):
        fx.conv_output(np.ones((1, 1, 1, 2), np.int64), 0, A([[2**53 - 1, 2]]), (1, 1, 2), (1, 1), (0, 0))


def test_profile_description_rules_and_lookup() -> None:
    from lmh_deploy.errors import UserError
    from lmh_deploy.semantics.profiles import LOIHI_LIF_PROFILE, LMH_PROFILE, get_profile

    assert LMH_PROFILE.as_dict() == {
        "name": "lmh",
        "rounding": "half-up",
        "overflow_v_d": "saturate",
        "overflow_v_s": "saturate",
        "factor_encoding": "lmh",
        "factor_ranges": {
            "mu_d": [-2048, 2047],
            "mu_s": [-2048, 2047],
            "lam_d": [2048, 6143],
            "lam_s": [2048, 6143],
        },
        "input_shift": 0,
        "bias_to": "dendrite",
        "fixed_weight_exp": None,
        "fixed_bias_exp": None,
        "current_headroom_bits": 20,
        "resets": ["subtract", "set"],
        "threshold_tests": [">=", ">"],
        "reset_timings": ["same-step", "next-step"],
        "summary": LMH_PROFILE.summary,
    }
    lif = LOIHI_LIF_PROFILE.as_dict()
    assert (lif["rounding"], lif["overflow_v_d"], lif["overflow_v_s"]) == (
        "toward-zero",
        "wrap",
        "saturate-symmetric",
    )
    assert (lif["input_shift"], lif["bias_to"], lif["fixed_weight_exp"], lif["fixed_bias_exp"]) == (
        6,
        "soma",
        0,
        6,
    )
    assert lif["factor_ranges"]["lam_s"] == [1, 4096] and lif["current_headroom_bits"] == 22
    assert LOIHI_LIF_PROFILE.factor_range("lam_s") == (1, 4096)
    # cuba: lmh with mu_d and lam_s - 4096 as signed 13-bit codes (lam_s's top stays lmh's)
    cuba = get_profile("cuba").as_dict()
    assert cuba["factor_ranges"] == {
        "mu_d": [-4096, 4095],
        "mu_s": [-2048, 2047],
        "lam_d": [2048, 6143],
        "lam_s": [0, 6143],
    }
    assert {
        k: v for k, v in cuba.items() if k not in ("name", "factor_encoding", "factor_ranges", "summary")
    } == {
        k: v
        for k, v in LMH_PROFILE.as_dict().items()
        if k not in ("name", "factor_encoding", "factor_ranges", "summary")
    }
    with pytest.raises(KeyError, match="theta"):
        LOIHI_LIF_PROFILE.factor_range("theta")
    ok = ("set", ">", "same-step", 0, 0, 0)
    assert LOIHI_LIF_PROFILE.rule_problem(*ok) is None
    assert LMH_PROFILE.rule_problem("subtract", ">=", "next-step", -3, 5, 7) is None
    problems = {
        ("subtract", ">", "same-step", 0, 0, 0): "reset 'subtract' (profile loihi-lif supports set)",
        ("set", ">=", "same-step", 0, 0, 0): "threshold test '>=' (profile loihi-lif supports >)",
        ("set", ">", "next-step", 0, 0, 0): "reset timing 'next-step' (profile loihi-lif supports same-step)",
        ("set", ">", "same-step", 5, 0, 0): "reset value 5 (profile loihi-lif resets to 0)",
        ("set", ">", "same-step", 0, 3, 0): "v_d_init 3 (profile loihi-lif starts every state at 0)",
        ("set", ">", "same-step", 0, 0, -2): "v_s_init -2 (profile loihi-lif starts every state at 0)",
    }
    for rules, message in problems.items():
        assert LOIHI_LIF_PROFILE.rule_problem(*rules) == message
    assert LMH_PROFILE.rule_problem("reset", ">", "same-step", 0, 0, 0) == (
        "reset 'reset' (profile lmh supports subtract | set)"
    )
    assert LMH_PROFILE.rule_problem("set", "<", "same-step", 0, 0, 0) == (
        "threshold test '<' (profile lmh supports >= | >)"
    )
    assert LMH_PROFILE.rule_problem("set", ">", "later", 0, 0, 0) == (
        "reset timing 'later' (profile lmh supports same-step | next-step)"
    )
    assert get_profile("loihi-lif") is LOIHI_LIF_PROFILE
    with pytest.raises(
        UserError, match=r"^unknown numeric profile 'loihi'; choose one of lmh, loihi-lif, cuba$"
    ):
        get_profile("loihi")


def test_spike_count_of_int64_arrays_and_tensors_by_hand() -> None:
    """theta 3, K 5 on m_s = -4, 0, 2, 3, 5, 6, 7, 40:
    '>=': clip(floor(m_s / 3), 0, 5) = clip(-2, 0, 0, 1, 1, 2, 2, 13) = 0, 0, 0, 1, 1, 2, 2, 5;
    '>' : clip(ceil(m_s / 3) - 1, 0, 5) = clip(-2, -1, 0, 0, 1, 1, 2, 13) = 0, 0, 0, 0, 1, 1, 2, 5
    (an exact multiple, 3 or 6, counts one fewer). Numpy and torch alike, int64, the input's type."""
    import torch

    m_s = A([-4, 0, 2, 3, 5, 6, 7, 40])
    want = {">=": [0, 0, 0, 1, 1, 2, 2, 5], ">": [0, 0, 0, 0, 1, 1, 2, 5]}
    for test, expected in want.items():
        got = fx.spike_count(m_s, 3, test, 5)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64 and got.tolist() == expected
        got_t = fx.spike_count(torch.from_numpy(m_s), 3, test, 5)
        assert isinstance(got_t, torch.Tensor) and got_t.dtype == torch.int64 and got_t.tolist() == expected
    # float states (a float tensor or array) count as int64 too
    assert fx.spike_count(torch.tensor([7.0, 2.5]), 3, ">=", 5).dtype == torch.int64
    assert fx.spike_count(A([7.0, 2.5]), 3, ">=", 5).tolist() == [2, 0]
    # K = 1: one bool per neuron
    assert fx.spike_count(m_s, 3, ">", 1).tolist() == [False] * 4 + [True] * 4
    assert fx.spike_count(m_s, 3, ">=", 1).tolist() == [False] * 3 + [True] * 5


def test_per_neuron_values_stored_as_one_where_all_are_equal() -> None:
    """``per_neuron_or_one``: a scalar passes unchanged; an array whose elements are all equal
    becomes that one Python number (one element or several, 1-D or 2-D); else its 1-D array.
    ``initial_ints``: an int for one value, an int64 array per neuron."""
    assert fx.per_neuron_or_one(0.5) == 0.5 and fx.per_neuron_or_one(np.int64(-3)) == -3
    for same, want in ((A([3, 3, 3]), 3), (A([7]), 7), (A([[2.5], [2.5]]), 2.5)):
        got = fx.per_neuron_or_one(same)
        assert got == want and type(got) is type(want)
    differ = fx.per_neuron_or_one(A([[1], [2], [2]]))
    assert differ.shape == (3,) and differ.tolist() == [1, 2, 2]
    assert fx.per_neuron_or_one(A([])).shape == (0,)
    assert fx.initial_ints(np.float64(3.0)) == 3 and type(fx.initial_ints(np.float64(3.0))) is int
    ints = fx.initial_ints(A([7.0, -2.0]))
    assert ints.dtype == np.int64 and ints.tolist() == [7, -2]
