"""NIR graph (nir 1.0.x) -> float graph IR, keeping NIR's own neuron semantics.

NIR is continuous-time; one IR step is one forward-Euler step of length ``dt`` (the
convention of snnTorch's NIR export/import)::

    LIF      v <- v + dt/tau (v_leak - v + r I)             lam_s = 1 - dt/tau, soma gain dt r/tau
    IF       v <- v + dt r I                                lam_s = 1, soma gain dt r
    CubaLIF  i <- i + dt/tau_syn (w_in I - i)               mu_d = 1 - dt/tau_syn (the dendrite)
             v <- v + dt/tau_mem (v_leak - v + r i)

A NIR neuron spikes when ``v > v_threshold`` and then sets ``v = v_reset`` in the same step;
states start at 0. The imported LM-H layers say exactly that (reset "set" to ``v_reset``,
test ">", same-step, initial states 0); a file written by lmh-deploy carries each layer's own
rules in its node metadata (``lmh_rules``) and those are used instead. Synapses: Affine,
Linear, Conv2d, SumPool2d (an exact per-channel convolution of ones), AvgPool2d, Flatten (of
a whole sample: :func:`flatten_output` reads its dims); a neuron with several input edges sums
them (a residual graph). Anything else, or a value the IR cannot hold, is refused in one line
naming the NIR node.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nir
import numpy as np

from lmh_deploy.frontends.pytorch import Cursor, GraphBuilder
from lmh_deploy.errors import InteropError
from lmh_deploy.ir import LMH, Conv2d, Dense, Graph, Input, IRError, Readout, validate

#: snnTorch's export_to_nir and import_from_nir both use this step (hard-coded).
DEFAULT_DT = 1e-4
NEURON_TYPES = ("LIF", "IF", "CubaLIF")
SUPPORTED = (
    "Input",
    "Output",
    "Affine",
    "Linear",
    "Conv2d",
    "SumPool2d",
    "AvgPool2d",
    "Flatten",
    *NEURON_TYPES,
)
#: Graph metadata naming the all-zero nodes our exports add so that a depth-first executor
#: runs a residual sum after all its branches (lmh_deploy/interop/nir_export.py); they add
#: nothing to any signal and the import drops them. (Graph metadata: nir 1.0.4's Conv2d has
#: no metadata field.)
ORDER_NODES_KEY = "lmh_order_nodes"
RULE_KEYS = ("reset", "reset_value", "threshold_test", "reset_timing", "v_d_init", "v_s_init")


def plain(value: Any) -> Any:
    """NIR metadata read back from HDF5 (NumPy scalars, bytes) -> plain Python values."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
        return value.item()
    return value


def read_nir(source: str | Path | nir.NIRGraph) -> nir.NIRGraph:
    """A NIR graph from a file (one error line if unreadable) or as given.

    Files whose ``Input``/``Output`` types include a batch dimension (norse's and rockpool's
    exports: ``Input`` typed ``[1, 64]`` before an ``Affine`` of 64 inputs) fail nir's own
    type check; they are read without it, and the chain's shapes are checked on import
    (:func:`input_shape` drops the batch dimension)."""
    if isinstance(source, nir.NIRGraph):
        return source
    try:
        try:
            return nir.read(source)
        except ValueError as exc:
            if "type" not in str(exc).lower():
                raise
            return nir.read(source, type_check=False)
    except (OSError, ValueError, KeyError, AssertionError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InteropError(f"{source}: cannot read NIR file: {first}") from None


def declared_input(g: nir.NIRGraph, name: str) -> tuple[int, ...]:
    """The type the ``Input`` node ``name`` declares, as written in the file."""
    return tuple(int(d) for d in np.asarray(g.nodes[name].input_type["input"]).reshape(-1))


def input_shape(g: nir.NIRGraph, name: str) -> tuple[int, ...]:
    """One sample's shape from the ``Input`` node ``name``: a leading batch dimension of 1 in
    a 2-d ``[1, n]`` or 4-d ``[1, C, H, W]`` type (norse, rockpool) is dropped.

    A 2-d ``[T, n]`` type (T > 1) whose every successor is an ``Affine`` / ``Linear`` of ``n``
    inputs is read as ``[n]``: sinabs's ``to_nir`` types the Input with the sample it is given
    less the batch, so a user's ``(1, T, n)`` sample gives ``[T, n]``, while the Affine after it
    (typed ``[n]`` by its own weight) takes one n-vector a step; the chain fits no other reading
    and each step's input is that vector (:func:`nir_to_graph` says so in a warning)."""
    shape = declared_input(g, name)
    batch = len(shape) in (2, 4) and shape[0] == 1
    if batch or (len(shape) == 2 and _time_typed(g, name, shape[1])):
        shape = shape[1:]
    if not shape or min(shape) < 1:
        raise InteropError(f"NIR node {name!r} (Input): input type {list(shape)} is not a sample shape")
    return shape


def _time_typed(g: nir.NIRGraph, name: str, n: int) -> bool:
    """Every successor of node ``name`` is an Affine / Linear taking ``n`` inputs."""
    after = [g.nodes[b] for a, b in g.edges if a == name]
    return bool(after) and all(
        isinstance(node, (nir.Affine, nir.Linear))
        and np.asarray(node.weight).ndim == 2
        and np.asarray(node.weight).shape[1] == n
        for node in after
    )


def flatten_output(node: nir.Flatten, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
    """One sample's shape after NIR's ``Flatten`` ``node`` applied to a sample of ``shape``.

    NIR counts ``start_dim``/``end_dim`` in one sample's dims (0 = the first; negative ones
    from the end: our exports write ``-len(shape)``, ``-1``); a node typed with a leading
    batch dimension of 1 (``[1, C, H, W]``) counts in that type. The IR holds a flatten of
    the whole sample (a vector) or one that changes nothing; any other partial flatten is
    refused in one line naming the node, its dims and its input type."""
    declared = node.input_type.get("input") if isinstance(node.input_type, dict) else None
    dims, batched = shape, False
    if declared is not None:
        typed = tuple(int(d) for d in np.asarray(declared).reshape(-1))
        if typed == (1, *shape):
            dims, batched = typed, True
        elif typed != shape:
            raise InteropError(
                f"{where}: input type {list(typed)} does not match the {list(shape)} arriving from "
                f"the node before it"
            )
    start, end = int(node.start_dim), int(node.end_dim)
    first, last = (d + len(dims) if d < 0 else d for d in (start, end))
    if not 0 <= first <= last < len(dims):
        raise InteropError(f"{where}: start_dim={start}, end_dim={end} are outside input type {list(dims)}")
    out = (*dims[:first], int(np.prod(dims[first : last + 1])), *dims[last + 1 :])
    if batched and first > 0:
        out = out[1:]  # the batch dimension of 1 stays outside the flattened dims
    if len(out) != 1 and out != shape:
        raise InteropError(
            f"{where}: start_dim={start}, end_dim={end} on input type {list(dims)} flattens it to "
            f"{list(out)}, a partial flatten the IR cannot hold; supported: a flatten of the whole "
            f"sample (start_dim 0 or {-len(shape)}, end_dim -1) or one that changes nothing"
        )
    return out


def nir_order(g: nir.NIRGraph) -> tuple[list[str], dict[str, list[str]]]:
    """The nodes in topological order from the one Input to the one Output, and each node's
    inputs; InteropError naming the culprit for recurrence, a missing node or a stray one.
    Only neurons may have several inputs (a residual sum: NIR sums converging edges)."""
    inputs = [k for k, v in g.nodes.items() if isinstance(v, nir.Input)]
    outputs = [k for k, v in g.nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise InteropError(
            f"NIR graph needs exactly one Input and one Output node, has {len(inputs)} and {len(outputs)}"
        )
    order_only = order_nodes(g)
    pred: dict[str, list[str]] = {k: [] for k in g.nodes if k not in order_only}
    for a, b in g.edges:
        if a not in g.nodes or b not in g.nodes:
            raise InteropError(f"NIR edge ({a!r}, {b!r}) names a missing node")
        if a not in order_only and b not in order_only:
            pred[b].append(a)
    order: list[str] = []
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str) -> None:  # depth-first from the Output: its ancestors in order
        if name in done:
            return
        if name in visiting:
            raise InteropError(
                f"NIR graph has a cycle through {name!r} (recurrence); only feed-forward graphs import"
            )
        visiting.add(name)
        for p in pred[name]:
            visit(p)
        visiting.discard(name)
        done.add(name)
        order.append(name)

    visit(outputs[0])
    if inputs[0] not in done:
        raise InteropError("the NIR Input does not reach the Output")
    stray = set(pred) - done
    if stray:
        raise InteropError(f"NIR nodes {sorted(stray)} do not lead to the Output")
    for name in order:
        kind = type(g.nodes[name]).__name__
        if len(pred[name]) > 1 and kind not in NEURON_TYPES:
            raise InteropError(
                f"NIR node {name!r} ({kind}) has {len(pred[name])} inputs; only a neuron may sum "
                f"branches (a residual sum)"
            )
    return order, pred


def order_nodes(g: nir.NIRGraph) -> set[str]:
    """The nodes the graph's metadata names as execution-order nodes (:data:`ORDER_NODES_KEY`);
    each must exist and hold zeros only (it then adds nothing where it leads)."""
    gmeta = plain(dict(g.metadata)) if isinstance(g.metadata, dict) else {}
    names = set(gmeta.get(ORDER_NODES_KEY) or {})
    for name in sorted(names):
        node = g.nodes.get(name)
        arrays = [getattr(node, f, None) for f in ("weight", "bias")]
        if node is None or not all(a is not None and not np.any(np.asarray(a)) for a in arrays):
            raise InteropError(
                f"NIR metadata {ORDER_NODES_KEY} names {name!r}, which is not a node of zero weight "
                f"and bias; remove it from {ORDER_NODES_KEY}"
            )
    return names


def _vec(node: nir.NIRNode, attr: str, n: int, where: str) -> np.ndarray:
    value = np.asarray(getattr(node, attr), dtype=np.float64)
    try:
        out = np.broadcast_to(value.reshape(-1) if value.size == n else value, (n,)).copy()
    except ValueError:
        raise InteropError(f"{where}: {attr} of shape {value.shape} does not fit {n} neurons") from None
    if not np.all(np.isfinite(out)):
        raise InteropError(f"{where}: {attr} has non-finite values")
    return out


def neuron_params(where: str, node: nir.NIRNode, n: int, dt: float) -> dict[str, np.ndarray]:
    """Per-neuron Euler-step parameters: dendrite decay mu_d and input gain a, soma decay
    lam_s, soma gain g, soma drive c per step, threshold thr, reset potential v_reset."""
    kind = type(node).__name__
    thr = _vec(node, "v_threshold", n, where)
    if np.any(thr <= 0):
        raise InteropError(
            f"{where}: v_threshold must be > 0 (thresholds are positive), got {float(thr.min()):.4g}"
        )
    v_reset = _vec(node, "v_reset", n, where)
    zeros, ones = np.zeros(n), np.ones(n)
    if kind == "IF":
        return {
            "mu_d": zeros,
            "a": ones,
            "lam_s": ones,
            "g": dt * _vec(node, "r", n, where),
            "c": zeros,
            "thr": thr,
            "v_reset": v_reset,
        }
    tau_name = "tau" if kind == "LIF" else "tau_mem"
    tau = _vec(node, tau_name, n, where)
    if np.any(tau < dt):
        raise InteropError(
            f"{where}: {tau_name} = {float(tau.min()):.4g} < dt = {dt:g}; the "
            f"Euler step would overshoot (decay 1 - dt/{tau_name} < 0)"
        )
    r, v_leak = _vec(node, "r", n, where), _vec(node, "v_leak", n, where)
    out = {
        "mu_d": zeros,
        "a": ones,
        "lam_s": 1.0 - dt / tau,
        "g": dt * r / tau,
        "c": dt * v_leak / tau,
        "thr": thr,
        "v_reset": v_reset,
    }
    if kind == "CubaLIF":
        tau_syn = _vec(node, "tau_syn", n, where)
        if np.any(tau_syn < dt):
            raise InteropError(f"{where}: tau_syn = {float(tau_syn.min()):.4g} < dt = {dt:g}")
        out["mu_d"] = 1.0 - dt / tau_syn
        out["a"] = dt * _vec(node, "w_in", n, where) / tau_syn
    return out


def _factor(values: np.ndarray) -> np.ndarray:
    """(n,) per-neuron values -> (1, 1) if all equal else (1, n)."""
    if np.allclose(values, values[0], rtol=0, atol=1e-12):
        return np.full((1, 1), float(values[0]))
    return values.reshape(1, -1).copy()


def _pair(v: Any) -> tuple[int, int]:
    arr = np.asarray(v).reshape(-1)
    return (int(arr[0]), int(arr[-1]))


class _Importer:
    """Walks the chain, emitting IR nodes through the shared exporter (biases pushed)."""

    def __init__(
        self, graph: Graph, in_shape: tuple[int, ...], dt: float, graph_rules: dict[str, Any]
    ) -> None:
        self.g, self.ex, self.dt = graph, GraphBuilder(graph), dt
        self.cur = Cursor("input", in_shape, np.zeros(in_shape))
        self.amp = 1.0  # IR value of one NIR unit of the current signal (theta after a neuron)
        self.graph_rules = graph_rules
        self.source_neurons: dict[str, str] = {}

    def synapse(
        self, prefix: str, node: Any, out_shape: tuple[int, ...], own_bias: np.ndarray | None = None
    ) -> None:
        self.cur = self.ex.synapse(self.cur, prefix, node, out_shape, own_bias, weight=True)
        self.amp = 1.0

    def as_map(self, shape: tuple[int, ...], where: str) -> None:
        """View a flat signal as the (C, H, W) map a convolution or pooling expects."""
        if len(self.cur.shape) == 3 and tuple(self.cur.shape) == shape:
            return
        if int(np.prod(self.cur.shape)) != int(np.prod(shape)):
            raise InteropError(f"{where}: expects input {shape}, gets {self.cur.shape}")
        self.cur = Cursor(self.cur.node, shape, self.cur.bias.reshape(shape), self.cur.weight_node)

    def conv(self, name: str, node: nir.NIRNode, where: str) -> None:
        if _pair(node.dilation) != (1, 1) or int(node.groups) != 1:
            raise InteropError(f"{where}: dilated or grouped convolutions are not supported")
        w = np.asarray(node.weight, dtype=np.float64)
        if w.ndim != 4:
            raise InteropError(f"{where}: weight of shape {w.shape} is not (C_out, C_in, kh, kw)")
        hw = _pair(node.input_shape) if node.input_shape is not None else self.cur.shape[-2:]
        self.as_map((int(w.shape[1]), *hw), where)
        pad = node.padding
        if isinstance(pad, str):
            if pad == "same" and (w.shape[2] % 2 == 0 or w.shape[3] % 2 == 0):
                raise InteropError(f"{where}: padding 'same' with an even kernel is asymmetric")
            pad = (0, 0) if pad == "valid" else (w.shape[2] // 2, w.shape[3] // 2)
        conv = Conv2d(
            weight=w / self.amp,
            input_shape=tuple(self.cur.shape),
            stride=_pair(node.stride),
            padding=_pair(pad),
        )
        bias = np.asarray(node.bias, dtype=np.float64).reshape(-1)
        own = np.broadcast_to(
            bias.reshape(-1, 1, 1) if bias.size > 1 else bias.reshape(1, 1, 1), conv.output_shape
        ).copy()
        self.synapse("conv", conv, conv.output_shape, own)

    def pool(self, node: nir.NIRNode, where: str, average: bool) -> None:
        if len(self.cur.shape) != 3:
            raise InteropError(f"{where}: pooling needs a (C, H, W) map, gets {self.cur.shape}")
        if _pair(node.padding) != (0, 0):
            raise InteropError(f"{where}: padded pooling is not supported")
        c = self.cur.shape[0]
        kh, kw = _pair(node.kernel_size)
        kernel = np.zeros((c, c, kh, kw))
        kernel[np.arange(c), np.arange(c)] = 1.0 / (kh * kw) if average else 1.0
        conv = Conv2d(weight=kernel / self.amp, input_shape=tuple(self.cur.shape), stride=_pair(node.stride))
        self.synapse("conv", conv, conv.output_shape)

    def affine(self, node: nir.NIRNode, where: str) -> None:
        w = np.asarray(node.weight, dtype=np.float64)
        n_in = int(np.prod(self.cur.shape))
        b = (
            np.asarray(node.bias, dtype=np.float64).reshape(-1)
            if isinstance(node, nir.Affine)
            else np.zeros(w.shape[0])
        )
        if w.ndim != 2 or w.shape[1] != n_in or b.shape != (w.shape[0],):
            raise InteropError(f"{where}: weight {w.shape} / bias {b.shape} do not fit an input of {n_in}")
        self.cur = Cursor(self.cur.node, (n_in,), self.cur.bias.reshape(-1), self.cur.weight_node)
        self.synapse("dense", Dense(weight=w / self.amp), (w.shape[0],), b)

    def neuron(self, name: str, node: nir.NIRNode, where: str, branches: list[Cursor]) -> None:
        """A neuron layer fed by one synaptic chain, or by several (a residual sum)."""
        if any(b.weight_node is None for b in branches):
            raise InteropError(
                f"{where}: a neuron must follow a weight layer (Affine, Linear, Conv2d or pooling)"
            )
        if len({tuple(b.shape) for b in branches}) > 1:
            raise InteropError(f"{where}: its inputs have shapes {[tuple(b.shape) for b in branches]}")
        shape = tuple(branches[0].shape)
        n = int(np.prod(shape))
        p = neuron_params(where, node, n, self.dt)
        own = plain(dict(node.metadata or {}))
        # a layer lmh-deploy wrote as a LIF approximation carries its exact LM-H factors:
        # lam_d stays a factor (not folded into the weights), since mu_s feeds v_s back
        exact_factors = own.get("lmh_factors") if isinstance(own.get("lmh_factors"), dict) else None
        # a current decay >= 0.5 deploys only under loihi-lif, whose lam_d is 1: the soma gain
        # then goes into the weights (as it does when it lies outside lam_d's range)
        in_range = exact_factors is not None or bool(
            np.all((p["g"] >= 0.5) & (p["g"] < 1.5)) and np.all(p["mu_d"] < 0.5)
        )
        lam_d = p["g"] if in_range else np.ones(n)
        theta = float(np.max(p["thr"]))
        q = theta / p["thr"]  # per-neuron thresholds normalised into the inputs
        if exact_factors is not None and not np.allclose(q, 1.0, rtol=1e-12, atol=0):
            raise InteropError(f"{where}: lmh_factors metadata needs one threshold per layer")
        row = q * (p["g"] / lam_d) * p["a"]
        reset_value = p["v_reset"] * q
        if not np.allclose(reset_value, reset_value[0], rtol=0, atol=1e-12 * theta):
            raise InteropError(
                f"{where}: v_reset differs between neurons in a way the layer's "
                f"single reset value cannot hold"
            )
        for branch in branches:
            self.cur = branch
            self._scale_rows(row, shape, where)
        bias = row * np.sum([b.bias.reshape(-1) for b in branches], axis=0) + q * p["c"] / lam_d
        rules: dict[str, Any] = {
            "reset": "set",
            "reset_value": float(reset_value[0]),
            "threshold_test": ">",
            "reset_timing": "same-step",
            "v_d_init": 0.0,
            "v_s_init": 0.0,
        }
        own_rules = own.get("lmh_rules") or self.graph_rules.get(name)
        if own_rules:  # written by lmh-deploy: the layer's own rules
            rules = {k: plain(own_rules[k]) for k in RULE_KEYS if k in own_rules}
        factors = {
            "mu_d": _factor(p["mu_d"]),
            "mu_s": np.zeros((1, 1)),
            "lam_d": _factor(lam_d),
            "lam_s": _factor(p["lam_s"]),
        }
        if exact_factors is not None:
            missing = sorted(set(factors) - set(exact_factors))
            if missing:
                raise InteropError(f"{where}: lmh_factors metadata lacks {', '.join(missing)}")
            factors = {k: np.atleast_2d(np.asarray(exact_factors[k], dtype=np.float64)) for k in factors}
        try:
            lmh = LMH(
                size=n,
                theta=theta,
                bias=bias,
                mu_d=factors["mu_d"],
                mu_s=factors["mu_s"],
                lam_d=factors["lam_d"],
                lam_s=factors["lam_s"],
                **rules,
            )
            lmh.check(where)
        except (IRError, TypeError) as exc:
            raise InteropError(f"{where}: {exc}") from None
        ir_name = self.ex.add("lmh", lmh, tuple(b.node for b in branches))
        self.source_neurons[ir_name] = name
        self.cur = Cursor(ir_name, shape, np.zeros(shape))
        self.amp = theta

    def _scale_rows(self, row: np.ndarray, shape: tuple[int, ...], where: str) -> None:
        if np.allclose(row, 1.0, rtol=0, atol=1e-15):
            return
        name = self.cur.weight_node
        assert name is not None  # neuron() checked that a weight layer precedes
        w = self.g.node(name).weight
        if w.ndim == 2:
            self.g.replace(name, weight=w * row[:, None])
            return
        per_channel = row.reshape(shape).reshape(shape[0], -1)
        if not np.allclose(per_channel, per_channel[:, :1], rtol=1e-12, atol=0):
            raise InteropError(
                f"{where}: thresholds or gains vary within a channel after a "
                f"convolution; only per-channel values can be folded"
            )
        self.g.replace(name, weight=w * per_channel[:, 0].reshape(-1, 1, 1, 1))

    def output(self) -> None:
        if self.g.node(self.cur.node).kind == "lmh":  # spikes out: logits = firing rates
            n = int(np.prod(self.cur.shape))
            self.affine(nir.Linear(weight=np.eye(n)), "Output")
            self.g.meta.setdefault("import_notes", []).append(
                "the graph ends in a spiking layer: logits are its firing rates"
            )
        if self.g.node(self.cur.node).kind != "dense" or len(self.cur.shape) != 1:
            raise InteropError(
                "NIR graph must end in an Affine/Linear layer or a spiking layer before its Output"
            )
        self.g.add("readout", Readout(bias=self.cur.bias.reshape(-1).copy()), (self.cur.node,))


def resolve_dt(dt: float | None, gmeta: dict[str, Any]) -> tuple[float, str]:
    """The Euler step and where it came from ("given", "file metadata" or "assumed")."""
    if dt is not None:
        origin = "given"
    elif gmeta.get("dt") is not None:
        dt, origin = gmeta["dt"], "file metadata"
    else:
        dt, origin = DEFAULT_DT, "assumed"
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise InteropError(f"dt must be finite and > 0, got {dt}")
    return dt, origin


def nir_to_graph(
    source: str | Path | nir.NIRGraph,
    *,
    dt: float | None = None,
    timesteps: int | None = None,
    x_max: float | None = None,
    warn: Callable[[str], None] = lambda msg: None,
) -> Graph:
    """Import a feed-forward NIR graph into a validated float IR graph (module docstring).

    ``dt`` defaults to the file's ``metadata["dt"]``, else :data:`DEFAULT_DT` with a warning.
    ``graph.meta["source_neurons"]`` maps each LM-H node to its NIR node.
    """
    g = read_nir(source)
    gmeta = plain(dict(g.metadata)) if isinstance(g.metadata, dict) else {}
    dt, origin = resolve_dt(dt, gmeta)
    if origin == "assumed":
        warn(
            f"the NIR graph records no time step: assumed dt = {dt:g} s (snnTorch's "
            f"convention); pass --dt if it was exported with another"
        )
    order, pred = nir_order(g)
    in_shape = input_shape(g, order[0])
    typed = declared_input(g, order[0])
    if len(typed) == 2 and typed[0] > 1 and in_shape == typed[1:]:
        warn(
            f"NIR node {order[0]!r} (Input): typed {list(typed)}, read as one sample of "
            f"{typed[1]} values a step (the Affine after it takes {typed[1]}; a time axis of the "
            f"exporter's sample, e.g. sinabs's to_nir given (1, T, n)); export with a (1, 1, "
            f"{typed[1]}) sample to type it [{typed[1]}]"
        )
    x_max = float(x_max if x_max is not None else gmeta.get("x_max", 1.0))
    ir = Graph(
        meta={
            "dt": dt,
            "dt_origin": origin,
            "x_max": x_max,
            "timesteps": int(timesteps or gmeta.get("timesteps") or 4),
        }
    )
    # our own exports say how their inputs are sent (files without input_bits: 8-bit messages)
    signed, bits = bool(gmeta.get("input_signed", 0)), int(gmeta.get("input_bits", 8))
    ir.add("input", Input(shape=in_shape, x_max=x_max, signed=signed, bits=bits))
    imp = _Importer(ir, in_shape, dt, gmeta.get("lmh_deploy_rules") or {})
    signals: dict[str, tuple[Cursor, float]] = {order[0]: (imp.cur, imp.amp)}  # per NIR node
    for name in order[1:]:
        node = g.nodes[name]
        kind = type(node).__name__
        where = f"NIR node {name!r} ({kind})"
        imp.cur, imp.amp = signals[pred[name][0]]
        if isinstance(node, nir.Flatten):
            if len(flatten_output(node, imp.cur.shape, where)) != len(imp.cur.shape):
                n = int(np.prod(imp.cur.shape))
                imp.cur = Cursor(imp.cur.node, (n,), imp.cur.bias.reshape(-1), imp.cur.weight_node)
        elif isinstance(node, (nir.Affine, nir.Linear)):
            imp.affine(node, where)
        elif isinstance(node, nir.Conv2d):
            imp.conv(name, node, where)
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            imp.pool(node, where, average=isinstance(node, nir.AvgPool2d))
        elif kind in NEURON_TYPES:
            imp.neuron(name, node, where, [signals[p][0] for p in pred[name]])
        elif isinstance(node, nir.Output):
            imp.output()
        else:
            raise InteropError(
                f"{where}: node type {kind} cannot be imported; supported: {', '.join(SUPPORTED)}"
            )
        signals[name] = (imp.cur, imp.amp)
    ir.meta["num_classes"] = ir.node("readout").output_size()
    ir.meta["source_neurons"] = imp.source_neurons
    ir.meta["source"] = {"format": "nir", "producer": str(gmeta.get("producer", "unknown"))}
    try:
        validate(ir)
    except IRError as exc:
        raise InteropError(f"imported graph is invalid: {exc}") from None
    return ir
