"""Max pooling of synaptic currents (torch's ``MaxPool2d`` windows), defined once.

A ``MaxPool2d`` between a convolution and a neuron (``Conv2d -> BatchNorm2d -> MaxPool2d ->
neuron``) takes, per channel and window, the largest current. The deployed network computes
it on the integer currents ``a_in`` the synapses deliver, before the neuron adds its bias:
``max_w(a) + b = max_w(a + b)`` for a per-channel bias, and ``max`` commutes with the
positive weight scale and the (monotone) weight-exponent shift, so the pooled integer current
has the scale of the convolution's. The float reference, :mod:`sim` and the Lava models
(``fixed_pt`` and ``floating_pt``) all call :func:`max_pool` with the windows of
:func:`pool_windows`, on numpy arrays or torch tensors alike.

Windows are torch's: ``kernel``, ``stride``, ``padding`` (padded taps never win, as torch
pads with -inf), ``dilation`` and ``ceil_mode`` (a last, partial window only where it starts
inside the input or its left padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pooled_length(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Output length of one axis, as ``torch.nn.MaxPool2d`` computes it (may be < 1)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1  # floor division, as torch's div_rtn
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start in the right padding
    return out


def pool_windows(
    input_shape: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
    ceil_mode: bool = False,
) -> np.ndarray:
    """``(C*H'*W', kh*kw)`` int64: for every output (channel-major, as the (C, H, W) flat
    order) the flat input index of every tap. A tap outside the input repeats its window's
    first tap inside it, which leaves the maximum unchanged. ValueError where an output has
    no tap inside the input (torch refuses such geometry too)."""
    c, h, w = (int(d) for d in input_shape)
    h_out = pooled_length(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    w_out = pooled_length(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if h_out < 1 or w_out < 1:
        raise ValueError(f"the pooling window does not fit the input {tuple(input_shape)}")
    oy, ox, ky, kx = np.meshgrid(
        np.arange(h_out), np.arange(w_out), np.arange(kernel[0]), np.arange(kernel[1]), indexing="ij"
    )
    iy = (oy * stride[0] - padding[0] + ky * dilation[0]).reshape(h_out * w_out, -1)
    ix = (ox * stride[1] - padding[1] + kx * dilation[1]).reshape(h_out * w_out, -1)
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    if not inside.any(axis=1).all():
        raise ValueError(f"a pooling window of input {tuple(input_shape)} lies wholly in the padding")
    first = inside.argmax(axis=1)  # the first tap inside the input
    rows = np.arange(h_out * w_out)
    pixel = np.where(inside, iy * w + ix, (iy[rows, first] * w + ix[rows, first])[:, None])
    return (
        (np.arange(c)[:, None, None] * (h * w) + pixel[None]).reshape(c * h_out * w_out, -1).astype(np.int64)
    )


def max_pool(x: Any, windows: np.ndarray) -> Any:
    """``out[..., i] = max_j x[..., windows[i, j]]``: the pooled currents of ``x`` (..., C*H*W),
    numpy array or torch tensor (integers or reals; the result keeps the type)."""
    if type(x).__module__.startswith("torch"):
        import torch

        taps = torch.as_tensor(windows, device=x.device)
        out = x[..., taps[:, 0]]
        for j in range(1, taps.shape[1]):
            out = torch.maximum(out, x[..., taps[:, j]])
        return out
    out = x[..., windows[:, 0]]
    for j in range(1, windows.shape[1]):
        out = np.maximum(out, x[..., windows[:, j]])
    return out


def mean_over_windows(x: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """The mean of ``x`` (..., C*H*W) over each window's taps (a padded tap counts its
    stand-in): what a per-position quantity (a rounding error) is on average where the max
    comes from, not knowing which tap wins."""
    return np.asarray(x)[..., windows].mean(axis=-1)
