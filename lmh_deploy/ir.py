"""The graph IR: small declarative node dataclasses on a networkx DiGraph.

Two node families share one graph type. Float nodes come out of :mod:`export`
(``Input``, ``Dense``, ``LMH``, ``Readout``); integer nodes come out of
:mod:`quantize` (``QInput``, ``QDense``, ``QLMH``, ``QReadout``). Passes are
functions graph -> new graph; they never mutate their input.

Serialisation: ``<stem>.json`` holds the structure and scalars, ``<stem>.npz``
the arrays (read with ``allow_pickle=False``), plus a format version.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import networkx as nx
import numpy as np

IR_FORMAT_VERSION = 1


class IRError(ValueError):
    """An invalid graph; the message names the node or edge at fault."""


def _check_finite(owner: str, name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise IRError(f"{owner}: {name} has a non-finite value {arr[tuple(bad)]} at index {bad}")


@dataclass
class Node:
    """Base of all IR nodes. ``kind`` is the registry key used in JSON."""

    kind: ClassVar[str] = "node"

    def output_size(self) -> int:
        """Number of output channels (flattened)."""
        raise NotImplementedError

    def check(self, name: str) -> None:
        """Raise :class:`IRError` naming ``name`` if a field is malformed."""


# ---------------------------------------------------------------- float nodes
@dataclass
class Input(Node):
    """Graded input, direct encoding: the same frame is presented every step.

    ``shape`` is one sample's shape (C, H, W) or (n,); values lie in ``[0, x_max]``.
    """

    kind: ClassVar[str] = "input"
    shape: tuple[int, ...]
    x_max: float = 1.0

    def output_size(self) -> int:  # noqa: D102
        return int(np.prod(self.shape))

    def check(self, name: str) -> None:  # noqa: D102
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise IRError(f"{name}: input shape {self.shape} must be non-empty and positive")
        if not (self.x_max > 0 and math.isfinite(self.x_max)):
            raise IRError(f"{name}: x_max must be finite and > 0, got {self.x_max}")


@dataclass
class Dense(Node):
    """Synapses ``I = W x`` on the flattened input; ``weight`` is (n_out, n_in)."""

    kind: ClassVar[str] = "dense"
    weight: np.ndarray

    def output_size(self) -> int:  # noqa: D102
        return int(self.weight.shape[0])

    def check(self, name: str) -> None:  # noqa: D102
        if self.weight.ndim != 2 or 0 in self.weight.shape:
            raise IRError(f"{name}: dense weight must be a non-empty 2-D matrix, "
                          f"got shape {self.weight.shape}")
        _check_finite(name, "weight", self.weight)


@dataclass
class LMH(Node):
    """LM-H neurons (Eq. 4)::

        vD[t] = mu_d vD[t-1] + mu_s vS[t-1] + I[t] + bias
        mS[t] = lam_s vS[t-1] + lam_d vD[t]
        s[t] = mS[t] >= theta;  vS[t] = mS[t] - s[t] theta;  output s[t] * theta

    Factors are (K, C): K = 1 (progressive) or T (radical, row t at step t,
    the last row after that); C = 1 (per layer) or n (per neuron).
    Initial state vD = 0, vS = theta / 2.
    """

    kind: ClassVar[str] = "lmh"
    size: int
    theta: float
    mu_d: np.ndarray
    mu_s: np.ndarray
    lam_d: np.ndarray
    lam_s: np.ndarray
    bias: np.ndarray

    FACTOR_RANGES: ClassVar[dict[str, tuple[float, float]]] = {
        "mu_d": (-0.5, 0.5), "mu_s": (-0.5, 0.5), "lam_d": (0.5, 1.5), "lam_s": (0.5, 1.5)}

    def output_size(self) -> int:  # noqa: D102
        return self.size

    def check(self, name: str) -> None:  # noqa: D102
        if self.size <= 0:
            raise IRError(f"{name}: size must be positive, got {self.size}")
        if not (self.theta > 0 and math.isfinite(self.theta)):
            raise IRError(f"{name}: threshold theta must be finite and > 0, got {self.theta}")
        rows = self.mu_d.shape[0] if self.mu_d.ndim == 2 else -1
        for fname, (lo, hi) in self.FACTOR_RANGES.items():
            arr = getattr(self, fname)
            if arr.ndim != 2 or arr.shape[0] != rows or arr.shape[1] not in (1, self.size):
                raise IRError(f"{name}: factor {fname} must be (K, 1) or (K, {self.size}) with "
                              f"the same K as mu_d, got {arr.shape}")
            _check_finite(name, fname, arr)
            # Closed range: a float32 sigmoid saturates to exactly lo or hi; the top value is
            # then stored as the largest 12-bit code (hi - 2**-12), see fixedpoint.quantize_factor.
            if arr.min() < lo or arr.max() > hi:
                bad = arr.min() if arr.min() < lo else arr.max()
                raise IRError(f"{name}: factor {fname}={bad:.6g} outside its representable "
                              f"range [{lo}, {hi}]")
        if self.bias.shape != (self.size,):
            raise IRError(f"{name}: bias shape {self.bias.shape} != ({self.size},)")
        _check_finite(name, "bias", self.bias)


@dataclass
class Readout(Node):
    """Non-spiking output: ``logits = mean_t I[t] + bias``; argmax is the class."""

    kind: ClassVar[str] = "readout"
    bias: np.ndarray

    def output_size(self) -> int:  # noqa: D102
        return int(self.bias.shape[0])

    def check(self, name: str) -> None:  # noqa: D102
        if self.bias.ndim != 1:
            raise IRError(f"{name}: readout bias must be 1-D, got {self.bias.shape}")
        _check_finite(name, "bias", self.bias)


# ---------------------------------------------------------------- integer nodes
@dataclass
class QInput(Node):
    """Input quantised to unsigned ``bits``: ``x_int = clip(floor(x * scale + 1/2), 0, 2**bits - 1)``."""

    kind: ClassVar[str] = "q_input"
    shape: tuple[int, ...]
    scale: float
    bits: int

    def output_size(self) -> int:  # noqa: D102
        return int(np.prod(self.shape))


@dataclass
class QDense(Node):
    """Integer synapses: ``a = (sum_j 2*m_ij x_j) << weight_exp`` (Lava weights = ``2*m``).

    ``graded`` is true when the presynaptic side sends integers (the input layer).
    """

    kind: ClassVar[str] = "q_dense"
    weight_mant: np.ndarray  # int, |m| <= 127
    weight_exp: int
    graded: bool
    weight_scale: float  # float weight (times presynaptic amplitude) = m / weight_scale

    def output_size(self) -> int:  # noqa: D102
        return int(self.weight_mant.shape[0])


@dataclass
class QLMH(Node):
    """Integer LM-H layer; see :mod:`lmh_deploy.fixedpoint` for the exact arithmetic.

    ``state_scale`` is integer state units per float unit (``theta = theta_float * scale``).
    """

    kind: ClassVar[str] = "q_lmh"
    size: int
    theta: int
    mu_d: np.ndarray
    mu_s: np.ndarray
    lam_d_off: np.ndarray
    lam_s_off: np.ndarray
    bias: np.ndarray
    state_scale: float

    def output_size(self) -> int:  # noqa: D102
        return self.size


@dataclass
class QReadout(Node):
    """Integer readout: ``logits_int = sum_t a[t] + T * bias``; float logits = that / (T*scale)."""

    kind: ClassVar[str] = "q_readout"
    bias: np.ndarray
    state_scale: float

    def output_size(self) -> int:  # noqa: D102
        return int(self.bias.shape[0])


NODE_TYPES: dict[str, type[Node]] = {
    cls.kind: cls for cls in (Input, Dense, LMH, Readout, QInput, QDense, QLMH, QReadout)}
FLOAT_KINDS = ("input", "dense", "lmh", "readout")


# ---------------------------------------------------------------- graph
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

    def node(self, name: str) -> Node:
        """The node called ``name``."""
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

    def copy(self) -> "Graph":
        """A deep copy (passes return new graphs)."""
        g = Graph(meta=json.loads(json.dumps(self.meta)))
        for name in self.nx_graph.nodes:
            g.add(name, dataclasses.replace(self.node(name)), tuple(self.inputs_of(name)))
        return g


# ---------------------------------------------------------------- serialisation
def _split_fields(node: Node) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    scalars, arrays = {}, {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, np.ndarray):
            arrays[f.name] = value
        elif isinstance(value, tuple):
            scalars[f.name] = list(value)
        elif isinstance(value, (np.integer, np.floating, np.bool_)):
            scalars[f.name] = value.item()
        else:
            scalars[f.name] = value
    return scalars, arrays


def save_graph(graph: Graph, directory: str | Path, stem: str) -> list[Path]:
    """Write ``stem.json`` + ``stem.npz`` into ``directory``; returns the paths written."""
    directory = Path(directory)
    nodes, arrays = [], {}
    for name in graph.order():
        node = graph.node(name)
        scalars, node_arrays = _split_fields(node)
        nodes.append({"name": name, "kind": node.kind, "inputs": graph.inputs_of(name),
                      "fields": scalars, "arrays": sorted(node_arrays)})
        arrays.update({f"{name}/{k}": v for k, v in node_arrays.items()})
    doc = {"format": "lmh-deploy/ir", "format_version": IR_FORMAT_VERSION,
           "meta": graph.meta, "nodes": nodes}
    json_path, npz_path = directory / f"{stem}.json", directory / f"{stem}.npz"
    json_path.write_text(json.dumps(doc, indent=1))
    np.savez(npz_path, **arrays)
    return [json_path, npz_path]


def load_graph(directory: str | Path, stem: str) -> Graph:
    """Read a graph written by :func:`save_graph`; raise :class:`IRError` naming the file."""
    directory = Path(directory)
    json_path, npz_path = directory / f"{stem}.json", directory / f"{stem}.npz"
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IRError(f"{json_path}: cannot read IR: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != "lmh-deploy/ir":
        raise IRError(f"{json_path}: not an lmh-deploy IR file")
    if doc.get("format_version") != IR_FORMAT_VERSION:
        raise IRError(f"{json_path}: unknown IR format version {doc.get('format_version')!r} "
                      f"(this lmh-deploy reads version {IR_FORMAT_VERSION})")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise IRError(f"{npz_path}: cannot read IR arrays: {exc}") from None
    graph = Graph(meta=doc.get("meta", {}))
    for entry in doc["nodes"]:
        cls = NODE_TYPES.get(entry["kind"])
        if cls is None:
            raise IRError(f"{json_path}: node {entry['name']!r} has unknown kind {entry['kind']!r}")
        fields = dict(entry["fields"])
        for key, value in fields.items():
            if isinstance(value, list):
                fields[key] = tuple(value)
        for key in entry["arrays"]:
            fields[key] = arrays[f"{entry['name']}/{key}"]
        graph.add(entry["name"], cls(**fields), tuple(entry["inputs"]))
    return graph


# ---------------------------------------------------------------- validation
def validate(graph: Graph) -> None:
    """Check a float graph: supported kinds, a single input chain, shapes, finite values.

    Raises :class:`IRError` naming the node or edge at fault.
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
        if len(preds) != 1:
            raise IRError(f"{name}: expects exactly one input, has {len(preds)} ({preds})")
        src = graph.node(preds[0])
        want = {"dense": ("input", "lmh"), "lmh": ("dense",), "readout": ("dense",)}[node.kind]
        if src.kind not in want:
            raise IRError(f"edge {preds[0]!r} -> {name!r}: a {node.kind} node takes a "
                          f"{' or '.join(want)} input, not {src.kind}")
        n_in = src.output_size()
        if node.kind == "dense" and node.weight.shape[1] != n_in:
            raise IRError(f"edge {preds[0]!r} -> {name!r}: weight expects {node.weight.shape[1]} "
                          f"inputs, source gives {n_in}")
        if node.kind in ("lmh", "readout") and node.output_size() != n_in:
            raise IRError(f"edge {preds[0]!r} -> {name!r}: {node.kind} of size "
                          f"{node.output_size()} fed by {n_in} synapses")
    if len(graph.of_kind("input")) != 1 or len(graph.of_kind("readout")) != 1:
        raise IRError("graph needs exactly one input node and one readout node")
