"""Tests of lmh_deploy.passes.quantize: Lava-proof weights, error bounds, scales, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lmh_deploy  # noqa: F401  - Python 3.11 Lava import fix
from lava.utils.weightutils import clip_weights, determine_sign_mode, truncate_weights

from lmh_deploy.semantics import integer as fx
from lmh_deploy.ir.synapses import MANT_DTYPE
from lmh_deploy.ir import LMH, Dense, Graph, Input, IRError, QDense, QLMH, QReadout, Readout
from shared import plain_lmh, set_item
from lmh_deploy.passes.quantize import CURRENT_HEADROOM_BITS, quantize_graph, quantize_weights, state_scale


def _lava_dense_weights(w: np.ndarray) -> np.ndarray:
    """What Lava's bit-accurate Dense does to its weights on the first step (8-bit)."""
    mode = determine_sign_mode(w)
    return truncate_weights(clip_weights(w, mode, num_bits=8), mode, num_weight_bits=8)


# --------------------------------------------------------------------------- weights vs Lava


@pytest.mark.parametrize("sign", ["positive", "negative", "mixed"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lava_leaves_quantized_weights_unchanged(sign: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(17, 23)) * 0.3
    w = {"positive": np.abs(w), "negative": -np.abs(w), "mixed": w}[sign]
    wq = quantize_weights(w, max_presyn=1)
    lava_w = fx.WEIGHT_LAVA_SCALE * wq.mant
    assert np.abs(wq.mant).max() == fx.WEIGHT_MANT_MAX  # the full 8-bit range is used
    assert np.array_equal(_lava_dense_weights(lava_w), lava_w)
    if sign == "mixed":
        # Control: odd weights (the mantissa itself) lose their low bit in Lava's mixed mode,
        # which is why lmh-deploy sends 2*m.
        odd = wq.mant | 1
        assert not np.array_equal(_lava_dense_weights(odd), odd)


def test_lava_leaves_extreme_and_zero_weights_unchanged() -> None:
    for w in (
        np.array([[127, -127]]),
        np.array([[127, 0]]),
        np.array([[-127, 0]]),
        np.zeros((2, 3), np.int64),
        np.array([[1, -1, 0]]),
    ):
        lava_w = fx.WEIGHT_LAVA_SCALE * w
        assert np.array_equal(_lava_dense_weights(lava_w), lava_w)


# --------------------------------------------------------------------------- error and exponent


@pytest.mark.parametrize("max_presyn", [1, 255, 32767])
@pytest.mark.parametrize("shape", [(5, 3), (64, 200), (10, 784)])
def test_weight_error_and_exponent(max_presyn: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape) + max_presyn)
    w = rng.normal(size=shape) * 0.1
    wq = quantize_weights(w, max_presyn)
    assert np.abs(wq.mant / wq.scale - w).max() <= 0.5 / wq.scale * (1 + 1e-12)  # half an LSB
    worst = fx.WEIGHT_LAVA_SCALE * max_presyn * int(np.abs(wq.mant).sum(axis=1).max())
    limit = 2**CURRENT_HEADROOM_BITS
    assert limit <= 2**22  # at most half the 24-bit state range per step
    assert fx.WEIGHT_EXP_MIN <= wq.exp <= fx.WEIGHT_EXP_MAX
    # The worst-case current fits the headroom (a negative exponent floor-shifts the sum of
    # wide layers) and the unshifted sum Lava's int32 accumulator ...
    assert fx.shift_sum(worst, wq.exp) <= limit and worst <= fx.ACCUMULATOR_MAX
    # ... with the exponent the largest such one ...
    assert wq.exp == fx.WEIGHT_EXP_MAX or fx.shift_sum(worst, wq.exp + 1) > limit
    # ... and full 8-bit mantissas, unless even the smallest exponent could not hold them.
    full = fx.WEIGHT_MANT_MAX / np.abs(w).max()
    full_worst = fx.WEIGHT_LAVA_SCALE * max_presyn * int(np.abs(np.round(w * full)).sum(axis=1).max())
    fits = fx.shift_sum(full_worst, fx.WEIGHT_EXP_MIN) <= limit and full_worst <= fx.ACCUMULATOR_MAX
    assert wq.scale == pytest.approx(full) if fits else wq.scale < full


def test_exponent_hand_examples() -> None:
    h = CURRENT_HEADROOM_BITS
    # One weight: m = 127, worst = 2*1*127 = 254 = 2**8 - 2,
    # so 254 << (h - 8) <= 2**h < 254 << (h - 7).
    assert quantize_weights(np.array([[0.5]]), 1).exp == min(h - 8, fx.WEIGHT_EXP_MAX)
    # Graded input: worst = 2*255*127 = 64770 < 2**16, so exp = h - 16.
    assert quantize_weights(np.array([[0.5]]), 255).exp == h - 16
    # A wide graded layer is shifted down: worst = 2*255*127*784 = 50.8e6, and
    # 50.8e6 >> 6 = 793e3 <= 2**20 < 50.8e6 >> 5; a huge one stops at WEIGHT_EXP_MIN.
    assert quantize_weights(np.full((1, 784), 0.1), 255).exp == -6
    assert quantize_weights(np.full((1, 20000), 0.1), 255).exp == fx.WEIGHT_EXP_MIN
    # ... and its mantissas shrink until 2*255*sum|m| >> 8 <= 2**20: sum|m| <= 526344, 26 each.
    assert quantize_weights(np.full((1, 20000), 0.1), 255).mant.max() == 26
    # Signed 16-bit input (32767) into a 3x3x3 convolution's 27 weights of 127:
    # 2*32767*127*27 = 224712186 < 2**31, >> 8 = 877782 <= 2**20 < its >> 7: exp -8, full mantissas.
    wq = quantize_weights(np.full((1, 27), 0.5), 32767)
    assert (wq.exp, int(wq.mant.max())) == (-8, 127)
    # 33 such weights need 2*32767*4191 >> 8 = 1072916 > 2**20: mantissas shrink to 124
    # (124*33 = 4092 <= 4096, the most 2*32767*s >> 8 <= 2**20 allows).
    assert int(quantize_weights(np.full((1, 33), 0.5), 32767).mant.max()) == 124
    # The cap is WEIGHT_EXP_MAX for tiny ones.
    assert quantize_weights(np.zeros((2, 2)), 1).exp == fx.WEIGHT_EXP_MAX


def test_state_scale_definition() -> None:
    wq = quantize_weights(np.array([[0.5, -0.25]]), 1)
    assert state_scale(wq.scale, wq.exp) == 2 ** (wq.exp + 1) * wq.scale  # S = 2^(exp+1) * s_w


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=12),
        elements=st.one_of(st.just(0.0), st.floats(1e-6, 50), st.floats(-50, -1e-6)),
    ),
    st.sampled_from([1, 255]),
)
def test_quantize_weights_properties(w: np.ndarray, max_presyn: int) -> None:
    wq = quantize_weights(w, max_presyn)
    mant = wq.mant
    assert mant.dtype == MANT_DTYPE and np.abs(mant).max() <= fx.WEIGHT_MANT_MAX  # compact
    # round trip: within half an LSB of the layer's scale
    assert np.all(np.abs(mant / wq.scale - w) <= 0.5 / wq.scale * (1 + 1e-9))
    # sign preserved (small weights may become 0, never flip)
    assert np.all(mant * w >= 0)
    assert np.all(
        np.sign(mant[np.abs(w) * wq.scale > 0.5 + 1e-9]) == np.sign(w[np.abs(w) * wq.scale > 0.5 + 1e-9])
    )
    # monotone: a larger weight never gets a smaller mantissa
    order = np.argsort(w, axis=None, kind="stable")
    assert np.all(np.diff(mant.flatten()[order]) >= 0)
    # the 24-bit headroom holds
    worst = fx.WEIGHT_LAVA_SCALE * max_presyn * int(np.abs(mant).sum(axis=1).max())
    assert worst << wq.exp <= 2**CURRENT_HEADROOM_BITS or wq.exp == 0


# --------------------------------------------------------------------------- whole graphs


def _float_graph(
    *,
    theta: float = 1.0,
    weight: np.ndarray | None = None,
    mu_d: float = 0.1,
    lam_s: float = 0.9,
    bias: float = 0.05,
) -> Graph:
    rng = np.random.default_rng(7)
    g = Graph(meta={"timesteps": 4})
    g.add("input", Input(shape=(6,), x_max=2.0))
    g.add("dense0", Dense(weight=rng.normal(size=(5, 6)) if weight is None else weight), ("input",))
    ones = np.ones((1, 1))
    g.add(
        "lmh0",
        LMH(
            size=5,
            theta=theta,
            mu_d=mu_d * ones,
            mu_s=-0.2 * ones,
            lam_d=1.2 * ones,
            lam_s=lam_s * ones,
            bias=np.full(5, bias),
        ),
        ("dense0",),
    )
    g.add("dense1", Dense(weight=rng.normal(size=(3, 5))), ("lmh0",))
    g.add("readout", Readout(bias=np.array([0.1, -0.2, 0.3])), ("dense1",))
    return g


def test_quantize_graph_scales_and_report() -> None:
    g = _float_graph(theta=1.5)
    q, report = quantize_graph(g)
    assert [n.kind for _, n in q.items()] == ["q_input", "q_dense", "q_lmh", "q_dense", "q_readout"]
    assert q.node("input").scale == 255 / 2.0
    d0, l0, d1, ro = (q.node(n) for n in ("dense0", "lmh0", "dense1", "readout"))
    assert isinstance(d0, QDense) and d0.graded and not d1.graded
    assert isinstance(l0, QLMH) and isinstance(ro, QReadout)
    s0 = 2 ** (d0.weight_exp + 1) * d0.weight_scale
    assert l0.state_scale == pytest.approx(s0)
    assert l0.theta == round(1.5 * s0)
    assert np.array_equal(l0.bias, np.round(np.full(5, 0.05) * s0).astype(np.int64))
    assert l0.mu_d.tolist() == [[round(0.1 * 4096)]] and l0.lam_s.tolist() == [[4096 - 410]]
    # dense0 quantises W * (x_max / 255) (current per input LSB); dense1 quantises W * theta.
    assert d0.weight_scale == pytest.approx(127 / np.abs(g.node("dense0").weight * 2 / 255).max())
    assert d1.weight_scale == pytest.approx(127 / np.abs(g.node("dense1").weight * 1.5).max())
    s1 = 2 ** (d1.weight_exp + 1) * d1.weight_scale
    assert ro.state_scale == pytest.approx(s1)
    assert np.array_equal(ro.bias, np.round(np.array([0.1, -0.2, 0.3]) * s1).astype(np.int64))
    lmh = [r for r in report["layers"] if r["kind"] == "lmh"][0]
    assert lmh["max_current"] == 2 * 255 * int(np.abs(d0.weight_mant).sum(1).max()) << d0.weight_exp
    assert lmh["max_current"] <= 2**CURRENT_HEADROOM_BITS
    assert lmh["worst_case_fits_24bit"] == (max(lmh["worst_case_state"].values()) <= fx.STATE_MAX)
    g_copy_weight = g.node("dense0").weight.copy()
    quantize_graph(g)
    assert np.array_equal(g.node("dense0").weight, g_copy_weight)  # input graph untouched


def test_integer_current_matches_float_current() -> None:
    """(sum 2 m x) << exp, divided by S, is the float current W a x within sum|x| / (2 s_w)."""
    g = _float_graph()
    q, _ = quantize_graph(g)
    rng = np.random.default_rng(3)
    x_int = rng.integers(0, 256, size=(20, 6))
    d0 = q.node("dense0")
    s = q.node("lmh0").state_scale
    current_int = fx.dense_output(2 * d0.weight_mant, d0.weight_exp, x_int)
    current_float = x_int * (2.0 / 255) @ g.node("dense0").weight.T
    bound = x_int.sum(1, keepdims=True) * 0.5 / d0.weight_scale
    assert np.all(np.abs(current_int / s - current_float) <= bound + 1e-12)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda g: g.replace("lmh0", theta=0.0), r"lmh0: threshold theta must be .*> 0"),
        (lambda g: g.replace("lmh0", theta=-1.0), r"lmh0: threshold"),
        (lambda g: set_item(g, "dense0", "weight", (1, 2), np.nan), r"dense0: weight .*non-finite"),
        (lambda g: set_item(g, "dense1", "weight", (0, 0), np.inf), r"dense1: weight .*non-finite"),
        (lambda g: g.replace("lmh0", mu_d=np.full((1, 1), 0.51)), r"lmh0: .*factor mu_d=0.51"),
        (lambda g: g.replace("lmh0", lam_s=np.full((1, 1), 0.49)), r"lmh0: .*factor lam_s=0.49"),
        (lambda g: g.replace("lmh0", lam_d=np.full((1, 1), 1.51)), r"lmh0: factor lam_d"),
        (lambda g: set_item(g, "lmh0", "bias", 0, np.nan), r"lmh0: bias .*non-finite"),
        (lambda g: g.replace("lmh0", theta=1e-9), r"lmh0: threshold .* rounds to 0"),
        (lambda g: g.replace("lmh0", bias=np.full(5, 1e6)), r"lmh0: bias does not fit 24-bit"),
        (lambda g: g.replace("readout", bias=np.full(3, 1e9)), r"readout: bias does not fit"),
    ],
)
def test_invalid_graphs_raise_naming_the_layer(mutate, match: str) -> None:
    g = _float_graph()
    mutate(g)
    with pytest.raises(IRError, match=match):
        quantize_graph(g)


def test_valid_edge_factors_are_accepted() -> None:
    # The closed low ends of the ranges are representable codes.
    g = _float_graph(mu_d=-0.5, lam_s=0.5)
    q, _ = quantize_graph(g)
    assert q.node("lmh0").mu_d.tolist() == [[-2048]]
    assert q.node("lmh0").lam_s.tolist() == [[2048]]


def test_meta_signed_input_and_leaky_readout_are_carried_over() -> None:
    g = _float_graph()
    g.replace("input", signed=True)
    g.replace("readout", leaky=np.array([0.5, 0.25, 2.0]))
    q, report = quantize_graph(g)
    assert q.meta == {"timesteps": 4, "profile": "lmh"} and report["profile"]["name"] == "lmh"
    qi = q.node("input")
    assert (qi.signed, qi.bits, qi.scale) == (True, 8, 127 / 2.0)  # -2..2 -> -127..127
    # the synapses quantise the current per input step, x_max / 127 now
    assert q.node("dense0").weight_scale == pytest.approx(
        127 / np.abs(g.node("dense0").weight * 2 / 127).max()
    )
    assert q.node("readout").leaky.tolist() == [0.5, 0.25, 2.0]


def test_a_graph_without_timesteps_is_bounded_over_one_step() -> None:
    from lmh_deploy.passes.quant_report import worst_case_state_bound

    g = _float_graph()
    bounds = {}
    for meta in ({}, {"timesteps": 2}):
        g.meta.clear()
        g.meta.update(meta)
        q, report = quantize_graph(g)
        (row,) = [r for r in report["layers"] if r["kind"] == "lmh"]
        bounds[len(meta)] = row["worst_case_state"]
        assert row["worst_case_state"] == worst_case_state_bound(
            q.node("lmh0"), row["max_current"], meta.get("timesteps", 1)
        )
    assert bounds[0] != bounds[1]  # the step count matters


def test_a_max_pool_of_currents_keeps_its_geometry_and_the_convolutions_scale() -> None:
    """conv (1 -> 2 channels, 3x3, padding 1) on 5x5 -> max pool (kernel 3x2, stride 2x1,
    padding 1x0, dilation 1x2, ceil mode) -> 2 * 3 * 3 neurons: the path's QDense carries
    every pool argument, and its mantissas are the kernel's alone (127 / max|W| = 127)."""
    from lmh_deploy.ir import Conv2d, MaxPool

    rng = np.random.default_rng(5)
    weight = np.round(rng.uniform(-1, 1, (2, 1, 3, 3)), 1)
    weight[0, 0, 0, 0] = 1.0
    pool = MaxPool(
        input_shape=(2, 5, 5), kernel=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), ceil_mode=True
    )
    g = Graph(meta={"timesteps": 2})
    g.add("input", Input(shape=(1, 5, 5), spikes=True))
    g.add("conv", Conv2d(weight=weight, input_shape=(1, 5, 5), padding=(1, 1)), ("input",))
    g.add("pool", pool, ("conv",))
    g.add("lmh0", plain_lmh(pool.output_size()), ("pool",))
    g.add("dense", Dense(weight=rng.normal(size=(2, pool.output_size()))), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(2)), ("dense",))
    q, _ = quantize_graph(g)
    qd = q.node("pool")
    assert (qd.pool_kernel, qd.pool_stride, qd.pool_padding, qd.pool_dilation, qd.pool_ceil_mode) == (
        (3, 2),
        (2, 1),
        (1, 0),
        (1, 2),
        True,
    )
    assert qd.max_pool == pool and qd.output_size() == pool.output_size() == 2 * 3 * 3
    assert (qd.conv_input_shape, qd.conv_padding) == ((1, 5, 5), (1, 1))
    assert qd.weight_mant.tolist() == np.round(weight * 127).astype(int).tolist() and qd.weight_scale == 127


# --------------------------------------------------------------------------- loihi-lif widths


def _lif_graph() -> Graph:
    """200 spike inputs -> 300 CUBA LIF neurons (current decay 3/4) -> one readout, every
    weight equal: each row's mantissas are one number, derived by hand below."""
    g = Graph(meta={"timesteps": 2})
    g.add("input", Input(shape=(200,), spikes=True))
    g.add("dense0", Dense(weight=np.full((300, 200), 0.01)), ("input",))
    lif = dict(mu_d=np.full((1, 1), 0.75), lam_s=np.full((1, 1), 0.5), reset="set", threshold_test=">")
    g.add("lif", plain_lmh(300, v_s_init=0.0, **lif), ("dense0",))
    g.add("dense1", Dense(weight=np.full((1, 300), 0.5)), ("lif",))
    g.add("readout", Readout(bias=np.zeros(1)), ("dense1",))
    return g


def test_loihi_lif_weights_fit_its_fixed_exponent_wrap_limit_and_readout_headroom() -> None:
    """loihi-lif has no weight exponent (always 0): the mantissas shrink until the worst-case
    current fits. Into the LIF layer the limit is the wrapping current's (u may wrap at 24
    bits): (2**23 - 1) * (1 - 3/4) = 2097151 -> >> 6 = 32767 per a_in; at full scale
    (mantissa 127) the worst row is 2 * 127 * 200 = 50800, so the scale shrinks by
    32767 / 50800 (mantissa round(81.92) = 82, worst 32800, still over) and then by 0.99
    (round(81.10) = 81, worst 32400). Into the readout the limit is the headroom,
    2**(22 - 6) = 65536: 2 * 127 * 300 = 76200 -> 127 * 65536 / 76200 = 109.23 -> 109."""
    q, report = quantize_graph(_lif_graph(), "loihi-lif")
    d0, d1 = q.node("dense0"), q.node("dense1")
    assert np.unique(d0.weight_mant).tolist() == [81] and d0.weight_exp == 0
    assert d0.weight_scale == pytest.approx(12700 * 32767 / 50800 * 0.99, rel=1e-12)
    assert np.unique(d1.weight_mant).tolist() == [109] and d1.weight_exp == 0
    assert d1.weight_scale == pytest.approx(254 * 65536 / 76200, rel=1e-12)
    (row,) = [r for r in report["layers"] if r["kind"] == "lmh"]
    assert row["max_current"] == (2 * 81 * 200) << 6  # the LIF layer sees a_in << 6
    assert q.node("lif").state_scale == pytest.approx(2 * d0.weight_scale * 64, rel=1e-12)
    assert q.node("readout").state_scale == pytest.approx(2 * d1.weight_scale, rel=1e-12)  # no shift


# --------------------------------------------------------------------------- worst-case bound


@pytest.mark.parametrize(
    "factors, fits",
    [
        (dict(mu_d=0.0, mu_s=0.0, lam_d=1.0, lam_s=1.0), True),  # IF: grows linearly
        (dict(mu_d=0.1, mu_s=-0.1, lam_d=1.1, lam_s=0.9), True),
        (dict(mu_d=0.45, mu_s=0.45, lam_d=1.45, lam_s=1.45), False),  # grows ~2.4x per step
    ],
)
def test_worst_case_state_bound_holds_and_flags(factors: dict[str, float], fits: bool) -> None:
    """All-negative weights and a full-scale input are the worst case for the (reset-free)
    negative side; the report's bound must cover the states sim actually reaches."""
    from lmh_deploy.sim.simulator import simulate

    timesteps = 5
    rng = np.random.default_rng(13)
    g = Graph(meta={"timesteps": timesteps})
    g.add("input", Input(shape=(8,), x_max=1.0))
    g.add("dense0", Dense(weight=-rng.uniform(0.1, 1.0, (6, 8))), ("input",))
    ones = np.ones((1, 1))
    g.add(
        "lmh0",
        LMH(size=6, theta=2.0, bias=np.full(6, -0.5), **{k: v * ones for k, v in factors.items()}),
        ("dense0",),
    )
    g.add("dense1", Dense(weight=rng.normal(size=(2, 6))), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(2)), ("dense1",))
    q, report = quantize_graph(g)
    (layer,) = [r for r in report["layers"] if r["kind"] == "lmh"]
    assert layer["worst_case_fits_24bit"] is fits
    rec = simulate(q, np.full((1, 8), 255), timesteps, record_states=True)
    v_d, v_s = rec.state_trace["lmh0"]
    assert np.abs(v_d).max() <= layer["worst_case_state"]["v_d"]
    assert np.abs(v_s).max() <= layer["worst_case_state"]["v_s"]
    if fits:
        assert rec.saturation["lmh0"] == 0
        # the bound is not vacuous: the negative drive reaches a good part of it
        assert np.abs(v_s).max() > layer["worst_case_state"]["v_s"] / 4
    else:
        assert rec.saturation["lmh0"] > 0


def test_a_coarse_weight_rounding_comes_with_why_and_the_option_that_helps() -> None:
    from lmh_deploy.passes.quant_report import weight_error_notes
    from lmh_deploy.semantics.profiles import get_profile

    rows = [
        {"name": "conv0", "kind": "dense", "max_weight_error_rel": 0.2155},
        {"name": "lmh0", "kind": "lmh"},
        {"name": "dense1", "kind": "dense", "max_weight_error_rel": 0.0039},
    ]
    notes = weight_error_notes({"profile": get_profile("loihi-lif").as_dict(), "layers": rows})
    assert len(notes) == 1 and notes[0].startswith("conv0: weights rounded by up to 21.6% of max|W|: ")
    assert "no weight exponent" in notes[0] and "--profile lmh" in notes[0] and "\n" not in notes[0]
    assert weight_error_notes({"profile": get_profile("lmh").as_dict(), "layers": rows[1:]}) == []


# --------------------------------------------------------------------------- exact (imported) graphs


def _exact_float_graph(theta: float = 2.0) -> Graph:
    """A float graph holding integers at weight scale 4 (as an imported netx file does):
    state scale 2 * 4 = 8 at the readout, 8 << 6 = 512 in the loihi-lif neurons."""
    g = Graph(meta={"timesteps": 3, "exact_weight_scale": 4.0})
    g.add("input", Input(shape=(3,), x_max=1.0, spikes=True))
    g.add("dense0", Dense(weight=np.array([[0.25, -0.5, 1.0], [0.75, 0.0, -1.25]])), ("input",))
    g.add(
        "lif",
        LMH(
            size=2,
            theta=theta,
            mu_d=np.full((1, 2), 0.25),
            mu_s=np.zeros((1, 2)),
            lam_d=np.ones((1, 2)),
            lam_s=np.full((1, 2), 0.75),
            bias=np.array([0.25, -0.5]),
            reset="set",
            threshold_test=">",
            v_s_init=0.0,  # netx's LIF starts at 0, not at half the threshold
        ),
        ("dense0",),
    )
    g.add("dense1", Dense(weight=np.array([[1.5, -0.25]])), ("lif",))
    g.add("readout", Readout(bias=np.array([0.5])), ("dense1",))
    return g


def test_exact_graph_keeps_the_files_integers() -> None:
    from lmh_deploy.passes.quantize import exact_graph

    q, report = exact_graph(_exact_float_graph())
    assert q.meta["profile"] == "loihi-lif" and q.meta["exact_weight_scale"] == 4.0
    assert [n.kind for _, n in q.items()] == ["q_input", "q_dense", "q_lmh", "q_dense", "q_readout"]
    assert q.node("input").bits == 1
    d0, lif, d1, ro = (q.node(n) for n in ("dense0", "lif", "dense1", "readout"))
    assert d0.weight_mant.tolist() == [[1, -2, 4], [3, 0, -5]] and d0.weight_mant.dtype == MANT_DTYPE
    assert (d0.weight_exp, d0.weight_scale, d0.graded) == (0, 4.0, False)
    assert d1.weight_mant.tolist() == [[12, -2]] and d1.weight_exp == 0  # a spike carries theta = 2
    assert lif.state_scale == 512.0 and lif.theta == 1024
    assert lif.bias.tolist() == [128, -256]
    assert (lif.reset, lif.threshold_test, lif.reset_value, lif.v_d_init, lif.v_s_init) == (
        "set",
        ">",
        0,
        0,
        0,
    )
    assert lif.profile == "loihi-lif"
    assert lif.mu_d.tolist() == [[1024, 1024]] and lif.mu_s.tolist() == [[0, 0]]
    assert lif.lam_d.tolist() == [[4096, 4096]] and lif.lam_s.tolist() == [[3072, 3072]]
    assert ro.state_scale == 8.0 and ro.bias.tolist() == [4]
    layers = {r["name"]: r for r in report["layers"]}
    assert list(layers) == ["dense0", "lif", "dense1"]
    assert layers["dense0"]["max_weight_error"] == layers["dense1"]["max_weight_error"] == 0.0
    assert (layers["dense1"]["weight_exp"], layers["dense1"]["weight_scale"]) == (0, 4.0)
    # a file's float round-off (within 1e-6 of an integer) is accepted
    q, _ = exact_graph(_exact_float_graph(theta=2.0 + 2e-10))
    assert q.node("lif").theta == 1024
    assert layers["lif"]["max_factor_error"] == 0.0
    assert layers["lif"]["max_current"] == (2 * 8) << 6  # 2 * largest |row| sum of dense0, a_in << 6
    assert report["profile"]["name"] == "loihi-lif"
    # the worst case over the file's 3 steps, drive = max current + max |bias| = 1024 + 256:
    # vD = 1/4 vD + 1280 -> 1280, 1600, 1680; vS = 3/4 vS + vD -> 1280, 2560, 3600
    assert layers["lif"]["worst_case_state"] == {"v_d": 1680, "v_s": 3600}
    g = _exact_float_graph()
    del g.meta["timesteps"]  # no step count: one step
    (row,) = [r for r in exact_graph(g)[1]["layers"] if r["name"] == "lif"]
    assert row["worst_case_state"] == {"v_d": 1280, "v_s": 1280}


def test_exact_graph_keeps_a_leaky_readout() -> None:
    from lmh_deploy.passes.quantize import exact_graph

    g = _exact_float_graph()
    g.replace("readout", leaky=np.array([0.5, 0.75, 1.0]))
    q, _ = exact_graph(g)
    assert q.node("readout").leaky.tolist() == [0.5, 0.75, 1.0] and q.node("readout").bias.tolist() == [4]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda g: set_item(g, "dense0", "weight", (0, 0), 0.3), r"dense0: weight is not an integer"),
        (lambda g: g.replace("lif", theta=2.0001), r"lif: theta is not an integer"),
        (lambda g: set_item(g, "lif", "bias", 1, 0.001), r"lif: bias is not an integer"),
        (lambda g: g.replace("readout", bias=np.array([0.01])), r"readout: bias is not an integer"),
        (lambda g: g.replace("lif", mu_d=np.full((1, 2), 0.1)), r"lif: mu_d is not an integer"),
        # 1953.1259765625 * 512 = 1_000_000.5: off by a half however large (no relative tolerance)
        (lambda g: set_item(g, "lif", "bias", 0, 1953.1259765625), r"lif: bias is not an integer"),
        (lambda g: g.replace("lif", reset_value=0.001), r"lif: reset_value is not an integer"),
        (lambda g: g.replace("lif", v_d_init=0.001), r"lif: v_d_init is not an integer"),
        (lambda g: g.replace("lif", v_d_init=np.array([0.0, 0.001])), r"lif: v_d_init is not an integer"),
        (lambda g: g.replace("lif", v_s_init=0.001), r"lif: v_s_init is not an integer"),
        # integers (2 * 512) that Lava's LIF cannot hold: refused by the profile, by value
        (lambda g: g.replace("lif", reset_value=2.0), r"lif: .*loihi-lif cannot express reset value 1024 "),
        (lambda g: g.replace("lif", v_d_init=2.0), r"lif: .*loihi-lif cannot express v_d_init 1024 "),
        (
            lambda g: g.replace("lif", v_d_init=np.array([0.0, 2.0])),
            r"lif: .*loihi-lif cannot express v_d_init 1024 \(per neuron\) \(profile loihi-lif starts",
        ),
        (lambda g: g.replace("lif", v_s_init=2.0), r"lif: .*loihi-lif cannot express v_s_init 1024 "),
        (
            lambda g: g.replace("lif", reset_timing="next-step"),
            r"lif: .*cannot express reset timing 'next-step'",
        ),
    ],
)
def test_exact_graph_refuses_values_that_are_not_integers(mutate, match: str) -> None:
    from lmh_deploy.passes.quantize import exact_graph

    g = _exact_float_graph()
    mutate(g)
    with pytest.raises(IRError, match=match):
        exact_graph(g)


def test_weights_tiny_beside_the_threshold_lower_the_exponent_not_refuse() -> None:
    """A layer fed by one weight of 1e-4 (theta 1, inputs 0..255 standing for [0, 1]): at
    s_w = 127 / (1e-4 / 255) the threshold would need ~2**29 state units; the state scale is
    capped so theta fits the 24-bit states, first by a smaller exponent (down to 0), then by
    fewer mantissa bits (here 127 -> 2)."""
    g = Graph()
    g.add("input", Input(shape=(1,), x_max=1.0))
    g.add("dense0", Dense(weight=np.array([[1e-4]])), ("input",))
    g.add("lmh0", plain_lmh(1), ("dense0",))
    g.add("dense1", Dense(weight=np.array([[1.0]])), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(1)), ("dense1",))
    q, _ = quantize_graph(g)
    d0, l0 = q.node("dense0"), q.node("lmh0")
    cap = 0.999 * fx.STATE_MAX  # theta = 1
    assert d0.weight_exp == 0
    # S = 2 * 2**0 * s_w = cap, s_w = cap / 2; the mantissa is round(1e-4 / 255 * s_w) = 2
    assert d0.weight_scale == pytest.approx(cap / 2)
    assert l0.state_scale == pytest.approx(cap)
    assert l0.theta == round(cap) <= fx.STATE_MAX
    assert d0.weight_mant.tolist() == [[2]]


def test_default_profile_is_lmh_unless_only_cuba_holds_a_current_or_membrane_decay() -> None:
    """Without --profile a net gets lmh, as always, wherever lmh holds it; cuba where lmh
    refuses a layer's synaptic current decay (rockpool, norse) or membrane decay (a trained
    SpikingJelly tau < 2) and cuba holds it, with one line saying so; lmh (and so its refusal)
    where cuba cannot hold the layer either."""
    from lmh_deploy.passes.neurons import default_profile

    def net(**over: np.ndarray) -> Graph:
        g = Graph()
        g.add("input", Input(shape=(2,), x_max=1.0))
        g.add("dense0", Dense(weight=np.ones((3, 2))), ("input",))
        g.add("lmh0", plain_lmh(3), ("dense0",))
        g.add("dense1", Dense(weight=np.ones((3, 3))), ("lmh0",))
        g.add("lmh1", plain_lmh(3, **over), ("dense1",))
        g.add("dense2", Dense(weight=np.ones((2, 3))), ("lmh1",))
        g.add("readout", Readout(bias=np.zeros(2)), ("dense2",))
        return g

    assert default_profile(net()) == ("lmh", None)
    assert default_profile(net(mu_d=np.full((1, 1), 0.5))) == ("lmh", None)  # lmh's top code
    name, why = default_profile(net(mu_d=np.array([[0.2, 0.95, 0.9]])))
    assert name == "cuba" and why is not None and "\n" not in why
    assert why.startswith("profile cuba (no --profile given): lmh1's synaptic current decays by 0.95 a step")
    assert default_profile(net(mu_d=np.array([[0.95, 1.0, 0.9]]))) == ("lmh", None)  # cuba refuses 1
    # a membrane decay below 1/2 (SpikingJelly tau < 2): cuba holds lam_s down to 0
    assert default_profile(net(lam_s=np.full((1, 1), 2047.6 / 4096))) == ("lmh", None)  # code 2048
    name, why = default_profile(net(lam_s=np.full((1, 1), 0.3934)))
    assert name == "cuba" and why == (
        "profile cuba (no --profile given): lmh1's membrane decay factor lam_s is 0.3934, below "
        "the 1/2 profile lmh holds (SpikingJelly tau < 2, snnTorch beta < 0.5)"
    )
    assert default_profile(net(lam_s=np.zeros((1, 1)), mu_d=np.full((1, 1), 0.9)))[0] == "cuba"
    assert default_profile(net(lam_s=np.zeros((1, 1)), mu_d=np.full((1, 1), 1.0))) == ("lmh", None)
