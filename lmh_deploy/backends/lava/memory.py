"""What the Lava backend's weight matrices take in memory, known before Lava is imported.

Lava's processes hold every synapse explicitly: a convolution becomes a ``Sparse`` process
with one CSR entry per kernel tap and output position, so the paper's ResNet-19 at CIFAR
size (2.1 billion synapses, 15.9 GiB of CSR) needs about 48 GiB once Lava's compiler and
workers hold their copies. :func:`check_lava_fits` refuses such a run in one line before it
starts, instead of letting the operating system kill it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmh_deploy.errors import InputError
from lmh_deploy.ir import Graph, QDense
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
    """``(bytes, synapses)``: the synapses of the integer ``graph`` and the memory their
    weight matrices take once lowered, in this process alone (a lower bound of a Lava run's
    need: Lava's compiler and workers copy them). A convolution or sparse path is a CSR
    (its entry dtype, :func:`accumulator_dtype`, plus a column index per synapse), a dense
    path a matrix of 8-byte entries."""
    total = synapses = 0
    for name in graph.of_kind("q_dense"):
        node = graph.node(name)
        assert isinstance(node, QDense)
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
        f"Lava holds each of this network's {synapses:,} synapses explicitly (a convolution as a "
        f"sparse matrix): about {need / 2**30:.1f} GiB with its copies, more than the "
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
