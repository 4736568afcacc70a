"""The graph IR: small declarative node dataclasses on a networkx DiGraph.

Two node families share one graph type. Float nodes come out of :mod:`lmh_deploy.frontends`
(``Input``, ``Dense``, ``LMH``, ``Readout``); integer nodes come out of
:mod:`lmh_deploy.passes.quantize` (``QInput``, ``QDense``, ``QLMH``, ``QReadout``). Passes are
functions graph -> new graph; they never mutate their input.

Serialisation: ``<stem>.json`` holds the structure and scalars, ``<stem>.npz``
the arrays (read with ``allow_pickle=False``), plus a format version.
"""

from lmh_deploy.ir.base import IRError, Node
from lmh_deploy.ir.graph import FLOAT_KINDS, NODE_TYPES, SYNAPSE_KINDS, Graph
from lmh_deploy.ir.nodes import LMH, AvgPool, Conv2d, Dense, Input, MaxPool, Readout, conv_output_hw
from lmh_deploy.ir.qnodes import QLMH, QDense, QInput, QReadout
from lmh_deploy.ir.serialize import IR_FORMAT_VERSION, load_graph, read_graph_document, save_graph
from lmh_deploy.ir.validate import QUANTIZED_KINDS, is_quantized, validate, validate_any, validate_quantized

__all__ = [
    "IRError",
    "Node",
    "FLOAT_KINDS",
    "NODE_TYPES",
    "SYNAPSE_KINDS",
    "Graph",
    "LMH",
    "AvgPool",
    "MaxPool",
    "Conv2d",
    "Dense",
    "Input",
    "Readout",
    "conv_output_hw",
    "QLMH",
    "QDense",
    "QInput",
    "QReadout",
    "IR_FORMAT_VERSION",
    "load_graph",
    "read_graph_document",
    "save_graph",
    "validate",
    "validate_quantized",
    "validate_any",
    "is_quantized",
    "QUANTIZED_KINDS",
]
