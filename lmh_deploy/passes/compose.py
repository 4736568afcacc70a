"""Chain composition: every chain of float synapse nodes between two neuron layers, as the one
linear map it computes, in float current per integer presynaptic unit.

The presynaptic unit is what one integer count means in float: ``theta`` of a spiking source
(the paper's ``I = W s theta``), ``x_max / levels`` of the graded input (``Input.levels``: 255
for unsigned 8-bit messages, 32767 for signed 16-bit ones). A single convolution (or pool ->
convolution) stays a kernel, so large networks never materialise their synaptic matrices. A
chain that ends in a max pool of currents (``conv -> maxpool``) is its convolution's path
with the pool kept beside it (``SynapsePath.pool``): the integer synapses deliver the
convolution's currents and the pool takes their maximum before the neuron
(:mod:`lmh_deploy.semantics.pooling`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmh_deploy.ir import LMH, Conv2d, Graph, Input, IRError, MaxPool, Node
from lmh_deploy.ir.synapses import DenseChain, chain_conv, chain_matrix, composes_dense, synapse_chain


def presynaptic_unit(source: Node) -> float:
    """Float value of one integer count sent by ``source``: ``x_max / levels`` (graded input),
    ``x_max`` (spike input, ``Input.spikes``) or ``theta`` (a neuron's spike)."""
    if isinstance(source, Input):
        return source.unit
    if isinstance(source, LMH):
        return source.theta
    raise TypeError(f"a {source.kind} node sends no spikes or input values")


def _graded(source: Node) -> bool:
    """The source sends integers, not 0/1: the graded input, or graded spikes (max_spikes > 1)."""
    if isinstance(source, Input):
        return not source.spikes
    return isinstance(source, LMH) and source.max_spikes > 1


@dataclass(frozen=True)
class SynapsePath:
    """One synapse chain into a layer, composed; named after its last node."""

    name: str
    source: str
    ops: tuple[str, ...]  # the kinds of the chain's nodes, source side first
    graded: bool  # the source sends integers (the graded input, graded spikes), not 0/1 spikes
    unit: float  # float value of one presynaptic count (see presynaptic_unit)
    weights: Any  # float current per presynaptic count: dense, CSR, DenseChain or a conv kernel
    conv: Conv2d | None  # the chain as one convolution (geometry of ``weights``), if it is one
    #: largest |presynaptic count| per step: ``Input.levels`` of the graded input (255 for 8-bit
    #: pixels, 32767 signed 16-bit), 1 (spike), K (graded spikes of a layer with max_spikes K)
    max_presyn: int = 1
    #: the max pool of the convolution's currents that ends the chain, if one does
    pool: MaxPool | None = None

    @property
    def repeat(self) -> int:
        """Postsynaptic positions sharing each kernel row (1 for a matrix): the pooled ones
        where a max pool ends the chain (the worst case of a max is the worst of its taps)."""
        if self.conv is None:
            return 1
        shape = self.conv.output_shape if self.pool is None else self.pool.output_shape
        return shape[1] * shape[2]


def synapse_paths(graph: Graph, layer: str, *, keep_kernels: bool = True) -> list[SynapsePath]:
    """The composed synapse paths into neuron or readout ``layer``, in input order.

    A chain that ends in a Dense after pooling composes to a :class:`DenseChain` (a full
    matrix, handed out in row blocks). ``keep_kernels=False`` always composes a matrix (dense,
    or CSR for convolutions and pooling).
    """
    paths = []
    for pred in graph.inputs_of(layer):
        src, chain = synapse_chain(graph, pred)
        source = graph.node(src)
        unit = presynaptic_unit(source)
        pool = graph.node(chain[-1]) if graph.node(chain[-1]).kind == "maxpool" else None
        linear = chain[:-1] if pool is not None else chain
        if pool is not None and chain_conv(graph, linear) is None:
            raise IRError(
                f"{chain[-1]}: max pooling of currents is lowered after one convolution; "
                f"here it follows {' -> '.join(graph.node(c).kind for c in linear)}"
            )
        conv = chain_conv(graph, linear) if keep_kernels else None
        weights: Any
        if conv is not None:
            weights = conv.weight * unit
        elif keep_kernels and composes_dense(graph, linear):
            weights = DenseChain(graph.node(linear[-1]).weight, chain_matrix(graph, linear[:-1]), unit)
        else:
            weights = chain_matrix(graph, linear) * unit
        paths.append(
            SynapsePath(
                name=chain[-1],
                source=src,
                ops=tuple(graph.node(c).kind for c in chain),
                graded=_graded(source),
                unit=unit,
                weights=weights,
                conv=conv,
                max_presyn=source.levels if isinstance(source, Input) else source.max_spikes,
                pool=pool,
            )
        )
    return paths


def path_matrix(weights: Any) -> Any:
    """A path's weights as an array or CSR matrix (a :class:`DenseChain` made whole)."""
    return weights.toarray() if isinstance(weights, DenseChain) else weights
