"""How sim/ runs the convolution of a ``QDense`` path: exact integer sums, least work.

The quantiser composes an average pooling (``sy x sx``, stride ``(sy, sx)``) followed by a
stride-1 convolution into ONE kernel: each integer of the original kernel repeated over an
aligned ``sy x sx`` block, stride ``(sy, sx)``, padding ``(sy * p_y, sx * p_x)``
(:func:`lmh_deploy.ir.synapses.pool_conv_kernel`; the IR and Lava keep it so). Such a kernel
``K`` gives, at output ``(o_y, o_x)``::

    sum_{b_y, b_x} k[b_y, b_x] * P[o_y + b_y - p_y, o_x + b_x - p_x]

where ``k = K[::sy, ::sx]`` and ``P[q_y, q_x]`` is the sum of the input block
``[q_y sy, (q_y + 1) sy) x [q_x sx, (q_x + 1) sx)`` (zero outside the input): a sum-pool
of the input followed by ``k`` at stride 1 with padding ``(p_y, p_x)``, ``sy * sx`` times
fewer multiply-adds. The pooled grid is ``ceil(H / sy)`` high (an input not divisible by
the stride is padded with zeros at the bottom/right), and the result cropped to the
composite's ``floor((H + 2 sy p_y - K_h) / sy) + 1`` rows (likewise columns). Every value is
an integer: the pool sums ``sy * sx`` inputs (int64), and the pooled values and the conv's
partial sums are bounded as the composite's (the caller's check picks float32, float64 or
integers from that bound).

:func:`conv_plan` detects the block structure from the integer kernel alone (no IR flag):
any kernel constant over aligned stride blocks, with padding a multiple of the stride, is
factored. A diagonal 1 x 1 kernel at stride 1 (a residual net's identity shortcut, quantised
as a convolution) is a per-channel product. Every other kernel runs as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmh_deploy.ir.nodes import conv_output_hw


@dataclass(frozen=True)
class ConvPlan:
    """An optional sum-pool then a convolution; ``pool`` is ``(1, 1)`` when nothing is pooled."""

    input_shape: tuple[int, int, int]  # (C, H, W) of the path's presynaptic layer
    kernel: np.ndarray  # integer (C_out, C_in, kh, kw) actually convolved
    stride: tuple[int, int]
    padding: tuple[int, int]
    pool: tuple[int, int]  # sum-pool window = stride, applied first
    pool_pad: tuple[int, int]  # zero rows/columns added at the bottom/right before pooling
    out_hw: tuple[int, int]  # the composite's output size (the pooled conv is cropped to it)
    #: a diagonal 1 x 1 kernel (an identity shortcut): ``kernel`` is (C, 1, 1, 1), each
    #: channel scaled by its own integer, an elementwise product instead of a convolution
    diagonal: bool = False

    @property
    def pool_area(self) -> int:
        return self.pool[0] * self.pool[1]

    @property
    def factored(self) -> bool:
        return self.pool_area > 1


def block_constant(kernel: np.ndarray, block: tuple[int, int]) -> bool:
    """True when ``kernel`` (C_out, C_in, kh, kw) is constant over aligned ``block`` tiles."""
    c_out, c_in, kh, kw = kernel.shape
    sy, sx = block
    if kh % sy or kw % sx:
        return False
    tiles = np.asarray(kernel).reshape(c_out, c_in, kh // sy, sy, kw // sx, sx)
    return bool(np.array_equal(tiles, np.broadcast_to(tiles[:, :, :, :1, :, :1], tiles.shape)))


def conv_plan(node) -> ConvPlan:
    """The cheapest exact execution of conv ``QDense`` ``node`` (see the module doc)."""
    kernel = np.asarray(node.weight_mant)
    c, h, w = (int(d) for d in node.conv_input_shape)
    sy, sx = (int(s) for s in node.conv_stride)
    py, px = (int(p) for p in node.conv_padding)
    kh, kw = kernel.shape[2:]
    out_hw = conv_output_hw(h, w, (kh, kw), (sy, sx), (py, px))
    if _diagonal(kernel) and (sy, sx, py, px) == (1, 1, 0, 0):
        scale = np.ascontiguousarray(np.diagonal(kernel[:, :, 0, 0]).reshape(-1, 1, 1, 1))
        return ConvPlan((c, h, w), scale, (1, 1), (0, 0), (1, 1), (0, 0), out_hw, diagonal=True)
    if sy * sx == 1 or py % sy or px % sx or not block_constant(kernel, (sy, sx)):
        return ConvPlan((c, h, w), kernel, (sy, sx), (py, px), (1, 1), (0, 0), out_hw)
    pooled_h, pooled_w = -(-h // sy), -(-w // sx)
    return ConvPlan(
        (c, h, w),
        np.ascontiguousarray(kernel[:, :, ::sy, ::sx]),
        (1, 1),
        (py // sy, px // sx),
        (sy, sx),
        (pooled_h * sy - h, pooled_w * sx - w),
        out_hw,
    )


def _diagonal(kernel: np.ndarray) -> bool:
    c_out, c_in, kh, kw = kernel.shape
    if (kh, kw) != (1, 1) or c_out != c_in:
        return False
    square = kernel[:, :, 0, 0]
    return bool(np.array_equal(square, np.diag(np.diagonal(square))))


def channels_last_order(shape: tuple[int, int, int]) -> np.ndarray:
    """For a (C, H, W) layer, the (C, H, W)-order index of each position of its (H, W, C)
    order: ``nhwc = nchw[..., order]``, ``nchw[..., order] = nhwc``."""
    c, h, w = shape
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()


def as_images(rows, shape: tuple[int, int, int], channels_last: bool):
    """Flat rows (rows, C * H * W) of a numpy array or torch tensor as (rows, C, H, W): a
    view, strided channels last where the rows hold the (H, W, C) order."""
    c, h, w = shape
    if not channels_last:
        return rows.reshape(rows.shape[0], c, h, w)
    images = rows.reshape(rows.shape[0], h, w, c)
    return images.permute(0, 3, 1, 2) if hasattr(images, "permute") else images.transpose(0, 3, 1, 2)


def flat_rows(images, channels_last: bool):
    """(rows, C, H, W) torch tensor -> flat rows in (C, H, W) or (H, W, C) order (a view
    where the memory is already in that order)."""
    if channels_last:
        images = images.permute(0, 2, 3, 1)
    return images.contiguous().reshape(images.shape[0], -1)


def run_conv(plan: ConvPlan, x, kernel, channels_last_in: bool = False, channels_last_out: bool = False):
    """The sums ``(rows, C_out * H_out * W_out)`` for input rows ``x`` (rows, C * H * W).

    ``x`` is a float32/float64 torch tensor of integers; ``kernel`` the plan's kernel as a
    tensor of that dtype (exact float conv), or int64 (an int64 im2col product, for sums
    beyond float64's exact range; ``x`` is then float64). ``channels_last_in`` / ``_out``:
    the rows hold (H, W, C) order (:func:`as_images`), in and out.
    """
    import torch
    import torch.nn.functional as F

    rows = x.shape[0]
    x = as_images(x, plan.input_shape, channels_last_in)
    if plan.diagonal:
        if kernel.dtype == torch.int64:
            x = x.to(torch.int64)
        return flat_rows(x * kernel.reshape(1, -1, 1, 1), channels_last_out)
    if channels_last_out and kernel.dtype != torch.int64:
        # channels-last input makes the convolution write channels-last output: the (H, W, C)
        # rows are then a view, not a transposing copy (VGG-13's first conv, 16 samples of
        # 3 x 32 x 32, one thread: 3.7 -> 1.4 ms); a view already where the input is
        x = x.contiguous(memory_format=torch.channels_last)
    if plan.factored:
        if any(plan.pool_pad):
            x = F.pad(x, (0, plan.pool_pad[1], 0, plan.pool_pad[0]))
        x = F.avg_pool2d(x, plan.pool, divisor_override=1)  # a sum: integers, exact
    if kernel.dtype == torch.int64:
        cols = F.unfold(x, tuple(kernel.shape[2:]), padding=plan.padding, stride=plan.stride).to(torch.int64)
        conv_h, _ = conv_output_hw(x.shape[2], x.shape[3], kernel.shape[2:], plan.stride, plan.padding)
        out = (kernel.reshape(kernel.shape[0], -1) @ cols).reshape(rows, kernel.shape[0], conv_h, -1)
    else:
        out = F.conv2d(x, kernel, stride=plan.stride, padding=plan.padding)
    # a view; the pooled conv may pass the composite's size: cropped to it
    return flat_rows(out[:, :, : plan.out_hw[0], : plan.out_hw[1]], channels_last_out)


def pooled_integers(plan: ConvPlan, pre: np.ndarray, channels_last: bool = False) -> np.ndarray:
    """The input of the plan's convolution as integers (rows, C, H', W'): ``pre`` (rows, n)
    itself, or its sum-pool (uint8 for spikes, whose block sums stay <= 255, else int64);
    a channels-last strided view where ``pre`` holds (H, W, C) order (``channels_last``).

    Bytes pooled into uint8 run as one compiled pass where numba is there
    (:func:`lmh_deploy.sim.gather.sum_pool_bytes`); else, and for int64, ``sy * sx``
    strided adds."""
    rows = pre.shape[0]
    x = as_images(pre.view(np.uint8) if pre.dtype == bool else pre, plan.input_shape, channels_last)
    if not plan.factored:
        return x
    sy, sx = plan.pool
    c, h, w = plan.input_shape
    dtype = np.uint8 if x.dtype == np.uint8 and plan.pool_area <= 255 else np.int64
    pooled_hw = ((h + plan.pool_pad[0]) // sy, (w + plan.pool_pad[1]) // sx)
    from lmh_deploy.sim.neuron import numba_active, row_ranges, run_in_threads, sim_threads

    if dtype == np.uint8 and numba_active():
        from lmh_deploy.sim.gather import sum_pool_bytes

        flat = np.ascontiguousarray(pre).view(np.uint8)
        if channels_last:
            pooled = np.empty((rows,) + pooled_hw + (c,), np.uint8)
            sum_pool_bytes(flat.reshape(rows, h, w, c), pooled, plan.pool, True)
            return pooled.transpose(0, 3, 1, 2)
        pooled = np.empty((rows, c) + pooled_hw, np.uint8)
        sum_pool_bytes(flat.reshape(rows, c, h, w), pooled, plan.pool, False)
        return pooled
    out: np.ndarray = (
        np.zeros((rows,) + pooled_hw + (c,), dtype).transpose(0, 3, 1, 2)
        if channels_last
        else np.zeros((rows, c) + pooled_hw, dtype)
    )

    def pool(lo: int, hi: int) -> None:
        for dy in range(sy):
            for dx in range(sx):
                part = x[lo:hi, :, dy::sy, dx::sx]
                target = out[lo:hi, :, : part.shape[2], : part.shape[3]]
                np.add(target, part, out=target)

    # ranges of rows in threads (numpy's add releases the GIL): serial, the pooling was
    # 11 % of the mnist5k cnn's run at one thread (bench/sim_vs_float.py's cnn row)
    run_in_threads(pool, row_ranges(rows, c * h * w, sim_threads()), work=rows * c * h * w)
    return out


#: Largest unrolled kernel (bytes of int8) :func:`unrolled_fits` allows
UNROLLED_BYTES = 16 << 20


def unrolled_fits(plan: ConvPlan, pooled_hw) -> bool:
    """The plan's convolution is cheaper as a product with its unrolled kernel
    (:func:`unrolled_kernel`) than as a product of gathered columns: its (pooled) input has
    no more positions than the kernel has taps (each output then meets the whole input, or
    padding), and the unrolled kernel is at most :data:`UNROLLED_BYTES`."""
    c_out, c_in, kh, kw = plan.kernel.shape
    positions = int(pooled_hw[0]) * int(pooled_hw[1])
    size = c_out * plan.out_hw[0] * plan.out_hw[1] * c_in * positions
    return not plan.diagonal and positions <= kh * kw and size <= UNROLLED_BYTES


def unrolled_kernel(
    plan: ConvPlan, pooled_shape, channels_last_in: bool, channels_last_out: bool
) -> np.ndarray:
    """The plan's convolution as an int8 matrix ``(n_out, n_in)``: row ``o`` holds the kernel
    taps output ``o`` meets at every input position (zero where none), so that the sums of
    flat input rows ``x`` (rows, n_in) are ``x @ M.T`` (the same integers as the convolution).
    ``pooled_shape``: (C, H, W) of what the convolution reads (the sum-pooled input where the
    plan pools); inputs in (H, W, C) order where ``channels_last_in`` (else (C, H, W)),
    outputs (of the composite's size ``out_hw``) in (H, W, C) order where
    ``channels_last_out``."""
    kernel = np.asarray(plan.kernel)
    c_out, c_in, kh, kw = kernel.shape
    c, h, w = (int(d) for d in pooled_shape)
    (oh, ow), (sy, sx), (py, px) = plan.out_hw, plan.stride, plan.padding
    full = np.zeros((c_out, oh, ow, c_in, h, w), np.int8)
    for oy in range(oh):
        for ox in range(ow):
            for ty in range(kh):
                iy = oy * sy + ty - py
                if not 0 <= iy < h:
                    continue
                for tx in range(kw):
                    ix = ox * sx + tx - px
                    if 0 <= ix < w:
                        full[:, oy, ox, :, iy, ix] = kernel[:, :, ty, tx]
    if channels_last_out:
        full = full.transpose(1, 2, 0, 3, 4, 5)
    if channels_last_in:
        full = full.transpose(0, 1, 2, 4, 5, 3)
    return np.ascontiguousarray(full).reshape(c_out * oh * ow, c_in * h * w)
