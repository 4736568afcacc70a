"""Structural and range validation of float and integer graphs (run at every stage boundary)."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from lmh_deploy.ir.base import IRError
from lmh_deploy.ir.graph import SYNAPSE_KINDS, Graph

QUANTIZED_KINDS = ("q_input", "q_dense", "q_lmh", "q_readout")


@dataclass(frozen=True)
class _Family:
    """The node kinds of one IR level and which sources each kind accepts."""

    what: str
    input: str
    synapses: tuple[str, ...]
    neuron: str
    readout: str
    synapse_sources: tuple[str, ...]  # what feeds a synapse node (float chains feed synapses)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.input, *self.synapses, self.neuron, self.readout)


_FLOAT = _Family("a float", "input", SYNAPSE_KINDS, "lmh", "readout", ("input", "lmh", *SYNAPSE_KINDS))
_QUANTIZED = _Family("an integer", "q_input", ("q_dense",), "q_lmh", "q_readout", ("q_input", "q_lmh"))


def _validate(graph: Graph, family: _Family) -> None:
    if graph.nx_graph.number_of_nodes() == 0:
        raise IRError("graph is empty")
    if not nx.is_directed_acyclic_graph(graph.nx_graph):
        raise IRError(f"graph has a cycle: {nx.find_cycle(graph.nx_graph)}")
    for name, node in graph.items():
        if node.kind not in family.kinds:
            raise IRError(
                f"{name}: node kind {node.kind!r} is not supported in {family.what} "
                f"graph; supported: {', '.join(family.kinds)}"
            )
        node.check(name)
        preds = graph.inputs_of(name)
        if node.kind == family.input:
            if preds:
                raise IRError(f"{name}: an input node cannot have inputs ({preds})")
            continue
        synapse = node.kind in family.synapses
        if synapse and len(preds) != 1:
            raise IRError(f"{name}: expects exactly one input, has {len(preds)} ({preds})")
        if not preds:
            raise IRError(f"{name}: has no input")
        want = family.synapse_sources if synapse else family.synapses
        for pred in preds:
            src = graph.node(pred)
            if src.kind not in want:
                raise IRError(
                    f"edge {pred!r} -> {name!r}: a {node.kind} node takes a "
                    f"{' or '.join(want)} input, not {src.kind}"
                )
            n_in = src.output_size()
            if synapse and node.input_size() != n_in:
                raise IRError(
                    f"edge {pred!r} -> {name!r}: {node.kind} expects "
                    f"{node.input_size()} inputs, source gives {n_in}"
                )
            if not synapse and node.output_size() != n_in:
                raise IRError(
                    f"edge {pred!r} -> {name!r}: {node.kind} of size "
                    f"{node.output_size()} fed by {n_in} synapses"
                )
            # graded: multi-bit input values or graded spikes (max_spikes > 1); spike inputs
            # (1-bit event frames) and other neurons send spikes
            graded_source = (src.kind == family.input and getattr(src, "bits", 2) > 1) or (
                getattr(src, "max_spikes", 1) > 1
            )
            graded = getattr(node, "graded", None)  # q_dense only
            if graded is not None and bool(graded) != graded_source:
                raise IRError(
                    f"edge {pred!r} -> {name!r}: graded={graded} but the source "
                    f"is a {src.kind} node"
                    + (f" of {src.bits}-bit values" if src.kind == family.input else "")
                )
    for name in graph.of_kind("maxpool"):
        _check_max_pool_place(graph, name)
    if len(graph.of_kind(family.input)) != 1 or len(graph.of_kind(family.readout)) != 1:
        raise IRError("graph needs exactly one input node and one readout node")


def _check_max_pool_place(graph: Graph, name: str) -> None:
    """A max pool of currents sits between a linear synapse node and the neuron layers (or
    readout) it feeds: max is not linear, so nothing may compose with it after it."""
    (pred,) = graph.inputs_of(name)
    if graph.node(pred).kind not in ("dense", "conv2d", "avgpool"):
        raise IRError(
            f"{name}: max pooling of currents needs a synaptic layer (a convolution) before it, "
            f"not {graph.node(pred).kind}"
        )
    for reader in graph.nx_graph.successors(name):
        if graph.node(reader).kind not in ("lmh", "readout"):
            raise IRError(
                f"{name}: max pooling of currents must feed a neuron layer directly, "
                f"not {graph.node(reader).kind} {reader!r}"
            )


def validate(graph: Graph) -> None:
    """Check a float graph: supported kinds, connections, shapes, finite values.

    Synapse nodes (dense, conv2d, avgpool) take one input; neuron and readout nodes take
    one or more synapse chains, whose currents add (residual blocks). Raises
    :class:`IRError` naming the node or edge at fault.
    """
    _validate(graph, _FLOAT)


def validate_quantized(graph: Graph) -> None:
    """Check an integer graph: kinds, connections, shapes and every integer field's range.

    A ``q_dense`` takes one ``q_input`` (graded unless the input is 1-bit spikes) or
    ``q_lmh`` source; neuron and readout
    layers take one or more ``q_dense`` paths. Mantissas, exponents, factor codes,
    thresholds, biases and delays must be integers within the widths of
    :mod:`lmh_deploy.semantics.integer`. Raises :class:`IRError` naming the node or edge.
    """
    _validate(graph, _QUANTIZED)


def is_quantized(graph: Graph) -> bool:
    """True when the graph holds integer nodes (``q_*`` kinds)."""
    return any(node.kind in QUANTIZED_KINDS for _, node in graph.items())


def validate_any(graph: Graph) -> None:
    """:func:`validate_quantized` for an integer graph, else :func:`validate`."""
    (validate_quantized if is_quantized(graph) else validate)(graph)
