"""Every float synapse node as the sparse linear map it computes on flattened (C, H, W) data.

Composing the maps of a chain (e.g. pool -> conv) gives the one synaptic matrix that
connects two neuron layers; :mod:`lmh_deploy.passes.quantize` quantises that matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmh_deploy.ir import SYNAPSE_KINDS, AvgPool, Conv2d, Dense, Graph, MaxPool, Node


def _window_map(
    in_shape: Sequence[int],
    out_hw: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
):
    """For every (out y, out x, ky, kx): the input row/col and a validity mask."""
    oy, ox, ky, kx = np.meshgrid(
        np.arange(out_hw[0]), np.arange(out_hw[1]), np.arange(kernel[0]), np.arange(kernel[1]), indexing="ij"
    )
    iy = oy * stride[0] - padding[0] + ky
    ix = ox * stride[1] - padding[1] + kx
    valid = (iy >= 0) & (iy < in_shape[1]) & (ix >= 0) & (ix < in_shape[2])
    return oy, ox, ky, kx, iy, ix, valid


def conv_matrix(node: Conv2d, dtype: Any = None) -> sp.csr_matrix:
    """(C_out*H_out*W_out, C_in*H*W) matrix of a zero-padded 2-D cross-correlation.

    Built in CSR order directly (row ``(c_out, y, x)``, then ``c_in`` and the kernel taps
    inside the image), without a COO detour and in the entries' final ``dtype`` (default:
    the kernel's) with 32-bit indices where they fit: a CIFAR ResNet-20 has 39 million
    entries, and every copy of them is memory the Lava workers' fork inherits."""
    c_out, c_in, kh, kw = node.weight.shape
    _, h_out, w_out = node.output_shape
    _, h, w = node.input_shape
    _, _, _, _, iy, ix, valid = _window_map(
        node.input_shape, (h_out, w_out), (kh, kw), node.stride, node.padding
    )
    positions, taps = h_out * w_out, kh * kw
    pixel = (iy * w + ix).reshape(positions, taps)
    valid = valid.reshape(positions, taps)
    per_row = np.tile(valid.sum(axis=1) * c_in, c_out)
    index = np.int32 if max(node.input_size(), int(per_row.sum())) < 2**31 else np.int64
    keep = np.broadcast_to(valid[None, :, None, :], (c_out, positions, c_in, taps))
    cols = (np.arange(c_in)[None, None, :, None] * (h * w) + pixel[None, :, None, :]).astype(index)
    cols = np.broadcast_to(cols, keep.shape)[keep]
    kernel = node.weight.reshape(c_out, 1, c_in, taps).astype(dtype or node.weight.dtype, copy=False)
    vals = np.broadcast_to(kernel, keep.shape)[keep]
    indptr = np.concatenate([[0], np.cumsum(per_row)]).astype(index)
    return sp.csr_matrix((vals, cols, indptr), shape=(node.output_size(), node.input_size()), copy=False)


def pool_matrix(node: AvgPool) -> sp.csr_matrix:
    """Average pooling: each output is the mean of its kernel window, per channel."""
    c, h, w = node.input_shape
    _, h_out, w_out = node.output_shape
    oy, ox, ky, kx, iy, ix, valid = _window_map(
        node.input_shape, (h_out, w_out), node.kernel, node.stride, (0, 0)
    )
    oy, ox, iy, ix = (a[valid] for a in (oy, ox, iy, ix))
    ch = np.arange(c)[:, None]
    rows = ch * h_out * w_out + (oy * w_out + ox)[None, :]
    cols = ch * h * w + (iy * w + ix)[None, :]
    vals = np.full(rows.shape, 1.0 / (node.kernel[0] * node.kernel[1]))
    return sp.csr_matrix(
        (vals.ravel(), (rows.ravel(), cols.ravel())), shape=(node.output_size(), node.input_size())
    )


def synapse_matrix(node: Node) -> sp.csr_matrix:
    """The linear map of one synapse node."""
    if isinstance(node, Dense):
        return sp.csr_matrix(node.weight)
    if isinstance(node, Conv2d):
        return conv_matrix(node)
    if isinstance(node, AvgPool):
        return pool_matrix(node)
    raise TypeError(f"{node.kind} is not a synapse node")


def synapse_chain(graph: Graph, last: str) -> tuple[str, list[str]]:
    """Walk back from a synapse node to the neuron or input feeding it: ``(source, chain)``.

    ``chain`` lists the synapse nodes from the source side to ``last``.
    """
    chain, cur = [], last
    while graph.node(cur).kind in SYNAPSE_KINDS:
        chain.append(cur)
        (cur,) = graph.inputs_of(cur)
    return cur, chain[::-1]


def chain_matrix(graph: Graph, chain: list[str]):
    """The composed linear map of a synapse chain: dense for a lone Dense, else CSR."""
    if len(chain) == 1 and isinstance(graph.node(chain[0]), Dense):
        return graph.node(chain[0]).weight
    matrix = None
    for name in chain:
        m = synapse_matrix(graph.node(name))
        matrix = m if matrix is None else m @ matrix
    return sp.csr_matrix(matrix)


@dataclass(frozen=True)
class DenseChain:
    """The composed map of a chain that ends in a Dense (avgpool -> flatten -> fc), times
    ``unit``: ``(W @ M) * unit`` with ``M`` the chain before the Dense, as CSR.

    Every input reaches every output through ``W``, so the product is a full matrix: VGG's or
    the paper's CIFAR10Net's first classifier layer after its pool (2048 x 65536) holds 134
    million entries, 1.6 GB as float CSR. It is handed out a block of rows at a time, each the
    rows :func:`chain_matrix` would compute (the same entries; the consumers compute what they
    computed on the whole matrix, row by row in the same order: the same floats)."""

    weight: np.ndarray  # W (n_out, k)
    maps: sp.csr_matrix  # M (k, n_in)
    unit: float = 1.0

    #: entries per block of rows (32 MB of float64)
    BLOCK_ENTRIES = 1 << 22

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.weight.shape[0]), int(self.maps.shape[1]))

    def row_blocks(self) -> Iterator[tuple[slice, sp.csr_matrix]]:
        """``(rows, block)``: the composed rows ``rows`` as canonical CSR (sorted indices, as
        scipy leaves the whole product after its first ``abs``), top to bottom."""
        n_out, n_in = self.shape
        step = max(1, self.BLOCK_ENTRIES // max(n_in, 1))
        for start in range(0, n_out, step):
            rows = slice(start, min(start + step, n_out))
            block = sp.csr_matrix(sp.csr_matrix(self.weight[rows]) @ self.maps) * self.unit
            block.sum_duplicates()
            yield rows, block

    def toarray(self) -> np.ndarray:
        """The whole matrix, dense (small chains and tests only)."""
        out = np.zeros(self.shape)
        for rows, block in self.row_blocks():
            out[rows] = block.toarray()
        return out


def composes_dense(graph: Graph, chain: list[str]) -> bool:
    """Whether ``chain`` ends in a Dense after sparse maps only (pooling, convolution):
    its composed map is then a :class:`DenseChain`."""
    nodes = [graph.node(n) for n in chain]
    return (
        len(nodes) > 1 and isinstance(nodes[-1], Dense) and not any(isinstance(n, Dense) for n in nodes[:-1])
    )


# ------------------------------------------------------------------ quantised synapses
#: dtype of weight mantissas (|m| <= 127), a network's largest arrays: the narrowest that also
#: holds Lava's weights ``2 * m`` and other small multiples exactly, so that arithmetic in the
#: mantissas' own dtype (``2 * weight_mant``, as the backends and users write it) never wraps
#: as int8 would; an eighth of int64's memory
MANT_DTYPE = np.int16
#: a CSR matrix with at least this share of its entries set is held dense (CSR costs 6 bytes
#: per int16 entry, dense 2 per position; sim/ computes such a path densely anyway)
DENSE_ENOUGH = 0.5


def compact_mantissa(m: Any) -> Any:
    """Integer mantissas (dense, CSR or a kernel) as :data:`MANT_DTYPE`, a CSR matrix dense
    where it is :data:`DENSE_ENOUGH`; the integers are unchanged. Non-integers and values
    beyond its range come back as they are, for the node's check to name."""
    values = m.data if sp.issparse(m) else np.asarray(m)
    if not np.issubdtype(values.dtype, np.integer) or (
        values.size and int(np.abs(values).max()) > np.iinfo(MANT_DTYPE).max
    ):
        return m
    if sp.issparse(m):
        csr = sp.csr_matrix(m)
        if csr.nnz >= DENSE_ENOUGH * np.prod(csr.shape, dtype=np.float64):
            return csr.astype(MANT_DTYPE).toarray()
        return csr.astype(MANT_DTYPE)
    return np.asarray(m).astype(MANT_DTYPE, copy=False)


def pool_conv_kernel(pool: AvgPool, conv: Conv2d) -> Conv2d | None:
    """``conv(avgpool(x))`` as one convolution on ``x``, or None when that is not exact.

    With a K x K pool of stride K (input divisible by K) and a stride-1 convolution with
    padding P, the composite has kernel ``w[ky // K, kx // K] / K**2`` of size kK, stride
    K and padding KP.
    """
    k = pool.kernel
    _, h, w = pool.input_shape
    if pool.stride != k or k[0] != k[1] or h % k[0] or w % k[1] or conv.stride != (1, 1):
        return None
    kk = k[0]
    weight = np.repeat(np.repeat(conv.weight, kk, axis=2), kk, axis=3) / (kk * kk)
    return Conv2d(
        weight=weight,
        input_shape=pool.input_shape,
        stride=(kk, kk),
        padding=(conv.padding[0] * kk, conv.padding[1] * kk),
    )


def chain_conv(graph: Graph, chain: list[str]) -> Conv2d | None:
    """The chain as a single convolution when it is one (``[conv]`` or ``[pool, conv]``)."""
    nodes = [graph.node(n) for n in chain]
    if len(nodes) == 1 and isinstance(nodes[0], Conv2d):
        return nodes[0]
    if len(nodes) == 2 and isinstance(nodes[0], AvgPool) and isinstance(nodes[1], Conv2d):
        return pool_conv_kernel(nodes[0], nodes[1])
    return None


def qdense_matrix(node, scale: int = 1, conv_dtype: Any = np.int64):
    """The (n_out, n_in) integer matrix of a ``QDense`` times ``scale`` (dense or CSR, int64
    entries; a convolution's CSR has ``conv_dtype`` entries)."""
    mant = node.weight_mant.astype(np.int64)
    if node.is_conv:
        return conv_matrix(node.conv_node(scale * mant), dtype=conv_dtype)
    return scale * mant


def _conv_tap_counts(conv: Conv2d) -> tuple[np.ndarray, np.ndarray]:
    """Valid kernel taps per output position (H_out, W_out) and uses per input position (H, W)."""
    _, h_out, w_out = conv.output_shape
    oy, ox, _, _, iy, ix, valid = _window_map(
        conv.input_shape, (h_out, w_out), conv.weight.shape[2:], conv.stride, conv.padding
    )
    per_out = valid.sum(axis=(2, 3))
    per_in = np.zeros(conv.input_shape[1:], np.int64)
    np.add.at(per_in, (iy[valid], ix[valid]), 1)
    return per_out, per_in


def _qdense_degrees(node, incoming: bool) -> np.ndarray:
    """Synapses per postsynaptic (``incoming``) or per presynaptic neuron of a ``QDense``."""
    if node.is_conv:
        conv = node.conv_node()
        per_out, per_in = _conv_tap_counts(conv)
        c_out, c_in = conv.weight.shape[:2]
        return np.tile(per_out.ravel() * c_in, c_out) if incoming else np.tile(per_in.ravel() * c_out, c_in)
    m = node.weight_mant
    if sp.issparse(m):
        return np.diff((sp.csr_matrix(m) if incoming else sp.csc_matrix(m)).indptr)
    return np.full(m.shape[0], m.shape[1]) if incoming else np.full(m.shape[1], m.shape[0])


def qdense_fan_out(node) -> np.ndarray:
    """Synapses leaving each presynaptic neuron (n_in,): event-driven synop accounting."""
    return _qdense_degrees(node, incoming=False)


def qdense_fan_in(node) -> np.ndarray:
    """Synapses arriving at each postsynaptic neuron (n_out,): Loihi synaptic memory."""
    return _qdense_degrees(node, incoming=True)


def abs_row_sums(node_or_matrix) -> np.ndarray:
    """Row sums of |w| per postsynaptic neuron-channel: the worst-case input (conv: per channel)."""
    m = node_or_matrix
    if getattr(m, "ndim", 2) == 4:  # a kernel: worst over positions = all taps valid
        return np.abs(m).reshape(m.shape[0], -1).sum(axis=1)
    return np.asarray(abs(m).sum(axis=1)).ravel()


def apply_synapse(node: Node, x: np.ndarray) -> np.ndarray:
    """``synapse_matrix(node) @ x`` for (..., n_in) float inputs without building the matrix
    (a ``MaxPool``: the pooled values)."""
    import torch

    lead = x.shape[:-1]
    if isinstance(node, Dense):
        return x @ node.weight.T
    if isinstance(node, MaxPool):  # the one definition the integer backends use too
        from lmh_deploy.semantics.pooling import max_pool

        return max_pool(np.asarray(x, np.float64), node.windows())
    if not isinstance(node, (Conv2d, AvgPool)):
        raise TypeError(f"{node.kind} is not a synapse node")
    flat = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).reshape(
        (-1,) + tuple(node.input_shape)
    )
    if isinstance(node, Conv2d):
        out = torch.nn.functional.conv2d(
            flat, torch.from_numpy(node.weight.astype(np.float64)), stride=node.stride, padding=node.padding
        )
    else:
        out = torch.nn.functional.avg_pool2d(flat, node.kernel, node.stride)
    return out.reshape(lead + (-1,)).numpy()


def largest_presynaptic(graph: Graph, dense: str) -> int:
    """Largest ``|value|`` the source of integer synapse path ``dense`` sends per step: the
    graded input's largest message (``QInput.max_value``: 255 for 8-bit pixels, 32767 for
    signed 16-bit messages), a graded-spike layer's ``max_spikes``, or 1 (binary spikes)."""
    if not graph.node(dense).graded:
        return 1
    (src,) = graph.inputs_of(dense)
    source = graph.node(src)
    return int(source.max_value if source.kind == "q_input" else source.max_spikes)
