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
import scipy.sparse as sp

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

    def input_size(self) -> int:  # noqa: D102
        return int(self.weight.shape[1])

    def check(self, name: str) -> None:  # noqa: D102
        if self.weight.ndim != 2 or 0 in self.weight.shape:
            raise IRError(f"{name}: dense weight must be a non-empty 2-D matrix, "
                          f"got shape {self.weight.shape}")
        _check_finite(name, "weight", self.weight)


def conv_output_hw(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int]) -> tuple[int, int]:
    """Output height and width of a 2-D convolution or pooling window."""
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


@dataclass
class Conv2d(Node):
    """2-D convolution (cross-correlation, as torch) on a (C, H, W) input flattened C-major.

    ``weight`` is (C_out, C_in, kh, kw); zero padding; no bias (it moves to the neuron).
    """

    kind: ClassVar[str] = "conv2d"
    weight: np.ndarray
    input_shape: tuple[int, int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def output_shape(self) -> tuple[int, int, int]:  # noqa: D102
        h, w = conv_output_hw(self.input_shape[1], self.input_shape[2], self.weight.shape[2:],
                              self.stride, self.padding)
        return (int(self.weight.shape[0]), h, w)

    def output_size(self) -> int:  # noqa: D102
        return int(np.prod(self.output_shape))

    def input_size(self) -> int:  # noqa: D102
        return int(np.prod(self.input_shape))

    def check(self, name: str) -> None:  # noqa: D102
        if self.weight.ndim != 4 or 0 in self.weight.shape:
            raise IRError(f"{name}: conv weight must be (C_out, C_in, kh, kw), got {self.weight.shape}")
        if len(self.input_shape) != 3 or self.weight.shape[1] != self.input_shape[0]:
            raise IRError(f"{name}: conv weight has {self.weight.shape[1]} input channels, "
                          f"input shape is {self.input_shape}")
        if min(self.stride) < 1 or min(self.padding) < 0 or min(self.output_shape) < 1:
            raise IRError(f"{name}: invalid stride {self.stride} / padding {self.padding} "
                          f"for input {self.input_shape}")
        _check_finite(name, "weight", self.weight)


@dataclass
class AvgPool(Node):
    """Average pooling over ``kernel`` windows (no padding); a fixed linear map, 1/(kh*kw) weights."""

    kind: ClassVar[str] = "avgpool"
    input_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]

    @property
    def output_shape(self) -> tuple[int, int, int]:  # noqa: D102
        h, w = conv_output_hw(self.input_shape[1], self.input_shape[2], self.kernel, self.stride,
                              (0, 0))
        return (int(self.input_shape[0]), h, w)

    def output_size(self) -> int:  # noqa: D102
        return int(np.prod(self.output_shape))

    def input_size(self) -> int:  # noqa: D102
        return int(np.prod(self.input_shape))

    def check(self, name: str) -> None:  # noqa: D102
        if len(self.input_shape) != 3 or min(self.kernel) < 1 or min(self.stride) < 1 \
                or min(self.output_shape) < 1:
            raise IRError(f"{name}: invalid pooling kernel {self.kernel} / stride {self.stride} "
                          f"for input {self.input_shape}")


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

    The composition of every float synapse node between two neuron layers (e.g. pool ->
    conv). ``weight_mant`` is a dense int array, or a ``scipy.sparse.csr_matrix`` for
    convolutions and pooling. ``graded`` is true when the presynaptic side sends integers
    (the input layer). ``delay`` is the number of extra steps this path must wait so that
    parallel branches into one neuron arrive together (residual shortcuts).

    A single convolution (possibly with a pooling folded in) keeps its kernel instead of a
    matrix: ``weight_mant`` is then (C_out, C_in, kh, kw) and ``conv_input_shape``,
    ``conv_stride``, ``conv_padding`` give its geometry, so large networks never
    materialise their synaptic matrices (``lmh_deploy.ir.synapses.qdense_matrix`` does,
    on demand).
    """

    kind: ClassVar[str] = "q_dense"
    weight_mant: Any  # np.ndarray | scipy.sparse.csr_matrix, int, |m| <= 127
    weight_exp: int
    graded: bool
    weight_scale: float  # float weight (times presynaptic amplitude) = m / weight_scale
    delay: int = 0
    conv_input_shape: tuple[int, ...] | None = None
    conv_stride: tuple[int, ...] = (1, 1)
    conv_padding: tuple[int, ...] = (0, 0)

    @property
    def is_conv(self) -> bool:  # noqa: D102
        return self.conv_input_shape is not None

    def conv_node(self, weight=None) -> Conv2d:
        """The float Conv2d node with this geometry (``weight`` defaults to the mantissas)."""
        return Conv2d(weight=self.weight_mant if weight is None else weight,
                      input_shape=tuple(self.conv_input_shape), stride=tuple(self.conv_stride),
                      padding=tuple(self.conv_padding))

    def output_size(self) -> int:  # noqa: D102
        if self.is_conv:
            return self.conv_node().output_size()
        return int(self.weight_mant.shape[0])

    def input_size(self) -> int:  # noqa: D102
        return int(np.prod(self.conv_input_shape)) if self.is_conv else int(self.weight_mant.shape[1])


@dataclass
class QLMH(Node):
    """Integer LM-H layer; see :mod:`lmh_deploy.semantics.integer` for the exact arithmetic.

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
    cls.kind: cls for cls in (Input, Dense, Conv2d, AvgPool, LMH, Readout,
                              QInput, QDense, QLMH, QReadout)}
SYNAPSE_KINDS = ("dense", "conv2d", "avgpool")
FLOAT_KINDS = ("input", *SYNAPSE_KINDS, "lmh", "readout")


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
        if sp.issparse(value):  # CSR as its three arrays plus shape, no pickling
            csr = sp.csr_matrix(value)
            arrays.update({f"{f.name}.csr_data": csr.data, f"{f.name}.csr_indices": csr.indices,
                           f"{f.name}.csr_indptr": csr.indptr,
                           f"{f.name}.csr_shape": np.asarray(csr.shape)})
        elif isinstance(value, np.ndarray):
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
            if key.endswith(".csr_data"):
                base = key.removesuffix(".csr_data")
                get = lambda part: arrays[f"{entry['name']}/{base}.csr_{part}"]  # noqa: E731
                fields[base] = sp.csr_matrix((get("data"), get("indices"), get("indptr")),
                                             shape=tuple(get("shape")))
            elif ".csr_" not in key:
                fields[key] = arrays[f"{entry['name']}/{key}"]
        try:
            node = cls(**fields)
        except TypeError as exc:
            raise IRError(f"{json_path}: node {entry['name']!r} ({entry['kind']}) has bad fields: "
                          f"{exc}") from None
        graph.add(entry["name"], node, tuple(entry["inputs"]))
    return graph


# ---------------------------------------------------------------- validation
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
