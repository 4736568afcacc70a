"""Tests of lmh_deploy.semantics.integer, the single definition of the integer semantics.

Hand examples carry their expected integers literally (worked out in the comments),
so a change of rounding, saturation or update order fails here first.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmh_deploy.semantics import integer as fx

A = np.array

# --------------------------------------------------------------------------- constants


def test_format_constants() -> None:
    assert (fx.STATE_MIN, fx.STATE_MAX) == (-8388608, 8388607)  # 24-bit signed
    assert (fx.FACTOR_MIN, fx.FACTOR_MAX, fx.FACTOR_ONE) == (-2048, 2047, 4096)  # 12-bit / 4096
    assert (fx.WEIGHT_MANT_MAX, fx.WEIGHT_LAVA_SCALE, fx.INPUT_MAX) == (127, 2, 255)


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
