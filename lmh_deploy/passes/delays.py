"""Delay balancing: how many synaptic hops each layer is from the input, and how long each
synapse path into a layer must wait so that parallel paths (residual shortcuts) arrive together.

Every synapse path delivers one step late (Lava's ``Dense``/``Sparse``: ``a(t) = W s(t-1)``),
so a layer ``d`` hops from the input starts at global step ``d`` and a path from a source at
depth ``d_src`` into a layer at depth ``d`` needs ``d - d_src - 1`` extra steps. Works on
float graphs (a path is a chain of synapse nodes) and integer graphs (one ``q_dense``).
"""

from __future__ import annotations

from lmh_deploy.ir import SYNAPSE_KINDS, Graph

_PATH_KINDS = (*SYNAPSE_KINDS, "q_dense")
_SOURCE_KINDS = ("input", "q_input")


def path_source(graph: Graph, last: str) -> str:
    """The neuron layer or input that feeds the synapse path ending in node ``last``."""
    cur = last
    while graph.node(cur).kind in _PATH_KINDS:
        (cur,) = graph.inputs_of(cur)
    return cur


def layer_depths(graph: Graph) -> dict[str, int]:
    """Synaptic hops from the input to every input, neuron and readout layer (input: 0).

    A layer fed by several paths sits one hop behind its deepest source.
    """
    depth: dict[str, int] = {}
    for name, node in graph.items():
        if node.kind in _SOURCE_KINDS:
            depth[name] = 0
        elif node.kind not in _PATH_KINDS:
            depth[name] = 1 + max(depth[path_source(graph, pred)] for pred in graph.inputs_of(name))
    return depth


def path_delays(graph: Graph, depths: dict[str, int] | None = None) -> dict[str, int]:
    """Extra delay of every synapse path, keyed by the path's last node (``q_dense`` name)."""
    depths = layer_depths(graph) if depths is None else depths
    return {
        pred: depths[name] - depths[path_source(graph, pred)] - 1
        for name in depths
        for pred in graph.inputs_of(name)
    }


def balance_delays(graph: Graph) -> Graph:
    """A copy of an integer graph whose ``q_dense`` paths carry the balancing delays."""
    out = graph.copy()
    for name, delay in path_delays(graph).items():
        if out.node(name).delay != delay:
            out.replace(name, delay=delay)
    return out
