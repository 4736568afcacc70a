"""What a Lava run of an integer graph takes in memory, known before Lava is imported.

A path on Lava's own ``Conv`` process holds only its kernel; any other path holds every
synapse explicitly (``Sparse``: one CSR entry per kernel tap and output position; ``Dense``).
Which convolutions take ``Conv`` is the lowering plan's choice
(:mod:`lmh_deploy.backends.lava.plan`, which weighs these estimates): with every convolution
on ``Sparse`` the paper's ResNet-19 at CIFAR size (2.1 billion synapses, 15.9 GiB of CSR)
needs about 48 GiB once Lava's compiler and workers hold their copies.
A run's estimate (:func:`lava_need_bytes`) is its weights held :data:`LAVA_COPIES` times
plus :data:`LAVA_PROCESS_BYTES` for each OS process of the run. :func:`check_lava_fits`
refuses a run that cannot fit in one line before it starts, instead of letting the operating
system kill it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmh_deploy.errors import InputError
from lmh_deploy.ir import QLMH, Graph, QDense
from lmh_deploy.ir.synapses import abs_row_sums, largest_presynaptic, qdense_fan_in
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
#: What each OS process of a Lava run adds beyond the weights (proportional set size):
#: ``bench/lava_memory.py --fixed`` measured ``run --backend lava`` of MLPs with 14, 30 and
#: 54 workers: 7.6 MiB a worker (the slope), 7.7 to 8.4 MiB with the command's own growth
#: shared out (medians of 3 rounds, BENCHMARKS.md); 8 MiB.
LAVA_PROCESS_BYTES = 8 << 20
#: OS processes of a Lava run besides one per Lava Process: Lava's runtime service, its
#: shared-memory manager and the multiprocessing resource tracker (same measurement).
LAVA_RUNTIME_PROCESSES = 3
#: A kernel entry of a path on Lava's Conv: int32 in our process and in its worker, and the
#: float64 copy its model builds every step (``lava.proc.conv.utils.conv_scipy``), rounded up.
KERNEL_ENTRY_BYTES = 16


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


def path_weight_bytes(graph: Graph, name: str, *, on_conv: bool) -> int:
    """The bytes the lowered weights of integer path ``name`` take in this process: on Lava's
    ``Conv`` (``on_conv``) its kernel (:data:`KERNEL_ENTRY_BYTES` an entry); else a
    convolution or sparse path is a CSR (its entry dtype, :func:`accumulator_dtype`, plus a
    column index per synapse), a dense path a matrix of 8-byte entries."""
    node = graph.node(name)
    assert isinstance(node, QDense)
    if on_conv:
        return int(node.weight_mant.size) * KERNEL_ENTRY_BYTES
    return _explicit_synapses(node) * _entry_bytes(graph, name, node)


def _explicit_synapses(node: QDense) -> int:
    return int(qdense_fan_in(node).sum())


def _entry_bytes(graph: Graph, name: str, node: QDense) -> int:
    if node.is_conv:
        return np.dtype(accumulator_dtype(node, largest_presynaptic(graph, name))).itemsize + INDEX_BYTES
    if sp.issparse(node.weight_mant):
        return DENSE_ENTRY_BYTES + INDEX_BYTES
    return DENSE_ENTRY_BYTES


def lava_weight_bytes(graph: Graph, conv: frozenset[str]) -> tuple[int, int]:
    """``(bytes, synapses)``: the memory the lowered weights of the integer ``graph`` take in
    this process alone (a lower bound of a Lava run's need: Lava's compiler and workers copy
    them) with the paths ``conv`` on Lava's ``Conv``, and the synapses held explicitly (those
    of every other path)."""
    total = synapses = 0
    for name in graph.of_kind("q_dense"):
        on_conv = name in conv
        total += path_weight_bytes(graph, name, on_conv=on_conv)
        if not on_conv:
            node = graph.node(name)
            assert isinstance(node, QDense)
            synapses += _explicit_synapses(node)
    return total, synapses


def lava_processes(graph: Graph) -> int:
    """The OS processes of a Lava run of the integer ``graph``: one per Lava Process that
    lowering creates (the input source, the readout's extractor, each neuron layer, synapse
    path and max pool of currents) and :data:`LAVA_RUNTIME_PROCESSES`."""
    paths = [graph.node(n) for n in graph.of_kind("q_dense")]
    pools = sum(1 for node in paths if isinstance(node, QDense) and node.max_pool is not None)
    neurons = sum(1 for n in graph.order() if isinstance(graph.node(n), QLMH))
    return 2 + neurons + len(paths) + pools + LAVA_RUNTIME_PROCESSES


def lava_need_bytes(graph: Graph, conv: frozenset[str]) -> int:
    """A Lava run's estimated memory with the paths ``conv`` on Lava's ``Conv``: the lowered
    weights (:func:`lava_weight_bytes`) held :data:`LAVA_COPIES` times plus
    :data:`LAVA_PROCESS_BYTES` for each of its :func:`lava_processes`."""
    return LAVA_COPIES * lava_weight_bytes(graph, conv)[0] + LAVA_PROCESS_BYTES * lava_processes(graph)


def lava_fits(graph: Graph, conv: frozenset[str], available: int) -> str | None:
    """None when a Lava run of the integer ``graph`` with the paths ``conv`` on Lava's Conv
    fits ``available`` bytes (:func:`lava_need_bytes`), else why not (one clause, for a
    refusal or a note)."""
    need = lava_need_bytes(graph, conv)
    if need <= available:
        return None
    _, synapses = lava_weight_bytes(graph, conv)
    return (
        f"Lava holds each of this network's {synapses:,} synapses outside its Conv processes "
        f"explicitly (a convolution off Conv as a sparse matrix): about "
        f"{need / 2**30:.1f} GiB with its copies and workers, more than the "
        f"{available / 2**30:.1f} GiB of memory available"
    )


def check_lava_fits(
    graph: Graph, conv: frozenset[str], available: int, what: str = "--backend lava", forced_off: bool = False
) -> None:
    """Refuse a Lava run that :func:`lava_fits` finds too big for ``available`` bytes
    (``forced_off``: ``--lava-conv never`` kept convolutions off Conv; the fix says so)."""
    why = lava_fits(graph, conv, available)
    if why is not None:
        fix = "--lava-conv auto runs convolutions on Lava's Conv where exact; " if forced_off else ""
        raise InputError(
            f"{what}: {why}; {fix}sim/ runs the same integers bit for bit (--backend sim, "
            f"or verify --lava-samples 0)"
        )
