"""Golden vectors: expected values worked out by hand from docs/fixed-point.md (section
"Numeric profiles"), not computed by the code under test. Every row says how it was derived.

R_half-up(x) = (x + 2048) >> 12 (floor shift), R_toward-zero(x) = sign(x) * (|x| >> 12),
R_floor(x) = x >> 12, with x = f * v.
"""

from __future__ import annotations

import numpy as np
import pytest

from lmh_deploy.ir import LMH, Dense, Graph, Input, IRError, Readout
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import get_profile

A = np.asarray

# f, v, half-up, toward-zero, floor                       x = f*v, x / 4096
ROUNDING = [
    (2048, 1, 1, 0, 0),  # 2048: +0.5, tie: half-up 1, toward zero 0, floor 0
    (2048, -1, 0, 0, -1),  # -2048: -0.5, tie: half-up 0 (up), toward zero 0, floor -1
    (2048, 3, 2, 1, 1),  # 6144: +1.5, tie
    (2048, -3, -1, -1, -2),  # -6144: -1.5, tie: half-up -1, toward zero -1, floor -2
    (-2048, 5, -2, -2, -3),  # -10240: -2.5 (negative factor), tie: up -2, tz -2, floor -3
    (-2048, -5, 3, 2, 2),  # 10240: +2.5: half-up 3
    (2047, 2, 1, 0, 0),  # 4094: 0.9995: half-up (4094+2048)>>12 = 1
    (1, -1, 0, 0, -1),  # -1: -0.0002
    (-1, 2048, 0, 0, -1),  # -2048: tie from the other operand
    (-1, 2049, -1, 0, -1),  # -2049: just below -0.5: half-up (-1)>>12 = -1
    (4096, -8388608, -8388608, -8388608, -8388608),  # factor one is exact at the state minimum
    (6143, 4096, 6143, 6143, 6143),  # lmh's largest lambda code times 4096: exact
    (4095, -4097, -4096, -4095, -4096),  # -16777215: -4095.99976: up -4096, tz -4095, floor -4096
]


@pytest.mark.parametrize("f, v, half_up, toward_zero, floor", ROUNDING)
def test_product_rounding_golden(f: int, v: int, half_up: int, toward_zero: int, floor: int) -> None:
    assert int(fx.product(A(f), A(v), "half-up")) == half_up
    assert int(fx.product(A(f), A(v), "toward-zero")) == toward_zero
    assert int(fx.product(A(f), A(v), "floor")) == floor


# x, saturate (lmh: [-2**23, 2**23-1]), saturate-symmetric (loihi-lif v: +-(2**23-1)),
# wrap (loihi-lif u: x - 2**24 where x > 2**23, then x + 2**24 where that is <= -2**23)
OVERFLOW = [
    (8388607, 8388607, 8388607, 8388607),
    (8388608, 8388607, 8388607, 8388608),  # 2**23: wrap keeps it (Lava's '>' test)
    (8388609, 8388607, 8388607, -8388607),  # 2**23 + 1 - 2**24
    (-8388607, -8388607, -8388607, -8388607),
    (-8388608, -8388608, -8388607, 8388608),  # -2**23: symmetric clips, wrap adds 2**24
    (-8388613, -8388608, -8388607, 8388603),  # -2**23 - 5 + 2**24
    (0, 0, 0, 0),
]


@pytest.mark.parametrize("x, sat, sat_sym, wrap", OVERFLOW)
def test_overflow_golden_at_both_ends(x: int, sat: int, sat_sym: int, wrap: int) -> None:
    for mode, want in (("saturate", sat), ("saturate-symmetric", sat_sym), ("wrap", wrap)):
        out, events = fx.overflow(A([x], np.int64), mode)
        assert int(out[0]) == want, mode
        assert events == int(want != x), mode


# ----------------------------------------------------------------------------- full steps
def _params(
    profile: str, *, theta: int, mu_d=0, mu_s=0, lam_d=4096, lam_s=4096, bias=0, **rules
) -> fx.LMHFixedParams:
    col = lambda v: A([[v]], np.int64)
    return fx.LMHFixedParams(
        mu_d=col(mu_d),
        mu_s=col(mu_s),
        lam_d=col(lam_d),
        lam_s=col(lam_s),
        theta=theta,
        bias=A([bias], np.int64),
        profile=get_profile(profile),
        **rules,
    )


def _steps(p: fx.LMHFixedParams, v_d: int, v_s: int, inputs: list[int]) -> list[tuple]:
    d, s, prev, out = A([[v_d]]), A([[v_s]]), None, []
    for t, a in enumerate(inputs):
        d, s, spike, events = fx.lmh_step(p, t, d, s, A([[a]]), prev)
        prev = spike
        out.append((int(d[0, 0]), int(s[0, 0]), bool(spike[0, 0]), events))
    return out


# lmh profile, identity factors, theta = 100, v_s = 50, inputs 50 then 0:
#   step 0: v_d = 0 + 50 = 50; m_s = 50 + 50 = 100 (threshold equality)
#   step 1: v_d = R(0 * 50) + 0 = 0; m_s = v_s + 0 (next-step timing first applies the reset)
RESET_RULES = [
    # reset, test, timing, reset_value -> (v_d, v_s, spike, events) per step
    ("subtract", ">=", "same-step", 0, [(50, 0, True, 0), (0, 0, False, 0)]),
    ("subtract", ">", "same-step", 0, [(50, 100, False, 0), (0, 100, False, 0)]),
    ("set", ">=", "same-step", -7, [(50, -7, True, 0), (0, -7, False, 0)]),
    ("set", ">", "same-step", -7, [(50, 100, False, 0), (0, 100, False, 0)]),
    # next-step: v_s keeps 100 after the spike; step 1: 100 - 100*1 = 0 / set to -7
    ("subtract", ">=", "next-step", 0, [(50, 100, True, 0), (0, 0, False, 0)]),
    ("set", ">=", "next-step", -7, [(50, 100, True, 0), (0, -7, False, 0)]),
    # '>' with next-step: no spike at step 0, so nothing to apply at step 1
    ("subtract", ">", "next-step", 0, [(50, 100, False, 0), (0, 100, False, 0)]),
]


@pytest.mark.parametrize("reset, test, timing, reset_value, expected", RESET_RULES)
def test_reset_rules_golden(reset, test, timing, reset_value, expected) -> None:
    p = _params(
        "lmh", theta=100, reset=reset, threshold_test=test, reset_timing=timing, reset_value=reset_value
    )
    assert _steps(p, 0, 50, [50, 0]) == expected


def test_lmh_profile_full_step_golden() -> None:
    """mu_d = -2048, mu_s = 2047, lam_d = 6143, lam_s = 2048, bias 3, theta 1000.

    v_d = 10, v_s = 501, a = 7:
      v_d' = R(-2048*10) + R(2047*501) + 7 + 3 = R(-20480) + R(1025547) + 10
           = (-20480+2048)>>12 = -5 ; (1025547+2048)>>12 = 250 (1027595/4096 = 250.87) -> 255
      m_s  = R(2048*501) + R(6143*255) = (1026048+2048)>>12 = 251 ; (1566465+2048)>>12 = 382
           = 633 < 1000: no spike, v_s' = 633.
    """
    p = _params("lmh", theta=1000, mu_d=-2048, mu_s=2047, lam_d=6143, lam_s=2048, bias=3)
    assert _steps(p, 10, 501, [7]) == [(255, 633, False, 0)]


def test_lmh_profile_saturates_and_counts() -> None:
    """Identity factors, theta 2**23 - 1, v_s = 2**23 - 10, a = 2**23: v_d saturates to 2**23 - 1
    (1 event); m_s = (2**23 - 10) + (2**23 - 1) saturates to 2**23 - 1 (1 event) >= theta:
    spike, v_s' = 0."""
    p = _params("lmh", theta=8388607)
    assert _steps(p, 0, 8388597, [8388608]) == [(8388607, 0, True, 2)]


def test_loihi_lif_full_steps_golden() -> None:
    """loihi-lif: u' = wrap(tz(mu_d u) + (a << 6)); v' = clip_sym(tz(lam_s v) + u' + bias);
    spike on v' > theta; v set to 0. mu_d = 2048, lam_s = 3072, theta = 100 << 6 = 6400.

    step 0 (u = -101, v = 1001, a = 7, bias 64):
      u' = tz(-206848 / 4096 = -50.5) + 448 = -50 + 448 = 398
      v' = tz(3075072 / 4096 = 750.75) + 398 + 64 = 750 + 462 = 1212: no spike
    step 1 (a = 93): u' = tz(2048*398/4096 = 199) + 5952 = 6151
      v' = tz(3072*1212/4096 = 909) + 6151 + 64 = 7124 > 6400: spike, v = 0
    """
    p = _params(
        "loihi-lif", theta=6400, mu_d=2048, lam_s=3072, bias=64, reset="set", threshold_test=">", v_s_init=0
    )
    assert _steps(p, -101, 1001, [7, 93]) == [(398, 1212, False, 0), (6151, 0, True, 0)]


def test_loihi_lif_threshold_equality_and_wrap_golden() -> None:
    """theta = 6400: v' == 6400 does not spike ('>'), 6401 does. Then u wraps:
    u = 2**23 - 64 (mu_d = 4095: tz(4095*(2**23 - 64)/4096) = 8388543 - 2047.98.. -> 8386496),
    a = 40: + 2560 = 8389056 > 2**23 -> 8389056 - 2**24 = -8388160 (1 event)."""
    p = _params("loihi-lif", theta=6400, lam_s=4096, reset="set", threshold_test=">", v_s_init=0)
    assert _steps(p, 0, 0, [100]) == [(6400, 6400, False, 0)]
    p1 = _params("loihi-lif", theta=6400, lam_s=4096, bias=1, reset="set", threshold_test=">", v_s_init=0)
    assert _steps(p1, 0, 0, [100]) == [(6400, 0, True, 0)]
    p2 = _params("loihi-lif", theta=6400, mu_d=4095, lam_s=1, reset="set", threshold_test=">", v_s_init=0)
    u = 8388608 - 64
    assert int(fx.product(A(4095), A(u), "toward-zero")) == 8386496  # 34351447 .. by hand:
    # 4095 * 8388544 = 34351087680; / 4096 = 8386496.015 -> 8386496
    ((v_d, v_s, spike, events),) = _steps(p2, u, 0, [40])
    assert (v_d, events >= 1) == (-8388160, True)
    # v: tz(1 * 0) + (-8388160) + 0 = -8388160 (inside +-(2**23 - 1)): no spike
    assert (v_s, spike) == (-8388160, False)


# ----------------------------------------------------------------------------- factor codes
def _one_layer(**factors) -> Graph:
    node = {
        "mu_d": np.zeros((1, 1)),
        "mu_s": np.zeros((1, 1)),
        "lam_d": np.ones((1, 1)),
        "lam_s": np.ones((1, 1)),
        "reset": "set",
        "threshold_test": ">",
        "v_s_init": 0.0,
    }
    node.update({k: np.full((1, 1), v) for k, v in factors.items()})
    g = Graph(meta={"timesteps": 2})
    g.add("input", Input(shape=(2,)))
    g.add("dense0", Dense(weight=np.array([[1.0, -0.5], [0.25, 1.0]])), ("input",))
    g.add("lmh0", LMH(size=2, theta=1.0, bias=np.zeros(2), **node), ("dense0",))
    g.add("dense1", Dense(weight=np.eye(2)), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(2)), ("dense1",))
    return g


# profile, factor, value, code   (lmh: round(4096 v) within [-2048, 2047] / [2048, 6143], the
# closed top end stored as the largest code; loihi-lif: mu_d in [0, 4095] (du = 4095 - code),
# lam_s in [1, 4096] (dv = 4096 - code))
FACTOR_CODES = [
    ("lmh", "mu_d", -0.5, -2048),
    ("lmh", "mu_d", 0.5, 2047),
    ("lmh", "mu_s", 0.25, 1024),
    ("lmh", "lam_s", 0.5, 2048),
    ("lmh", "lam_s", 1.5, 6143),
    ("lmh", "lam_d", 1.25, 5120),
    ("loihi-lif", "mu_d", 0.0, 0),
    ("loihi-lif", "mu_d", 4095 / 4096, 4095),
    ("loihi-lif", "lam_s", 1 / 4096, 1),
    ("loihi-lif", "lam_s", 1.0, 4096),
    # cuba: lmh's codes, mu_d a signed 13-bit code [-4096, 4095] (the float IR holds mu_d >= -0.5;
    # no closed top end: mu_d = 1.0 is refused), lam_s in [0, 6143] (lam_s - 4096 a signed
    # 13-bit code; the float IR holds lam_s >= 0, so its bottom code 0 is reached from 0.0)
    ("cuba", "mu_d", 0.951229, 3896),
    ("cuba", "mu_d", 4095 / 4096, 4095),
    ("cuba", "mu_d", -0.5, -2048),
    ("cuba", "lam_s", 0.0, 0),
    ("cuba", "lam_s", 1 / 4096, 1),
    ("cuba", "lam_s", 0.3934, 1611),  # SpikingJelly tau 1.65: 1 - 1/1.65
    ("cuba", "lam_s", 2047.4 / 4096, 2047),
    ("cuba", "lam_s", 1.5, 6143),
]


@pytest.mark.parametrize("profile, factor, value, code", FACTOR_CODES)
def test_factor_codes_at_both_ends(profile: str, factor: str, value: float, code: int) -> None:
    q, _ = quantize_graph(_one_layer(**{factor: value}), profile)
    assert getattr(q.node("lmh0"), factor).tolist() == [[code]]


@pytest.mark.parametrize(
    "profile, factor, value",
    [
        ("lmh", "mu_d", 0.6),
        ("lmh", "lam_s", 0.3),
        ("lmh", "lam_s", 2047.4 / 4096),  # more than half a code below 2048 (cuba: 2047)
        ("cuba", "mu_d", 1.0),
        ("loihi-lif", "mu_d", 1.0),
        ("loihi-lif", "mu_d", -0.1),
        ("loihi-lif", "lam_s", 0.0),
        ("loihi-lif", "mu_s", 0.1),
    ],
)
def test_factor_codes_outside_the_profile_are_refused(profile: str, factor: str, value: float) -> None:
    with pytest.raises(
        IRError,
        match=rf"lmh0: numeric profile {profile} cannot express "
        rf"factor {factor}=",
    ):
        quantize_graph(_one_layer(**{factor: value}), profile)


# Graded spikes (max_spikes K = 3): lmh profile, identity factors, theta = 100, v_s = 0.
#   '>=' count = clip(floor(m / 100), 0, 3); '>' count = clip(ceil(m / 100) - 1, 0, 3)
#   a = 250: m = 250 -> >= 2 (v_s 50), > 2 (v_s 50)
#   a = 30:  m = 80  -> 0 (v_s 80)
#   a = 420: m = 500 -> >= 5 capped 3 (v_s 200); > 4 capped 3 (v_s 200)
#   a = -50: m = 150 -> 1 (v_s 50)
#   a = 50:  m = 100 -> >= 1 (v_s 0); > 0 (v_s 100: exactly one theta does not pass '>')
#   a = -300: m = -300 (or -200) -> 0 (no negative counts)
GRADED = [
    (">=", "subtract", [(250, 50, 2), (30, 80, 0), (420, 200, 3), (-50, 50, 1), (50, 0, 1), (-300, -300, 0)]),
    (
        ">",
        "subtract",
        [(250, 50, 2), (30, 80, 0), (420, 200, 3), (-50, 50, 1), (50, 100, 0), (-300, -200, 0)],
    ),
    # set reset to 0: any count > 0 sets v_s (250 -> 2 spikes, v_s 0; 30 -> 30; 420 -> 450: 3)
    (">=", "set", [(250, 0, 2), (30, 30, 0), (420, 0, 3), (-50, -50, 0), (50, 0, 0), (-300, -300, 0)]),
]


@pytest.mark.parametrize("test, reset, expected", GRADED)
def test_graded_spike_counts_golden(test: str, reset: str, expected: list[tuple[int, int, int]]) -> None:
    p = _params("lmh", theta=100, threshold_test=test, reset=reset, v_s_init=0, max_spikes=3)
    d, s = A([[0]]), A([[0]])
    for t, (a, v_s, count) in enumerate(expected):
        d, s, spikes, _ = fx.lmh_step(p, t, d, s, A([[a]]))
        assert spikes.dtype == np.int64
        assert (int(d[0, 0]), int(s[0, 0]), int(spikes[0, 0])) == (a, v_s, count), f"step {t}"


def test_soma_floor_golden() -> None:
    """v_s_min = -30 (sinabs's min_v_mem), identity factors, theta = 100, v_s = 0:
    a = -50: m = -50, no spike, v_s = max(-50, -30) = -30;  a = 20: m = -10 -> -10;
    a = 150: m = 140 -> 1 spike, v_s 40;  a = -100: m = -60 -> -30."""
    p = _params("lmh", theta=100, v_s_init=0, v_s_min=-30)
    d, s, out = A([[0]]), A([[0]]), []
    for t, a in enumerate([-50, 20, 150, -100]):
        d, s, spikes, _ = fx.lmh_step(p, t, d, s, A([[a]]))
        out.append((int(s[0, 0]), bool(spikes[0, 0])))
    assert out == [(-30, False), (-10, False), (40, True), (-30, False)]


# ----------------------------------------------------------------------------- signed 16-bit input
def signed_16bit_first_layer() -> Graph:
    """input (3, signed, 16 bits, x_max 2) -> dense (0.3, -0.2, 0.1) -> readout, two steps."""
    g = Graph(meta={"timesteps": 2})
    g.add("input", Input(shape=(3,), x_max=2.0, signed=True, bits=16))
    g.add("dense0", Dense(weight=np.array([[0.3, -0.2, 0.1]])), ("input",))
    g.add("readout", Readout(bias=np.zeros(1)), ("dense0",))
    return g


SIGNED_16BIT_X = np.array([[-2.0, 0.5, 1e-4]])
SIGNED_16BIT_TRACE = [[[-607206]], [[-607206]]]  # the readout's current at both steps


def test_signed_16bit_first_layer_current_golden() -> None:
    """The first layer's integer current from a signed 16-bit input (docs/fixed-point.md §5, §7),
    by hand. x_max = 2, 16 bits: levels 32767, scale 32767 / 2 = 16383.5;
    x = (-2, 0.5, 1e-4) -> floor(x * 16383.5 + 1/2) = (-32767, 8192, 2).
    W = (0.3, -0.2, 0.1): m = round(W / 0.3 * 127) = (127, -85, 42) (-84.67, 42.33).
    Worst case 2 * 32767 * (127 + 85 + 42) = 16645636; >> 4 = 1040352 <= 2**20 < its >> 3 =
    2080704: exponent -4, and 16645636 < 2**31 (Lava's int32 sum): the mantissas stay full.
    a = (2 * (127 * -32767 - 85 * 8192 + 42 * 2)) >> 4 = -9715290 >> 4 = floor(-607205.6) = -607206,
    and a / S with S = 2**(e + 1) * 127 / (0.3 * 2 / 32767) is -0.7004 (float: -0.69999).
    Lava gives the same trace: tests/test_signed_inputs.py."""
    from lmh_deploy.sim.simulator import simulate

    q, _ = quantize_graph(signed_16bit_first_layer())
    inp, dense = q.node("input"), q.node("dense0")
    assert (inp.bits, inp.signed, inp.scale) == (16, True, 16383.5)
    assert dense.weight_mant.tolist() == [[127, -85, 42]] and dense.weight_exp == -4
    x_int = inp.quantize(SIGNED_16BIT_X)
    assert x_int.tolist() == [[-32767, 8192, 2]]
    sim = simulate(q, x_int, 2)
    assert sim.readout_trace.tolist() == SIGNED_16BIT_TRACE
    assert sim.logits.tolist() == [[-1214412]]
    s = q.node("readout").state_scale
    assert s == pytest.approx(2**-3 * 127 / (0.3 * 2 / 32767))
    assert -607206 / s == pytest.approx(-0.70039, abs=1e-5)
