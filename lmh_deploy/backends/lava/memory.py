"""What the Lava backend's weight matrices take in memory, and which Lava process each synapse
path becomes, known before Lava is imported.

A convolution runs on Lava's own ``Conv`` process, which holds only its kernel, wherever that
computes exactly our integer sums (:func:`runs_on_lava_conv`); any other path holds every
synapse explicitly (``Sparse``: one CSR entry per kernel tap and output position; ``Dense``).
Before ``Conv``, the paper's ResNet-19 at CIFAR size (2.1 billion synapses, 15.9 GiB of CSR)
needed about 48 GiB once Lava's compiler and workers held their copies.
:func:`check_lava_fits` refuses a run whose matrices cannot fit in one line before it starts,
instead of letting the operating system kill it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmh_deploy.errors import InputError
from lmh_deploy.ir import Graph, QDense
from lmh_deploy.ir.synapses import abs_row_sums, largest_presynaptic, qdense_fan_in
from lmh_deploy.passes.delays import path_source
from lmh_deploy.semantics import integer as fx

#: A CSR column index (Lava's Sparse keeps scipy's int32 indices).
INDEX_BYTES = 4
#: A dense matrix entry as lowering hands it to Lava's Dense (int64).
DENSE_ENTRY_BYTES = 8
#: Bytes a Lava run holds per byte of the lowered weight matrices: measured as the
#: proportional set size of the process and its Lava workers above the process before the run,
#: 1-sample fixed_pt runs of the paper's ResNet-20 (3 x 32 x 32, T = 4) at widths 1 and 2:
#: 1.37 and 4.03 GiB for 0.29 and 1.16 GiB of matrices, 3.07 bytes per byte between them.
LAVA_COPIES = 3
#: A kernel entry of a path on Lava's Conv: int32 in our process and in its worker, and the
#: float64 copy its model builds every step (``lava.proc.conv.utils.conv_scipy``), rounded up.
KERNEL_ENTRY_BYTES = 16
#: Lava's Conv sends its sums wrapped to signed 24 bits (``PyConvModelFixed.clamp_precision``).
CONV_OUTPUT_MAX = (1 << 23) - 1
#: Lava's Conv model holds kernel size, stride and padding in int8 Vars.
CONV_GEOMETRY_MAX = 127


def delay_lines(graph: Graph, delays: dict[str, int]) -> dict[str, int]:
    """The layers that send their spikes ``d`` steps late on a second port (``s_out_delayed``):
    those, other than the input, whose outgoing delayed paths all wait the same ``d`` steps
    (``delays``: each path's extra delay, by its last node). A delayed path from any other
    source is a Lava ``DelaySparse``."""
    waits: dict[str, set[int]] = {}
    for path, delay in delays.items():
        if delay > 0:
            waits.setdefault(path_source(graph, path), set()).add(delay)
    first = graph.order()[0]
    return {src: ds.pop() for src, ds in waits.items() if len(ds) == 1 and src != first}


def qdense_delays(graph: Graph) -> dict[str, int]:
    """Every integer synapse path's extra delay as the graph records it (``QDense.delay``)."""
    delays = {}
    for name in graph.of_kind("q_dense"):
        node = graph.node(name)
        assert isinstance(node, QDense)
        delays[name] = int(node.delay)
    return delays


def runs_on_lava_conv(graph: Graph, dense: str, lines: dict[str, int]) -> bool:
    """Whether integer path ``dense`` runs on Lava's own ``Conv`` process (its kernel only),
    given the layers with :func:`delay_lines` ``lines``.

    Lava 0.10's ``PyConvModelFixed`` computes each sum exactly (scipy's ``convolve2d`` in
    float64: integers below 2**53), ignores its ``weight_exp`` and sends the sum wrapped to
    signed 24 bits one step later, as ``Sparse`` sends ``(W s) << weight_exp``. So the path
    must be a plain convolution (no max pool of its currents; kernel, stride and padding
    within Lava's int8 Vars), not a ``DelaySparse``, with a non-negative exponent (folded
    exactly into the kernel: ``(2m << e)``; a negative one floors the whole sum and cannot
    be folded), and every sum it can send must fit 24 bits:
    ``2 * max_row(sum |m|) * largest_input << e <= 2**23 - 1``. Then every partial sum is
    below 2**23 as well, exact even in float32."""
    node = graph.node(dense)
    assert isinstance(node, QDense)
    if not node.is_conv or node.max_pool is not None or node.weight_exp < 0:
        return False
    geometry = (*node.weight_mant.shape[2:], *node.conv_stride, *node.conv_padding)
    if max(geometry) > CONV_GEOMETRY_MAX:
        return False
    if node.delay > 0 and path_source(graph, dense) not in lines:
        return False
    largest = largest_presynaptic(graph, dense)
    bound = fx.WEIGHT_LAVA_SCALE * int(abs_row_sums(node.weight_mant).max()) * largest
    return (bound << int(node.weight_exp)) <= CONV_OUTPUT_MAX


def lava_conv_kernel(node: QDense) -> np.ndarray:
    """The ``weight`` of Lava's ``Conv`` for an integer convolution path: Lava's weights
    ``2 m`` with the exponent folded in (``<< weight_exp``), as int32, in Lava's layout
    (C_out, W, H, C_in) and flipped in both spatial axes (Lava convolves, torch and our
    semantics cross-correlate)."""
    kernel = (fx.WEIGHT_LAVA_SCALE * node.weight_mant.astype(np.int64)) << int(node.weight_exp)
    return np.ascontiguousarray(kernel[:, :, ::-1, ::-1].transpose(0, 3, 2, 1), dtype=np.int32)


def accumulator_dtype(node: QDense, largest_input: int) -> type:
    """int32 for a convolution's CSR when no sum ``W @ x`` can leave int32 (``|x| <=
    largest_input``), else int64.

    Lava's Sparse keeps the CSR in the dtype it is given and accumulates in it (its Dense
    converts to the int32 its model declares); int32 entries take a third less memory than
    int64 and its copies (the fork of every Lava worker inherits them), and give the same
    sums whenever none overflows, which the bound here guarantees."""
    if node.is_conv:
        bound = fx.WEIGHT_LAVA_SCALE * float(abs_row_sums(node.weight_mant).max()) * largest_input
        if bound < 2**31:
            return np.int32
    return np.int64


def lava_weight_bytes(graph: Graph) -> tuple[int, int]:
    """``(bytes, synapses)``: the synapses of the integer ``graph`` that Lava holds
    explicitly and the memory the lowered weights take, in this process alone (a lower bound
    of a Lava run's need: Lava's compiler and workers copy them). A path on Lava's ``Conv``
    (:func:`runs_on_lava_conv`) is its kernel (:data:`KERNEL_ENTRY_BYTES` an entry, no
    synapse held explicitly); another convolution or sparse path is a CSR (its entry dtype,
    :func:`accumulator_dtype`, plus a column index per synapse), a dense path a matrix of
    8-byte entries."""
    total = synapses = 0
    lines = delay_lines(graph, qdense_delays(graph))
    for name in graph.of_kind("q_dense"):
        node = graph.node(name)
        assert isinstance(node, QDense)
        if runs_on_lava_conv(graph, name, lines):
            total += int(node.weight_mant.size) * KERNEL_ENTRY_BYTES
            continue
        count = int(qdense_fan_in(node).sum())
        if node.is_conv:
            entry = np.dtype(accumulator_dtype(node, largest_presynaptic(graph, name))).itemsize + INDEX_BYTES
        elif sp.issparse(node.weight_mant):
            entry = DENSE_ENTRY_BYTES + INDEX_BYTES
        else:
            entry = DENSE_ENTRY_BYTES
        total += count * entry
        synapses += count
    return total, synapses


def lava_fits(graph: Graph, available: int) -> str | None:
    """None when a Lava run of the integer ``graph`` fits ``available`` bytes, else why not
    (one clause, for a refusal or a note): its weight matrices (:func:`lava_weight_bytes`)
    held :data:`LAVA_COPIES` times."""
    matrices, synapses = lava_weight_bytes(graph)
    need = LAVA_COPIES * matrices
    if need <= available:
        return None
    return (
        f"Lava holds each of this network's {synapses:,} synapses outside its Conv processes "
        f"explicitly (a convolution Conv cannot run exactly as a sparse matrix): about "
        f"{need / 2**30:.1f} GiB with its copies, more than the "
        f"{available / 2**30:.1f} GiB of memory available"
    )


def check_lava_fits(graph: Graph, available: int, what: str = "--backend lava") -> None:
    """Refuse a Lava run that :func:`lava_fits` finds too big for ``available`` bytes."""
    why = lava_fits(graph, available)
    if why is not None:
        raise InputError(
            f"{what}: {why}; sim/ runs the same integers bit for bit (--backend sim, "
            f"or verify --lava-samples 0)"
        )
