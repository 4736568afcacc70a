"""Structural validation of float graphs."""
from __future__ import annotations

import networkx as nx

from lmh_deploy.ir.base import IRError
from lmh_deploy.ir.graph import FLOAT_KINDS, SYNAPSE_KINDS, Graph


def validate(graph: Graph) -> None:
    """Check a float graph: supported kinds, connections, shapes, finite values.

    Synapse nodes (dense, conv2d, avgpool) take one input; neuron and readout nodes take
    one or more synapse chains, whose currents add (residual blocks). Raises
    :class:`IRError` naming the node or edge at fault.
    """
    if graph.nx_graph.number_of_nodes() == 0:
        raise IRError("graph is empty")
    if not nx.is_directed_acyclic_graph(graph.nx_graph):
        raise IRError(f"graph has a cycle: {nx.find_cycle(graph.nx_graph)}")
    for name, node in graph.items():
        if node.kind not in FLOAT_KINDS:
            raise IRError(f"{name}: node kind {node.kind!r} is not supported here; supported: "
                          f"{', '.join(FLOAT_KINDS)}")
        node.check(name)
        preds = graph.inputs_of(name)
        if node.kind == "input":
            if preds:
                raise IRError(f"{name}: an input node cannot have inputs ({preds})")
            continue
        synapse = node.kind in SYNAPSE_KINDS
        if synapse and len(preds) != 1:
            raise IRError(f"{name}: expects exactly one input, has {len(preds)} ({preds})")
        if not preds:
            raise IRError(f"{name}: has no input")
        want = ("input", "lmh", *SYNAPSE_KINDS) if synapse else SYNAPSE_KINDS
        for pred in preds:
            src = graph.node(pred)
            if src.kind not in want:
                raise IRError(f"edge {pred!r} -> {name!r}: a {node.kind} node takes a "
                              f"{' or '.join(want)} input, not {src.kind}")
            n_in = src.output_size()
            n_want = node.input_size() if synapse else node.output_size()
            if n_want != n_in and synapse:
                raise IRError(f"edge {pred!r} -> {name!r}: {node.kind} expects {n_want} inputs, "
                              f"source gives {n_in}")
            if n_want != n_in:
                raise IRError(f"edge {pred!r} -> {name!r}: {node.kind} of size {n_want} fed by "
                              f"{n_in} synapses")
    if len(graph.of_kind("input")) != 1 or len(graph.of_kind("readout")) != 1:
        raise IRError("graph needs exactly one input node and one readout node")
