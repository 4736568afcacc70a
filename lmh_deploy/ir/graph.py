"""The graph: named nodes on a networkx DAG; node kinds by registry key."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterator

import networkx as nx

from lmh_deploy.ir.base import IRError, Node
from lmh_deploy.ir.nodes import LMH, AvgPool, Conv2d, Dense, Input, MaxPool, Readout
from lmh_deploy.ir.qnodes import QLMH, QDense, QInput, QReadout

NODE_TYPES: dict[str, type[Node]] = {
    cls.kind: cls
    for cls in (Input, Dense, Conv2d, AvgPool, MaxPool, LMH, Readout, QInput, QDense, QLMH, QReadout)
}
#: a synapse chain's nodes; "maxpool" (not linear) only ends a chain (``validate``)
SYNAPSE_KINDS = ("dense", "conv2d", "avgpool", "maxpool")
FLOAT_KINDS = ("input", *SYNAPSE_KINDS, "lmh", "readout")


@dataclass
class Graph:
    """A DAG of named nodes; edge ``a -> b`` means b consumes a's output.

    ``meta`` holds graph-level facts (timesteps, class count, source model).
    """

    nx_graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, node: Node, inputs: tuple[str, ...] = ()) -> str:
        """Add ``node`` as ``name`` fed by ``inputs``; returns ``name``."""
        if name in self.nx_graph:
            raise IRError(f"duplicate node name {name!r}")
        self.nx_graph.add_node(name, node=node)
        for src in inputs:
            if src not in self.nx_graph:
                raise IRError(f"edge {src!r} -> {name!r}: unknown source node {src!r}")
            self.nx_graph.add_edge(src, name)
        return name

    def node(self, name: str) -> Any:
        """The node called ``name`` (any node kind; typed ``Any`` so callers use its fields)."""
        return self.nx_graph.nodes[name]["node"]

    def inputs_of(self, name: str) -> list[str]:
        """Names of the nodes feeding ``name``."""
        return list(self.nx_graph.predecessors(name))

    def order(self) -> list[str]:
        """Node names in topological order (ties broken by insertion order)."""
        index = {n: i for i, n in enumerate(self.nx_graph.nodes)}
        return list(nx.lexicographical_topological_sort(self.nx_graph, key=lambda n: index[n]))

    def items(self) -> Iterator[tuple[str, Node]]:
        """``(name, node)`` in topological order."""
        for name in self.order():
            yield name, self.node(name)

    def of_kind(self, kind: str) -> list[str]:
        """Names of the nodes of one kind, in order."""
        return [n for n, node in self.items() if node.kind == kind]

    def replace(self, name: str, **changes: Any) -> Node:
        """Swap node ``name`` for a copy with ``changes`` (nodes are immutable); returns it."""
        node = dataclasses.replace(self.node(name), **changes)
        self.nx_graph.nodes[name]["node"] = node
        return node

    def copy(self) -> Graph:
        """A copy that changes to either graph never reach the other.

        Structure and ``meta`` are copied; nodes are shared, which is safe because they are
        immutable (frozen, read-only arrays): a change is a new node (:meth:`replace`).
        """
        g = Graph(meta=copy.deepcopy(self.meta))
        for name in self.nx_graph.nodes:
            g.add(name, self.node(name), tuple(self.inputs_of(name)))
        return g
