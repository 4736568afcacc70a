"""Every float synapse node as the sparse linear map it computes on flattened (C, H, W) data.

Composing the maps of a chain (e.g. pool -> conv) gives the one synaptic matrix that
connects two neuron layers; :mod:`lmh_deploy.quantize` quantises that matrix.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmh_deploy.ir import SYNAPSE_KINDS, AvgPool, Conv2d, Dense, Graph, Node


def _window_map(in_shape: tuple[int, int, int], out_hw: tuple[int, int], kernel: tuple[int, int],
                stride: tuple[int, int], padding: tuple[int, int]):
    """For every (out y, out x, ky, kx): the input row/col and a validity mask."""
    oy, ox, ky, kx = np.meshgrid(np.arange(out_hw[0]), np.arange(out_hw[1]), np.arange(kernel[0]),
                                 np.arange(kernel[1]), indexing="ij")
    iy = oy * stride[0] - padding[0] + ky
    ix = ox * stride[1] - padding[1] + kx
    valid = (iy >= 0) & (iy < in_shape[1]) & (ix >= 0) & (ix < in_shape[2])
    return oy, ox, ky, kx, iy, ix, valid


def conv_matrix(node: Conv2d) -> sp.csr_matrix:
    """(C_out*H_out*W_out, C_in*H*W) matrix of a zero-padded 2-D cross-correlation."""
    c_out, c_in, kh, kw = node.weight.shape
    _, h_out, w_out = node.output_shape
    _, h, w = node.input_shape
    oy, ox, ky, kx, iy, ix, valid = _window_map(node.input_shape, (h_out, w_out), (kh, kw),
                                                node.stride, node.padding)
    oy, ox, ky, kx, iy, ix = (a[valid] for a in (oy, ox, ky, kx, iy, ix))
    co = np.arange(c_out)[:, None, None]
    ci = np.arange(c_in)[None, :, None]
    rows = (co * h_out * w_out + (oy * w_out + ox)[None, None, :])
    cols = (ci * h * w + (iy * w + ix)[None, None, :])
    vals = node.weight[:, :, ky, kx]  # (C_out, C_in, windows)
    rows, cols = np.broadcast_to(rows, vals.shape), np.broadcast_to(cols, vals.shape)
    return sp.csr_matrix((vals.ravel(), (rows.ravel(), cols.ravel())),
                         shape=(node.output_size(), node.input_size()))


def pool_matrix(node: AvgPool) -> sp.csr_matrix:
    """Average pooling: each output is the mean of its kernel window, per channel."""
    c, h, w = node.input_shape
    _, h_out, w_out = node.output_shape
    oy, ox, ky, kx, iy, ix, valid = _window_map(node.input_shape, (h_out, w_out), node.kernel,
                                                node.stride, (0, 0))
    oy, ox, iy, ix = (a[valid] for a in (oy, ox, iy, ix))
    ch = np.arange(c)[:, None]
    rows = ch * h_out * w_out + (oy * w_out + ox)[None, :]
    cols = ch * h * w + (iy * w + ix)[None, :]
    vals = np.full(rows.shape, 1.0 / (node.kernel[0] * node.kernel[1]))
    return sp.csr_matrix((vals.ravel(), (rows.ravel(), cols.ravel())),
                         shape=(node.output_size(), node.input_size()))


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
