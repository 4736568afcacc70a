"""The Lava lowering plan: which Lava process each integer synapse path becomes, decided
before Lava is imported.

* A layer whose delayed outgoing paths all wait the same ``d`` steps sends them its spikes
  from a delay line (:func:`delay_lines`); any other delayed path is a ``DelaySparse``.
* A convolution may run on Lava's own ``Conv`` (its kernel only) wherever Lava 0.10's model
  computes our sums exactly (:func:`lava_conv_exact`), in Lava's kernel layout
  (:func:`lava_conv_kernel`); elsewhere it is a ``Sparse`` CSR matrix.
* Where both are exact, the route is a trade (:func:`plan_lowering`, ``--lava-conv``): ``Sparse``
  takes one CSR entry per kernel tap and output position but one sparse product a step;
  ``Conv`` holds the kernel alone but runs one scipy ``convolve2d`` per channel pair a step
  (ResNet-20 at CIFAR size, 1-sample ``run --backend lava``: 17.5 s of CPU on Conv against
  11.3 s on Sparse, 0.60 against 1.44 GiB; ``bench/lava_conv.py``). ``auto``
  keeps ``Sparse`` while the run's estimated memory fits :func:`sparse_budget` and moves the
  convolutions that save the most to ``Conv`` only as far as needed (ResNet-19 at CIFAR size
  needs ~48 GiB on Sparse; at a 4 GiB budget 16 of its 24 exact convolutions take Conv).

``floating_pt`` lowering (a float graph) keeps every convolution on ``Sparse``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmh_deploy.choices import LavaConv, choice
from lmh_deploy.ir import Graph, QDense
from lmh_deploy.ir.synapses import abs_row_sums, largest_presynaptic
from lmh_deploy.passes.delays import path_source
from lmh_deploy.semantics import integer as fx
from lmh_deploy.backends.lava.memory import LAVA_COPIES, lava_need_bytes, path_weight_bytes

#: Lava's Conv sends its sums wrapped to signed 24 bits (``PyConvModelFixed.clamp_precision``).
CONV_OUTPUT_MAX = (1 << 23) - 1
#: Lava's Conv model holds kernel size, stride and padding in int8 Vars.
CONV_GEOMETRY_MAX = 127
#: ``auto`` keeps convolutions on ``Sparse`` while the run's estimate stays within this many
#: bytes (and :data:`SPARSE_BUDGET_SHARE` of the available memory): the paper's ResNet-20 at
#: CIFAR size (1.29 GiB) stays on Sparse, its ResNet-19 (48 GiB) goes mostly to Conv.
SPARSE_BUDGET_BYTES = 4 << 30
#: ... and within this share of the memory available when the run is planned (the rest
#: for sim/'s run of the same samples in ``verify`` and for everybody else).
SPARSE_BUDGET_SHARE = 0.5


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


def lava_conv_exact(graph: Graph, dense: str, lines: dict[str, int]) -> bool:
    """Whether Lava's own ``Conv`` process computes integer path ``dense`` exactly, given the
    layers with :func:`delay_lines` ``lines``.

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


def _conv_saves(graph: Graph, name: str) -> int:
    """Bytes of lowered weights that moving path ``name`` from ``Sparse`` to ``Conv`` saves."""
    return path_weight_bytes(graph, name, on_conv=False) - path_weight_bytes(graph, name, on_conv=True)


def sparse_budget(available: int) -> int:
    """The bytes ``auto`` lets a run take with its convolutions on ``Sparse``: at most
    :data:`SPARSE_BUDGET_BYTES`, at most :data:`SPARSE_BUDGET_SHARE` of ``available``."""
    return min(SPARSE_BUDGET_BYTES, int(available * SPARSE_BUDGET_SHARE))


@dataclass(frozen=True)
class LavaPlan:
    """How an integer graph is lowered: ``conv``, the paths on Lava's ``Conv`` (every other
    convolution a ``Sparse``); ``route``, the ``--lava-conv`` that chose them; ``budget``,
    ``auto``'s :func:`sparse_budget` (None for a forced route); ``need``, the run's
    estimated bytes (:func:`~lmh_deploy.backends.lava.memory.lava_need_bytes`)."""

    conv: frozenset[str]
    route: LavaConv
    budget: int | None
    need: int


def plan_lowering(
    graph: Graph, route: LavaConv | str = LavaConv.AUTO, *, budget: int | None = None
) -> LavaPlan:
    """The :class:`LavaPlan` of the integer ``graph`` under ``route``.

    ``always``: every path Lava's ``Conv`` computes exactly (:func:`lava_conv_exact`) runs on
    it. ``never``: none does. ``auto``: with every convolution on ``Sparse`` the run's estimate
    must fit ``budget`` bytes (default :func:`sparse_budget` of the memory available now);
    where it does not, the exact paths move to ``Conv`` one at a time, the one whose move saves
    the most bytes first (ties in graph order), until it fits or none is left (a path whose
    kernel takes more than its matrix never moves)."""
    route = choice(LavaConv, route, "--lava-conv")
    lines = delay_lines(graph, qdense_delays(graph))
    exact = [n for n in graph.of_kind("q_dense") if lava_conv_exact(graph, n, lines)]
    if route == LavaConv.ALWAYS:
        return LavaPlan(frozenset(exact), route, None, lava_need_bytes(graph, frozenset(exact)))
    need = lava_need_bytes(graph, frozenset())
    if route == LavaConv.NEVER:
        return LavaPlan(frozenset(), route, None, need)
    if budget is None:
        from lmh_deploy.sim.batching import available_memory_bytes

        budget = sparse_budget(available_memory_bytes())
    saved = {n: _conv_saves(graph, n) for n in exact}
    conv: set[str] = set()
    for name in sorted(exact, key=lambda n: -saved[n]):  # stable: graph order among equals
        if need <= budget or saved[name] <= 0:
            break
        conv.add(name)
        need -= LAVA_COPIES * saved[name]  # lava_need_bytes is a sum over paths
    return LavaPlan(frozenset(conv), route, budget, need)
