"""sim/'s convolution plans bit for bit: pool-composed kernels run as a sum-pool followed by
the small kernel (numpy and torch device path) give the integers of the composite kernel's
full synaptic matrix; kernels that are not block-constant are left as they are."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lmh_deploy.models.architectures import build
from lmh_deploy.sim import simulate
from lmh_deploy.sim.conv import block_constant, conv_plan
from lmh_deploy.sim.neuron import array_code_only, numba_active
from lmh_deploy.sim.reference import simulate_reference
from lmh_deploy.sim.synapse import SynapsePath, _onednn_has, lava_current, summed_current

from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.ir import QDense
from lmh_deploy.ir.synapses import qdense_matrix
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx


def _matrix_current(node: QDense, pre: np.ndarray) -> np.ndarray:
    """``shift(sum 2 m x, exp)`` in int64 from the composite kernel's full integer matrix."""
    m = qdense_matrix(node, fx.WEIGHT_LAVA_SCALE)
    m = m.toarray() if sp.issparse(m) else np.asarray(m)
    return fx.shift_sum(pre.astype(np.int64) @ m.astype(np.int64).T, node.weight_exp)


def _composite(small: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """What the quantiser makes of a ``block`` pooling followed by ``small``: each integer
    repeated over an aligned block."""
    return np.repeat(np.repeat(small, block[0], axis=2), block[1], axis=3)


def _every_way(node: QDense, pre: np.ndarray, largest: int | None = None) -> dict[str, np.ndarray]:
    """Lava currents of every way: float conv (``gemm``), event scatter, int8 convolution,
    automatic choice (numpy), without numba, and the torch device path (``largest``: a
    graded input's largest |value|, 255 when not given)."""
    largest = (largest or 255) if node.graded else None
    path = SynapsePath(node, largest_input=largest)
    ways = {"auto": path.sums, "gemm": path._gemm}
    if "events" in path.ways:
        ways["events"] = path._events
    if "int8" in path.ways:
        ways["int8"] = path._int8
    out = {way: lava_current(run(pre), node.weight_exp) for way, run in ways.items()}
    with array_code_only():
        out["no numba"] = lava_current(SynapsePath(node, largest_input=largest).sums(pre), node.weight_exp)
    torch_sums = SynapsePath(node, "cpu", largest_input=largest).sums(torch.as_tensor(pre))
    out["torch cpu"] = lava_current(torch_sums, node.weight_exp).numpy()
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    block=st.sampled_from([(2, 2), (3, 3), (2, 1), (1, 3)]),
    small_k=st.sampled_from([(1, 1), (3, 3), (2, 3)]),
    pad=st.integers(0, 2),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    graded=st.booleans(),
    exp=st.integers(-5, 3),
    rate=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_pool_composed_kernels_run_factored_and_exact(
    seed, block, small_k, pad, h, w, graded, exp, rate
) -> None:
    """Any block-constant kernel at stride = block, padding a multiple of the block: odd
    input sizes (not divisible by the block, rows beyond the last full block reached by the
    padding), 8-bit graded input, saturated and silent input."""
    rng = np.random.default_rng(seed)
    sy, sx = block
    kh, kw = small_k[0] * sy, small_k[1] * sx
    if h + 2 * pad * sy < kh or w + 2 * pad * sx < kw:
        return  # no output position
    kernel = _composite(rng.integers(-127, 128, (3, 2) + small_k), block)
    node = QDense(
        weight_mant=kernel,
        weight_exp=exp,
        graded=graded,
        weight_scale=1.0,
        conv_input_shape=(2, h, w),
        conv_stride=block,
        conv_padding=(pad * sy, pad * sx),
    )
    node.check("conv")
    assert conv_plan(node).factored
    pre = rng.integers(0, 256 if graded else 2, (4, 2 * h * w)) * (rng.random((4, 2 * h * w)) < rate)
    if not graded:
        pre = pre.astype(bool)
    want = _matrix_current(node, pre)
    semantics = fx.conv_output(
        fx.WEIGHT_LAVA_SCALE * kernel,
        exp,
        pre.astype(np.int64),
        node.conv_input_shape,
        block,
        node.conv_padding,
    )
    assert np.array_equal(semantics, want)
    for way, got in _every_way(node, pre).items():
        assert got.shape == want.shape and np.array_equal(got, want), way


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    stride=st.sampled_from([(1, 1), (2, 2), (3, 1), (2, 3)]),
    kernel=st.sampled_from([(1, 1), (3, 3), (2, 4)]),
    padding=st.sampled_from([(0, 0), (1, 1), (2, 0)]),
    h=st.integers(2, 8),
    w=st.integers(2, 8),
    graded=st.booleans(),
    rate=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
)
def test_event_scatter_convolution_equals_the_matrix(
    seed, stride, kernel, padding, h, w, graded, rate
) -> None:
    """The event-driven conv (each active input scatters its kernel taps) against the full
    integer matrix: strides, rectangular kernels, padding, signed 16-bit values, silent input."""
    if h + 2 * padding[0] < kernel[0] or w + 2 * padding[1] < kernel[1]:
        return
    rng = np.random.default_rng(seed)
    node = QDense(
        weight_mant=rng.integers(-127, 128, (5, 3) + kernel),
        weight_exp=-1,
        graded=graded,
        weight_scale=1.0,
        conv_input_shape=(3, h, w),
        conv_stride=stride,
        conv_padding=padding,
    )
    # graded: signed 16-bit messages (normalised images), past float32's exact sums
    lo, hi = (-32767, 32767) if graded else (0, 1)
    pre = rng.integers(lo, hi + 1, (3, 3 * h * w)) * (rng.random((3, 3 * h * w)) < rate)
    pre = pre if graded else pre.astype(bool)
    path = SynapsePath(node, largest_input=hi if graded else None)
    assert "events" in path.ways
    want = _matrix_current(node, pre)
    for way, got in _every_way(node, pre, hi).items():
        assert np.array_equal(got, want), way


@pytest.mark.parametrize(
    "change", ["one tap differs", "padding not a multiple", "kernel not a multiple", "stride 1"]
)
def test_kernels_that_are_not_pool_composites_run_as_they_are(change: str) -> None:
    rng = np.random.default_rng(7)
    kernel = _composite(rng.integers(-127, 128, (4, 3, 2, 2)), (2, 2))
    stride, padding = (2, 2), (2, 2)
    if change == "one tap differs":
        kernel[1, 2, 3, 2] = -kernel[1, 2, 3, 3] + 1  # block (1, 1) no longer constant
    elif change == "padding not a multiple":
        padding = (1, 2)
    elif change == "kernel not a multiple":
        kernel = kernel[:, :, :3, :]
    else:
        stride = (1, 1)
    node = QDense(
        weight_mant=kernel,
        weight_exp=1,
        graded=False,
        weight_scale=1.0,
        conv_input_shape=(3, 7, 8),
        conv_stride=stride,
        conv_padding=padding,
    )
    plan = conv_plan(node)
    assert not plan.factored and plan.kernel.shape == kernel.shape and plan.stride == stride
    pre = rng.random((5, 3 * 7 * 8)) < 0.4
    want = _matrix_current(node, pre)
    for way, got in _every_way(node, pre).items():
        assert np.array_equal(got, want), way


def test_block_constant_detects_a_single_changed_tap() -> None:
    kernel = _composite(np.arange(24).reshape(2, 3, 2, 2), (2, 3))
    assert block_constant(kernel, (2, 3)) and not block_constant(kernel, (3, 2))
    kernel[1, 1, 3, 5] += 1
    assert not block_constant(kernel, (2, 3))


def test_factored_sums_beyond_float32_use_float64_and_stay_exact() -> None:
    """Graded input, wide fan-in: the bound of the pooled values (<= 4 * 255 each) times the
    small kernel is >= 2**24, so float64 is chosen; the same integers."""
    rng = np.random.default_rng(3)
    kernel = _composite(rng.integers(100, 128, (2, 40, 3, 3)), (2, 2))
    node = QDense(
        weight_mant=kernel,
        weight_exp=-2,
        graded=True,
        weight_scale=1.0,
        conv_input_shape=(40, 6, 6),
        conv_stride=(2, 2),
        conv_padding=(2, 2),
    )
    path = SynapsePath(node, largest_input=255)
    assert path.conv.factored and path.bound == 127 * 255 * 4 * 40 * 9
    assert path.bound >= 2**24 and path.float_dtype is np.float64
    pre = np.full((2, 40 * 36), 255)
    for way, got in _every_way(node, pre).items():
        assert np.array_equal(got, _matrix_current(node, pre)), way


@pytest.mark.parametrize("arch, plans", [("vgg13", 4), ("resnet20", 7)])
def test_nets_run_their_plans_and_equal_the_reference(arch: str, plans: int) -> None:
    """A whole VGG-13 (tiny width, graded 3x16x16 input: 16 -> 8 -> 4 -> 2 -> 1, four
    pool -> conv paths factored) and ResNet-20 (identity shortcuts as per-channel products,
    residual currents summed in float) equal the slow reference step loop and the torch
    device path, spikes, final states and logits."""
    torch.manual_seed(5)
    model = build(arch, (3, 16, 16), 10, timesteps=3, width_mult=0.0625).eval()
    for neuron in model.neurons():
        neuron.set_factors(mu_d=-0.2, mu_s=0.1, lam_d=1.2, lam_s=0.9)
    q, _ = quantize_graph(export_model(model, input_shape=(3, 16, 16), timesteps=3))
    special = [
        n
        for n in q.of_kind("q_dense")
        if q.node(n).is_conv and (conv_plan(q.node(n)).factored or conv_plan(q.node(n)).diagonal)
    ]
    assert len(special) == plans
    x = fx.quantize_input(np.random.default_rng(5).random((2, 3, 16, 16)), q.node("input").scale)
    rec = simulate(q, x, 3)
    assert sum(int(s.sum()) for s in rec.spikes.values()) > 0
    ref = simulate_reference(q, x, 3)
    assert np.array_equal(ref["logits"], rec.logits)
    for name, s in ref["spikes"].items():
        assert np.array_equal(s, rec.spikes[name]), name
        for u, v in zip(ref["final_state"][name], rec.final_state[name]):
            assert np.array_equal(u, v), name
    on_torch = simulate(q, x, 3, device="cpu")
    assert np.array_equal(on_torch.logits, rec.logits)
    for name, s in rec.spikes.items():
        assert np.array_equal(on_torch.spikes[name], s), name


@pytest.mark.parametrize("case", ["diagonal", "one off-diagonal tap", "stride 2"])
def test_diagonal_1x1_kernels_are_per_channel_products(case: str) -> None:
    """An identity shortcut (diagonal 1 x 1 kernel, stride 1) is an elementwise product per
    channel, zero and negative diagonal entries included; anything else stays a conv."""
    rng = np.random.default_rng(11)
    kernel = np.zeros((6, 6, 1, 1), np.int64)
    kernel[np.arange(6), np.arange(6), 0, 0] = [127, -127, 0, 5, 127, -1]
    stride = (2, 2) if case == "stride 2" else (1, 1)
    if case == "one off-diagonal tap":
        kernel[0, 3, 0, 0] = 1
    node = QDense(
        weight_mant=kernel,
        weight_exp=-3,
        graded=False,
        weight_scale=1.0,
        conv_input_shape=(6, 5, 3),
        conv_stride=stride,
        conv_padding=(0, 0),
    )
    assert conv_plan(node).diagonal == (case == "diagonal")
    pre = rng.random((7, 90)) < 0.5
    want = _matrix_current(node, pre)
    for way, got in _every_way(node, pre).items():
        assert np.array_equal(got, want), way


@settings(max_examples=30, deadline=None)
@example(seed=1, exps=[8, 0], peak=40_000, kind="float32")  # float32 terms, total >= 2**24
@example(seed=2, exps=[-9, -1, 3], peak=127, kind="torch float32")
@example(seed=3, exps=[-9, -9], peak=2**40, kind="int64")  # small total, huge sums
@given(
    seed=st.integers(0, 10_000),
    exps=st.lists(st.integers(-9, 8), min_size=2, max_size=3),
    peak=st.sampled_from([3, 127, 40_000, 2**40]),
    kind=st.sampled_from(["float32", "float64", "int64", "torch float32", "mixed"]),
)
def test_residual_currents_summed_in_float_equal_int64(seed, exps, peak, kind) -> None:
    """``sum shift(2 S_i, e_i)`` of several paths (float or integer sums): the float pass
    (float32 under 2**24, else float64) or, for two numpy parts, the compiled int64 pass give
    the integers of the int64 shifts, floor of negatives included; beyond 2**53, int64."""
    rng = np.random.default_rng(seed)
    sums = [rng.integers(-peak, peak + 1, (2, 3, 17)) for _ in exps]
    want = sum(fx.shift_sum(2 * s, e) for s, e in zip(sums, exps))
    dtype = {
        "float32": np.float32,
        "float64": np.float64,
        "torch float32": np.float32,
        "int64": np.int64,
        "mixed": np.float32,
    }[kind]
    parts = [(s.astype(dtype), e, float(peak)) for s, e in zip(sums, exps)]
    if kind == "mixed":
        parts[0] = (sums[0].astype(np.float64), exps[0], float(peak))
    if kind == "torch float32":
        parts = [(torch.as_tensor(s), e, b) for s, e, b in parts]
    if dtype is np.float32 and peak > 2**24:
        return  # such sums are never float32 (SynapsePath's bound)
    got = summed_current(parts)
    got = got.numpy() if isinstance(got, torch.Tensor) else got
    total = sum(2.0 * peak * 2.0**e + 1 for e in exps)
    if max(total, peak) >= 2**53:
        assert got.dtype == np.int64
    elif len(exps) == 2 and kind != "torch float32" and numba_active():  # one compiled pass
        assert got.dtype == (np.int32 if total <= 2**31 - 1 else np.int64)
    else:
        narrow = max(total, peak) < 2**24 and kind in ("float32", "torch float32", "int64")
        assert got.dtype == (np.float32 if narrow else np.float64)
    assert np.array_equal(got.astype(np.int64), want)


@pytest.mark.parametrize("rate, first", [(0.0, "events"), (0.01, "events"), (1.0, "int8")])
def test_untimed_ways_run_in_order_of_their_predicted_cost(rate: float, first: str) -> None:
    """A fresh conv path takes the way its prior costs predict cheapest (silent input: the
    event scatter; else the int8 convolution where torch has it, else the float conv),
    then times the others."""
    rng = np.random.default_rng(2)
    node = QDense(
        weight_mant=rng.integers(-127, 128, (16, 8, 3, 3)),
        weight_exp=0,
        graded=False,
        weight_scale=1.0,
        conv_input_shape=(8, 12, 12),
        conv_stride=(1, 1),
        conv_padding=(1, 1),
    )
    path = SynapsePath(node)
    if "int8" not in path.ways:
        assert not _onednn_has("qconv2d_pointwise")
        first = "gemm" if first == "int8" else first
    pre = rng.random((4, 8 * 144)) < rate
    want = _matrix_current(node, pre)
    got = [lava_current(path.sums(pre), 0)]
    assert path.costs.warm == {first}
    got += [lava_current(path.sums(pre), 0) for _ in range(2 * len(path.ways) - 1)]
    assert all(np.array_equal(g, want) for g in got)
    assert set(path.costs.cost) == set(path.ways)  # every way timed after two calls of each


def test_int8_convolution_keeps_off_what_it_cannot_sum_exactly() -> None:
    """oneDNN's int8 convolution is left out where a stride above 1 meets a one-wide output
    (it gives wrong sums there), and a path whose first int8 sums disagree with the float
    convolution drops the way and still returns the exact integers."""
    rng = np.random.default_rng(4)

    def node(width: int, stride: int) -> QDense:
        return QDense(
            weight_mant=rng.integers(-127, 128, (6, 4, 2, 4)),
            weight_exp=0,
            graded=False,
            weight_scale=1.0,
            conv_input_shape=(4, 8, width),
            conv_stride=(stride, stride),
            conv_padding=(1, 1),
        )

    assert "int8" not in SynapsePath(node(2, 2)).ways  # output 1 column wide at stride 2
    path = SynapsePath(node(8, 1))
    if not _onednn_has("qconv2d_pointwise"):
        assert "int8" not in path.ways
        return
    assert "int8" in path.ways
    pre = rng.random((64, path.n_in)) < 0.5
    want = _matrix_current(path.node, pre)
    path._int8_conv = lambda rows: np.zeros((rows.shape[0], path.n_out), np.float32)  # a broken kernel
    assert np.array_equal(lava_current(path._int8(pre), 0), want)
    assert "int8" not in path.ways
    assert np.array_equal(lava_current(path.sums(pre), 0), want)


@pytest.mark.parametrize(
    "shape, kernel, stride, padding, block",
    [
        ((8, 2, 2), (3, 3), (1, 1), (1, 1), None),  # VGG-13's last convolutions
        ((5, 3, 3), (3, 3), (1, 1), (1, 1), None),
        ((4, 1, 3), (3, 3), (1, 1), (1, 1), None),
        ((6, 3, 3), (3, 3), (1, 1), (0, 0), None),  # one output
        ((8, 4, 4), (3, 3), (1, 1), (1, 1), (2, 2)),  # a 2 x 2 pooling composed in: pooled 2 x 2
        ((3, 5, 5), (3, 3), (1, 1), (1, 1), (2, 2)),  # pooled 3 x 3, padded at the bottom/right
        ((4, 3, 3), (3, 3), (2, 2), (1, 1), None),  # stride 2, not a composite: 2 x 2 outputs
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_int8_convolution_of_small_inputs_is_one_product_with_the_unrolled_kernel(
    shape, kernel, stride, padding, block, channels_last: bool
) -> None:
    """A convolution whose (pooled) input has no more positions than the kernel has taps runs
    as one int8 product with its unrolled kernel (no columns gathered, no padding zeros
    multiplied): the composite kernel's exact integers, in either layout in and out."""
    from lmh_deploy.sim.conv import channels_last_order

    rng = np.random.default_rng(sum(shape) + stride[0])
    c = shape[0]
    small = rng.integers(-127, 128, (7, c, *kernel))
    mant = small if block is None else _composite(small, block)
    step, pad = stride, padding
    if block is not None:  # the composite's stride and padding
        step, pad = block, (padding[0] * block[0], padding[1] * block[1])
    node = QDense(
        weight_mant=mant,
        weight_exp=-1,
        graded=False,
        weight_scale=1.0,
        conv_input_shape=shape,
        conv_stride=step,
        conv_padding=pad,
    )
    layout = shape if channels_last else None
    path = SynapsePath(node, input_layout=layout, channels_last_out=channels_last)
    if not _onednn_has("qconv2d_pointwise"):
        assert "int8" not in path.ways
        return
    pre = rng.random((64, path.n_in)) < 0.4
    pre[0] = True
    want = _matrix_current(node, pre)
    if channels_last:  # the path reads and writes (H, W, C) rows
        out_shape = (7, *path.conv.out_hw)
        pre = pre[:, channels_last_order(shape)]
        want = want[:, channels_last_order(out_shape)]
    got = lava_current(path._int8(pre), node.weight_exp)
    assert path.qconv_dense is not None and "int8" in path.ways
    assert np.array_equal(got, want)


@pytest.mark.skipif(not numba_active(), reason="the compiled sum-pool needs numba")
@pytest.mark.parametrize(
    "shape, pool",
    [
        ((3, 7, 11), (2, 2)),  # pooled 4 x 6: one padded row and column
        ((2, 7, 11), (3, 3)),  # pooled 3 x 4: two padded rows, one padded column
        ((4, 9, 8), (3, 2)),  # no padding
        ((5, 61, 62), (2, 2)),  # 13 rows of 18,910 bytes: three ranges at three threads
        ((3, 64, 67), (3, 3)),  # three ranges, padded
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_compiled_sum_pool_of_spikes_equals_the_strided_adds(
    monkeypatch: pytest.MonkeyPatch, shape, pool, channels_last: bool, threads: int
) -> None:
    """The one-pass compiled sum-pool of binary spikes into uint8 (``sum_pool_bytes``) gives
    the integers of numpy's ``sy * sx`` strided adds and of torch's average pool times the
    area (zeros past the bottom/right edge), in both layouts, at one and three threads
    (rows cut into ragged ranges); the compiled pass is what ran."""
    import torch.nn.functional as F
    from lmh_deploy.sim import gather
    from lmh_deploy.sim import neuron as N
    from lmh_deploy.sim.conv import ConvPlan, channels_last_order, pooled_integers

    monkeypatch.setattr(N, "sim_threads", lambda: threads)
    calls = []
    compiled = gather.sum_pool_bytes
    monkeypatch.setattr(gather, "sum_pool_bytes", lambda *a: calls.append(a[2:]) or compiled(*a))
    rng = np.random.default_rng(sum(shape) + pool[0])
    c, h, w = shape
    (sy, sx), rows = pool, 13
    pad = (-h % sy, -w % sx)
    plan = ConvPlan(shape, np.ones((1, c, 1, 1), np.int64), (1, 1), (0, 0), pool, pad, (1, 1))
    images = rng.random((rows, c, h, w)) < 0.6
    images[0] = True  # full blocks: the largest sums (sy * sx)
    padded = F.pad(torch.from_numpy(images).double(), (0, pad[1], 0, pad[0]))
    want = F.avg_pool2d(padded, pool, divisor_override=1).numpy()
    pre = images.reshape(rows, -1)
    if channels_last:
        pre = np.ascontiguousarray(pre[:, channels_last_order(shape)])
    got = pooled_integers(plan, pre, channels_last)
    assert calls == [(pool, channels_last)]
    with N.array_code_only():
        strided = pooled_integers(plan, pre, channels_last)
    assert got.dtype == strided.dtype == np.uint8 and got.shape == want.shape
    assert np.array_equal(got, want) and np.array_equal(strided, want)
    assert want.max() == sy * sx


@pytest.mark.skipif(not numba_active(), reason="the compiled columns need numba")
@pytest.mark.parametrize(
    "shape, kernel_hw, padding",
    [
        ((5, 4, 4), (3, 3), (1, 1)),
        ((3, 2, 5), (1, 3), (0, 2)),
        ((2, 3, 3), (3, 3), (0, 0)),
        ((7, 1, 1), (3, 3), (1, 1)),
    ],
)
@pytest.mark.parametrize("threads", [1, 3])
def test_compiled_convolution_columns_equal_the_window_copy(
    monkeypatch: pytest.MonkeyPatch, shape, kernel_hw, padding, threads: int
) -> None:
    """``conv_columns`` (the int8 columns product's input, stride 1) writes the (ky, kx, c)
    columns of numpy's sliding windows over the zero-padded images, every output position
    (taps past an edge zero, the output cropped where the padding exceeds the kernel's
    reach), with 13 rows cut into three ragged ranges at three threads."""
    from lmh_deploy.sim import neuron as N
    from lmh_deploy.sim.gather import conv_columns

    monkeypatch.setattr(N, "sim_threads", lambda: threads)
    monkeypatch.setattr(N, "MIN_THREAD_WORK", 1)
    rng = np.random.default_rng(sum(shape) + sum(padding))
    (c, h, w), (kh, kw), (py, px), rows = shape, kernel_hw, padding, 13
    oh, ow = h + 2 * py - kh + 1, w + 2 * px - kw + 1
    images = rng.integers(1, 256, (rows, h, w, c)).astype(np.uint8)  # no zero inside: a
    padded = np.zeros((rows, h + 2 * py, w + 2 * px, c), np.uint8)  # missed tap shows
    padded[:, py : py + h, px : px + w] = images
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))
    want = windows.transpose(0, 1, 2, 4, 5, 3).reshape(rows * oh * ow, kh * kw * c)
    cols = np.full((rows * oh * ow, kh * kw * c), 7, np.uint8)  # stale values must go
    conv_columns(images, cols, kernel_hw, padding, (oh, ow))
    assert np.array_equal(cols, want)
