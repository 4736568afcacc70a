"""Edges of sim/'s synapse and convolution code that the whole-net tests do not reach (each
test kills mutants that scripts/mutation.sh found surviving; docs/testing.md): the int64
im2col convolution for sums beyond float64, the torch device path past float32's exact
range, the int8 product on tensors, and which shapes ``torch._int_mm`` takes on CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmh_deploy.ir import QDense
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim.conv import conv_plan, run_conv
from lmh_deploy.sim.synapse import SynapsePath, _int_mm_fits, _onednn_has


def _conv_node(kernel: np.ndarray, shape, stride=(1, 1), padding=(0, 0), graded=True) -> QDense:
    return QDense(
        weight_mant=kernel,
        weight_exp=0,
        graded=graded,
        weight_scale=1.0,
        conv_input_shape=shape,
        conv_stride=stride,
        conv_padding=padding,
    )


@pytest.mark.parametrize(
    "kernel_shape, shape, stride, padding",
    [
        ((3, 2, 3, 2), (2, 5, 6), (1, 1), (1, 0)),  # plain, padded, not square
        ((2, 2, 2, 2), (2, 6, 5), (2, 2), (0, 0)),  # pool-composed: factored into a sum-pool
        ((2, 2, 3, 3), (2, 7, 6), (2, 2), (1, 1)),  # stride 2, not block-constant: as it is
        ((3, 3, 1, 1), (3, 4, 4), (1, 1), (0, 0)),  # diagonal 1 x 1: per-channel products
    ],
)
def test_int64_convolution_equals_the_float_one(kernel_shape, shape, stride, padding) -> None:
    """run_conv's int64 im2col product (for sums beyond float64's exact range) gives the
    float convolution's integers on every plan kind."""
    rng = np.random.default_rng(5)
    kernel = rng.integers(-127, 128, kernel_shape)
    if kernel_shape[2:] == (1, 1):
        kernel = np.einsum("oi,o->oi", np.eye(3, dtype=np.int64), rng.integers(1, 128, 3))[:, :, None, None]
    if stride == (2, 2):
        kernel = np.repeat(np.repeat(kernel[:, :, :1, :1], 2, 2), 2, 3)  # constant 2 x 2 blocks
    plan = conv_plan(_conv_node(kernel, shape, stride, padding))
    x = torch.as_tensor(rng.integers(0, 256, (3, int(np.prod(shape)))), dtype=torch.float64)
    want = run_conv(plan, x, torch.as_tensor(plan.kernel, dtype=torch.float64))
    got = run_conv(plan, x, torch.as_tensor(plan.kernel, dtype=torch.int64))
    assert got.dtype == torch.int64 and got.shape == want.shape
    assert torch.equal(got, want.to(torch.int64))
    ref = fx.conv_output(kernel, 0, x.numpy().astype(np.int64), shape, stride, padding)
    assert np.array_equal(got.numpy(), ref)


def test_torch_device_sums_past_float32_are_exact() -> None:
    """Bound 127 * 255 * 999 > 2**24 picks float64 on the torch path too: the odd sum
    32_352_615 is not a float32 value. Past 2**53 (127 * 2**50 * 999) the torch path refuses."""
    node = QDense(weight_mant=np.full((2, 999), 127), weight_exp=0, graded=True, weight_scale=1.0)
    path = SynapsePath(node, device="cpu", largest_input=255)
    got = path.sums(torch.full((1, 999), 255))
    assert got.tolist() == [[32_352_615, 32_352_615]]
    path = SynapsePath(node, device="cpu", largest_input=2**50)
    with pytest.raises(
        OverflowError,
        match=r"^synaptic sums up to 1.43e\+20 exceed the exact float64 range of the torch device path$",
    ):
        path.sums(torch.full((1, 999), 255))


def test_int8_products_on_arrays_and_tensors() -> None:
    rng = np.random.default_rng(1)
    mant = rng.integers(-127, 128, (5, 24))
    pre = rng.random((4, 24)) < 0.5
    want = pre.astype(np.int64) @ mant.T
    path = SynapsePath(QDense(weight_mant=mant, weight_exp=0, graded=False, weight_scale=1.0))
    assert path.int8_ok
    assert path.int8_sums(pre).tolist() == want.tolist()
    weights = path.w_int8  # made once per path, on the first call
    assert weights.dtype == torch.int8 and weights.tolist() == mant.T.tolist()
    assert path.int8_sums(torch.as_tensor(pre)).tolist() == want.tolist()  # a bool tensor
    for dtype in (np.float32, np.int64, np.int8):  # 0/1 spikes of other types
        assert path.int8_sums(pre.astype(dtype)).tolist() == want.tolist(), dtype
    assert path.w_int8 is weights
    # a mantissa of -128: the rows are kept wider (int32, |w| > 127), the products still int8
    mant[2, 3] = -128
    wide = SynapsePath(QDense(weight_mant=mant, weight_exp=0, graded=False, weight_scale=1.0))
    assert wide.int8_ok and wide.w_t_int.dtype == np.int32
    assert wide.int8_sums(pre).tolist() == (pre.astype(np.int64) @ mant.T).tolist()
    # the int8 way itself: oneDNN's packed u8 x s8 product (the rows cast to int8 for it),
    # checked once against _int_mm and kept where torch has it
    assert wide._int8(pre).tolist() == (pre.astype(np.int64) @ mant.T).tolist()
    assert (wide.qlinear is not False) == _onednn_has("qlinear_pointwise")
    if _onednn_has("qlinear_pointwise"):  # packed once; later calls take the packed product
        packed, wide.int8_sums = wide.qlinear, None
        assert wide._int8(pre).tolist() == (pre.astype(np.int64) @ mant.T).tolist()
        assert wide.qlinear is packed
    graded = SynapsePath(
        QDense(weight_mant=mant, weight_exp=0, graded=True, weight_scale=1.0), largest_input=255
    )
    with pytest.raises(ValueError, match=r"^int8 products need binary input to a dense layer"):
        graded.int8_sums(pre)


def test_int_mm_shapes_by_device() -> None:
    """CUDA's ``torch._int_mm`` needs more than 16 rows and multiples of 8; on CPUs it is
    never chosen (slower than float BLAS without VNNI)."""
    assert _int_mm_fits(17, 8, 16, "cuda")
    assert _int_mm_fits(17, 8, 16, "cuda:1")
    assert not _int_mm_fits(16, 8, 16, "cuda")
    assert not _int_mm_fits(17, 12, 16, "cuda")
    assert not _int_mm_fits(17, 8, 12, "cuda")
    assert not _int_mm_fits(64, 64, 64, "cpu")


def test_summed_current_without_bounds_or_beyond_float64_is_int64() -> None:
    """Parts that are currents already (no exponent) or whose bound passes 2**53 are summed
    path by path in int64: ``shift(2 * S, e)`` each, a floor for negative exponents."""
    from lmh_deploy.sim.synapse import summed_current

    currents = [(np.array([3, -5]), None, None), (np.array([4, 4]), None, None)]
    assert summed_current(currents).tolist() == [7, -1]
    big = 2**53
    parts = [(np.array([big + 1, -3]), 1, float(big + 1)), (np.array([5, -5]), -2, 5.0)]
    got = summed_current(parts)
    assert got.dtype == np.int64
    # (2 * (2**53 + 1)) << 1 + floor(10 / 4) ; (2 * -3) << 1 + floor(-10 / 4)
    assert got.tolist() == [4 * (big + 1) + 2, -12 - 3]
    # sums beyond 2**53 whose exponent brings the current back under it: still int64, not
    # float64, where 2**53 + 3 would round to 2**53 + 4 (floor((2**54 + 6) / 4) = 2**52 + 1)
    got = summed_current([(np.array([big + 3]), -2, float(big + 3))])
    assert got.tolist() == [big // 2 + 1]


def test_summed_bound_holds_at_the_parts_bounds_and_is_tight() -> None:
    """The neuron takes ``summed_bound`` as its current's peak to choose int32 arithmetic: it
    must hold for every sum at its part's bound (floors of negative exponents included) and
    be within one per part of the largest current (a looser one needlessly picks int64)."""
    from lmh_deploy.sim.synapse import summed_bound, summed_current

    for exps in ((0, 0), (3, -1), (-3, 2), (-1, -4), (5,)):
        bounds = [1000.0, 7.0, 1.0][: len(exps)]
        grid = np.array(np.meshgrid(*[[-b, -b + 1, 0, b - 1, b] for b in bounds])).reshape(len(exps), -1)
        parts = [(grid[i].astype(np.int64), e, b) for i, (e, b) in enumerate(zip(exps, bounds))]
        bound = summed_bound(parts)
        peak = int(np.abs(summed_current(parts)).max())
        assert peak <= bound <= peak + len(parts), (exps, peak, bound)
    assert summed_bound([(np.zeros(2), 0, 4.0), (np.zeros(2), None, 4.0)]) is None
    assert summed_bound([(np.zeros(2), 0, 4.0), (np.zeros(2), 1, None)]) is None


def test_summed_current_with_one_unbounded_or_exponentless_part() -> None:
    """A part without a bound, or a current already (no exponent), sends the whole sum to
    the int64 path; the other parts are still shifted by their exponents."""
    from lmh_deploy.sim.synapse import summed_current

    s = np.array([5, -5, 0])
    for other in ((np.array([3, -4, 1]), None, 9.0), (np.array([3, -4, 1]), 1, None)):
        got = summed_current([(s, -1, 5.0), other])
        shifted = other[0] if other[1] is None else other[0] * 4
        assert got.tolist() == (s + shifted).tolist()  # floor(2 * +-5 / 2) = +-5


def test_summed_current_float32_int32_and_broadcast_margins() -> None:
    """``summed_current`` picks float32, float64, int32 or int64 from the parts' bounds: a
    part beyond float32's exact integers whose exponent shrinks the sum still goes float64
    (2**24 + 3 would round to 2**24 + 4 in float32); two parts (the compiled add) give int32
    exactly while the bound fits (2**31 - 1 at most) and int64 from one more on, exact at
    2**31; a static (1, n) part broadcasts against per-step rows on either side; a
    negative exponent of -2 is a floor."""
    from lmh_deploy.sim.synapse import INT32_LIMIT, summed_current

    odd = 2**24 + 3
    got = summed_current([(np.array([odd, -odd]), -3, float(odd))])
    assert got.tolist() == [odd // 4, -((odd + 3) // 4)]  # floor(+-(2**25 + 6) / 8)
    for total in (INT32_LIMIT, INT32_LIMIT + 1, INT32_LIMIT + 3):  # bound (2 b + 1) + (b2 + 1)
        b = (total - 2 - 1000) // 2
        b2 = total - 2 - 2 * b
        parts = [(np.array([b, -b, 0]), 0, float(b)), (np.array([b2, 0, -b2]), -1, float(b2))]
        got = summed_current(parts)
        assert got.dtype == (np.int32 if total <= INT32_LIMIT else np.int64), total
        assert got.tolist() == [2 * b + b2, -2 * b, -b2], total
    step_rows = np.array([[1, 2, 3], [4, 5, 6]])
    static = np.array([[10, -20, 30]])
    for parts in (
        [(static, 0, 30.0), (step_rows, 1, 6.0)],
        [(step_rows, 1, 6.0), (static, 0, 30.0)],
    ):
        assert summed_current(parts).tolist() == (2 * static + 4 * step_rows).tolist()
    three = [(np.array([5, -5]), -2, 5.0), (np.array([1, 1]), 0, 1.0), (np.array([0, 0]), 0, 1.0)]
    assert summed_current(three).tolist() == [2 + 2, -3 + 2]  # floor(+-10 / 4)
    tensors = [(torch.as_tensor(s), e, b) for s, e, b in three]  # the torch device path
    got = summed_current(tensors)
    assert isinstance(got, torch.Tensor) and got.tolist() == [2 + 2, -3 + 2]


def test_lava_current_of_int32_sums_is_int64() -> None:
    """``torch._int_mm`` and the int32 gather give int32 sums: ``shift(2 * S, e)`` of them is
    formed in int64 (2**30 doubled and shifted left passes 2**31), a floor for ``e < 0``."""
    from lmh_deploy.sim.synapse import lava_current

    sums = [2**30, -(2**30), 5, -5]
    for e, want in ((2, [2**33, -(2**33), 40, -40]), (-3, [2**28, -(2**28), 1, -2])):
        for got in (
            lava_current(torch.tensor(sums, dtype=torch.int32), e),
            lava_current(np.array(sums, np.int32), e),
            lava_current(np.array(sums, np.float32), e),
        ):
            assert str(got.dtype).endswith("int64") and got.tolist() == want, (e, got)


def test_lava_current_rounds_float_sums_to_the_nearest_integer() -> None:
    """A float sum a rounding error off an integer (what a device convolution may return)
    gives that integer's current, on numpy and torch, float32 and float64: 2.9999 is 3, not
    2 (``shift(2 * 3, 1) = 12``, ``shift(2 * 3, -2) = floor(6 / 4) = 1``; -3: -12, -2)."""
    from lmh_deploy.sim.synapse import lava_current

    near = [2.9999, -2.9999, 3.0001, -3.0001]
    for e, want in ((1, [12, -12, 12, -12]), (-2, [1, -2, 1, -2])):
        for sums in (
            np.array(near),
            np.array(near, np.float32),
            torch.tensor(near, dtype=torch.float64),
            torch.tensor(near, dtype=torch.float32),
        ):
            got = lava_current(sums, e)
            assert str(got.dtype).endswith("int64") and got.tolist() == want, (e, sums.dtype)


def test_array_neuron_code_takes_int32_torch_currents_in_int64() -> None:
    """The torch array code's ``a_in`` from int32 sums (``torch._int_mm``) is int64 before
    it is doubled and shifted (2**30 * 2 << 2 passes 2**31)."""
    from lmh_deploy.sim import neuron as N

    got = N._lava_current(torch.tensor([2**30, -(2**30), 3], dtype=torch.int32), 2)
    assert got.dtype == torch.int64 and got.tolist() == [2**33, -(2**33), 24]


def test_conv_paths_refuse_a_wrong_layout_and_onednn_int8_where_it_errs() -> None:
    """A channels-last layout must be the convolution's input shape (said in the error), and
    the int8 convolution is offered for stride 1 even where the output is one column wide,
    never for a larger stride with such an output (oneDNN 3.x's wrong sums there)."""
    kernel = np.ones((2, 1, 1, 3), np.int64)
    with pytest.raises(ValueError, match=r"^input layout \(1, 2, 2\) is not the conv input \(1, 4, 3\)$"):
        SynapsePath(_conv_node(kernel, (1, 4, 3), graded=False), input_layout=(1, 2, 2))
    pooled = QDense(**{**vars(_conv_node(kernel, (1, 4, 3), graded=False)), "pool_kernel": (2, 1)})
    with pytest.raises(ValueError, match=r"^a max-pooled path delivers its sums in \(C, H, W\) order only$"):
        SynapsePath(pooled, channels_last_out=True)
    for stride, int8_offered in (((1, 1), _onednn_has("qconv2d_pointwise")), ((2, 1), False)):
        path = SynapsePath(_conv_node(kernel, (1, 4, 3), stride=stride, graded=False))
        assert path.conv.out_hw[1] == 1
        assert ("int8" in path.ways) == int8_offered, stride
    # where offered, the int8 convolution packs its kernel once (on the first call) and sums
    # each window of 3 (a row of 1 x 3 ones at every output: 0-3 of them spiking)
    pre = np.array([[1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0]], bool)  # (1, 4, 3)
    if _onednn_has("qconv2d_pointwise"):
        path = SynapsePath(_conv_node(kernel, (1, 4, 3), graded=False))
        path._gemm = None  # the check passed: no call falls back to the float convolution
        assert path._int8(pre).tolist() == [[3, 2, 1, 0] * 2]
        packed = path.qconv
        assert path._int8(pre).tolist() == [[3, 2, 1, 0] * 2] and path.qconv is packed


def test_the_cheaper_timed_way_runs_and_the_other_one_on_retime_calls() -> None:
    """Once both ways are timed, each call takes the lower ``cost * units``, and calls 8, 16,
    32 and every ``RETIME_EVERY``-th the other (an early measurement may have been unlucky;
    firing rates drift): gemm 1e-9 s x 5 units = 5e-9 s against events 1e-8 s x 100 units =
    1e-6 s, so gemm, and events on the retime calls (not gemm, which ``max`` of the names
    would give, nor events by ``cost / units``)."""
    from lmh_deploy.sim.synapse import RETIME_EVERY

    path = SynapsePath(QDense(weight_mant=np.ones((2, 3)), weight_exp=0, graded=False, weight_scale=1.0))
    path.ways, path.costs.cost = ["gemm", "events"], {"gemm": 1e-9, "events": 1e-8}
    chosen = [path.costs.choose({"gemm": 5, "events": 100}) for _ in range(2 * RETIME_EVERY)]
    assert RETIME_EVERY == 64 and path.costs.calls == 128
    assert [i + 1 for i, way in enumerate(chosen) if way == "events"] == [8, 16, 32, 64, 128]


def test_sum_pool_of_the_factored_convolution_by_hand() -> None:
    """``pooled_integers``: the 2 x 2 sum-pool of a 5 x 5 input (``pool_pad`` 1: the grid is
    ceil(5 / 2) = 3 high and wide, the last row and column sum one input row / column), int64
    for graded values, the same integers from the channels-last rows; spikes pool as uint8
    while the pool area is at most 255 (15 x 17 blocks of ones: 255), int64 from 256 on
    (16 x 16: 256, which uint8 would wrap to 0)."""
    from lmh_deploy.sim.conv import channels_last_order, pooled_integers

    kernel = np.ones((1, 2, 2, 2), np.int64)  # one 2 x 2 block: a pool-composed 1 x 1 kernel
    plan = conv_plan(_conv_node(kernel, (2, 5, 5), stride=(2, 2)))
    assert plan.pool == (2, 2) and plan.pool_pad == (1, 1) and plan.kernel.shape == (1, 2, 1, 1)
    x = np.concatenate([np.arange(25), 100 + np.arange(25)])[None]  # channel 1: 100 more
    want = np.array([[12, 20, 13], [52, 60, 33], [41, 45, 24]])  # 0+1+5+6, 2+3+7+8, 4+9, ...
    want = np.stack([want, want + 100 * np.array([[4, 4, 2], [4, 4, 2], [2, 2, 1]])])[None]
    for got in (pooled_integers(plan, x), pooled_integers(plan, x[:, channels_last_order((2, 5, 5))], True)):
        assert got.dtype == np.int64 and got.tolist() == want.tolist()
    for block, dtype in (((15, 17), np.uint8), ((16, 16), np.int64)):
        plan = conv_plan(_conv_node(np.ones((1, 1, *block), np.int64), (1, *block), stride=block))
        assert plan.pool_area == block[0] * block[1]
        ones = np.ones((1, plan.pool_area), bool)
        for got in (pooled_integers(plan, ones), pooled_integers(plan, ones, True)):
            assert got.dtype == dtype and got.tolist() == [[[[plan.pool_area]]]], block


def test_identity_shortcut_scales_spikes_in_int16_where_the_scales_fit() -> None:
    """A diagonal 1 x 1 convolution of spikes (a residual identity shortcut) delivers each
    channel's scale where a spike is: int16 sums while every scale fits int16, int64 for a
    scale of 40000 (int16 would wrap it to -25536)."""
    pre = np.array([[True, False, True, True, False, True]])  # 2 channels x 1 x 3
    for scales, dtype in (([5, -7], np.int16), ([5, 40_000], np.int64)):
        kernel = np.diag(scales)[:, :, None, None]
        path = SynapsePath(_conv_node(kernel, (2, 1, 3), graded=False))
        assert path.conv.diagonal and path.ways == ["gemm"]
        got = path.sums(pre)
        assert got.dtype == dtype and got.tolist() == [[scales[0], 0, scales[0], scales[1], 0, scales[1]]]
        # channels last in and out: position 0 of both channels, then 1, then 2
        path = SynapsePath(
            _conv_node(kernel, (2, 1, 3), graded=False), input_layout=(2, 1, 3), channels_last_out=True
        )
        got = path.sums(pre[:, [0, 3, 1, 4, 2, 5]])
        assert got.tolist() == [[scales[0], scales[1], 0, 0, scales[0], scales[1]]]


def test_torch_device_convolution_reads_and_writes_channels_last_rows() -> None:
    """The torch device path honours both layouts: input rows in (H, W, C) order and sums
    delivered in (H, W, C) order equal the reference convolution's (C, H, W) sums reordered."""
    from lmh_deploy.sim.conv import channels_last_order

    rng = np.random.default_rng(7)
    shape, kernel = (2, 4, 5), rng.integers(-127, 128, (3, 2, 3, 3))
    node = _conv_node(kernel, shape, padding=(1, 1), graded=False)
    pre = rng.random((3, 40)) < 0.5
    want = fx.conv_output(kernel, 0, pre.astype(np.int64), shape, (1, 1), (1, 1))  # (3, 3 * 4 * 5)
    into, out_of = channels_last_order(shape), channels_last_order((3, 4, 5))
    for layout, cl_out in ((None, False), (shape, False), (None, True), (shape, True)):
        path = SynapsePath(node, device="cpu", input_layout=layout, channels_last_out=cl_out)
        got = path.sums(torch.as_tensor(pre[:, into] if layout else pre)).numpy()
        assert got.tolist() == (want[:, out_of] if cl_out else want).tolist(), (layout, cl_out)


def test_int8_products_only_while_127_times_the_fan_in_fits_int32() -> None:
    """``torch._int_mm`` sums in int32: a binary dense layer takes the int8 way up to a fan-in
    of (2**31 - 1) // 127 = 16_909_320 (127 x that = 2**31 - 7), not one more."""
    for fan_in, ok in ((16_909_320, True), (16_909_321, False)):
        path = SynapsePath(
            QDense(weight_mant=np.ones((1, fan_in), np.int8), weight_exp=0, graded=False, weight_scale=1.0)
        )
        assert path.int8_ok == ok and ("int8" in path.ways) == ok, fan_in


def test_chunks_keep_the_largest_synaptic_sums_below_a_fresh_memory_map() -> None:
    """The default chunk length cuts the steps into the fewest equal chunks whose largest
    synaptic sums stay below 32 MiB (glibc maps larger arrays afresh at every allocation:
    every page faults), and keeps about 1000 sample-steps otherwise; a plan on numpy sizes
    its sums at 4 bytes a float32 value, a torch device plan not at all."""
    from lmh_deploy.models.architectures import build
    from lmh_deploy.frontends.pytorch import export_model
    from lmh_deploy.passes.quantize import quantize_graph
    from lmh_deploy.sim.simulator import FRESH_MAP_BYTES, default_chunk_steps, plan_for

    assert FRESH_MAP_BYTES == 32 << 20
    assert default_chunk_steps(16) == default_chunk_steps(16, 4, 4 * 65_536) == 62  # VGG-13: 16 MiB
    assert default_chunk_steps(16, 4, 4 * 131_072) == 2  # ResNet-19: 64 rows were 32 MiB
    assert default_chunk_steps(16, 5, 4 * 131_072) == 3  # 3 steps fit: 5 steps as 3 + 2
    assert default_chunk_steps(256, 8, 4 * 12_544) == 2  # 3 steps were 38.5 MB: 4 chunks of 2
    assert default_chunk_steps(1, 10, FRESH_MAP_BYTES) == 1  # one row beyond: a step a chunk
    for batch, steps, row in ((16, 4, 4 * 131_072), (16, 5, 4 * 131_072), (256, 8, 4 * 12_544)):
        chunk = default_chunk_steps(batch, steps, row)
        assert chunk * batch * row < FRESH_MAP_BYTES

    model = build("cnn", (1, 8, 8), 10, timesteps=2, width_mult=0.25).eval()
    q, _ = quantize_graph(export_model(model, input_shape=(1, 8, 8), timesteps=2))
    widest = max(int(q.node(name).sums_size()) for name in q.of_kind("q_dense"))
    assert plan_for(q, None).sums_row_bytes == 4 * widest > 0
    assert plan_for(q, "cpu").sums_row_bytes == 0
