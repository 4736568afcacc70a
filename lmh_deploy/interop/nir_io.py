"""Float IR <-> NIR (Neuromorphic Intermediate Representation, nir 1.0.x).

NIR is continuous-time; this module uses the forward-Euler convention of
snnTorch's NIR export (``lam = 1 - dt/tau``, ``r = tau/dt``), under which one
Euler step of a NIR neuron equals one LM-H step exactly. ``docs/interop.md``
has the full derivation; in short, for an LM-H layer with ``mu_s = 0``:

* ``mu_d = 0``, ``lam_s < 1``:  ``LIF(tau = dt/(1-lam_s), r = lam_d*tau/dt, v_leak = 0,
  v_threshold = theta, v_reset = 0)``;
* ``mu_d = 0``, ``lam_s = 1``:  ``IF(r = lam_d/dt, v_threshold = theta, v_reset = 0)``;
* ``0 < mu_d < 0.5``, ``lam_s < 1``: ``CubaLIF(tau_syn = dt/(1-mu_d), w_in = tau_syn/dt,
  tau_mem = dt/(1-lam_s), r = lam_d*tau_mem/dt, ...)`` (the dendrite is the synaptic current);
* each IR ``Dense`` becomes an ``Affine`` whose bias is the following neuron's bias
  (or the readout's), with its weight multiplied by the presynaptic spike amplitude
  ``theta_pre`` (LM-H spikes carry ``theta``; NIR spikes are 1).

Known differences that no NIR node can express: LM-H resets by subtraction and
fires at ``v >= theta`` from ``v = theta/2``; NIR neurons reset to ``v_reset`` and
fire at ``v > v_threshold`` from a backend-chosen initial state (usually 0).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nir
import numpy as np

from lmh_deploy.interop import InteropError
from lmh_deploy.ir import LMH, Dense, Graph, Input, IRError, Readout, validate
from lmh_deploy.reports.record import spike_agreement_by_layer
from lmh_deploy.semantics.reference import float_initial_state, lmh_float_step

#: |factor - exact value| below this counts as exact (the 12-bit factor quantum is 2.4e-4).
FACTOR_TOL = 1e-9
#: Number of random samples used to measure a lossy export when no inputs are given.
DEFAULT_MEASURE_SAMPLES = 64
NEURON_TYPES = ("LIF", "IF", "CubaLIF")
CHAIN_KINDS = ("input", "dense", "lmh", "readout")
SUPPORTED_IMPORT = ("Input", "Output", "Affine", "Linear", "Flatten", *NEURON_TYPES)
Target = Literal["nir", "netx"]


# =============================================================================== float simulator
@dataclass
class FloatRun:
    """Result of :func:`simulate_float`: spikes (T, B, n) per LM-H layer, logits (B, classes)."""

    spikes: dict[str, np.ndarray]
    logits: np.ndarray
    readout_trace: np.ndarray  # (T, B, classes): the readout's input current per step

    @property
    def predictions(self) -> np.ndarray:
        """Predicted class per sample."""
        return np.argmax(self.logits, axis=1)


def simulate_float(graph: Graph, x: np.ndarray, timesteps: int | None = None, *,
                   reset: Literal["subtract", "zero"] = "subtract",
                   v_init: Literal["half", "zero"] = "half", strict: bool = False) -> FloatRun:
    """Run a float IR graph in float64 NumPy (Eq. 4 with the neuron rules of each layer).

    ``x`` is (B, *shape) (presented every step, direct encoding) or (T, B, *shape).
    The defaults use each layer's own rules (:func:`lmh_deploy.semantics.reference.lmh_float_step`,
    the one float reference). ``reset="zero"``, ``v_init="zero"``, ``strict=True``
    give what NIR backends usually do with an exported LIF (hard reset to 0, start at
    0, fire at ``v > theta``), to measure that difference.
    """
    validate(graph)
    check_dense_chain(graph, "nir_io.simulate_float (lmh_deploy.backends.float_ir runs conv graphs)")
    steps = int(timesteps if timesteps is not None else graph.meta.get("timesteps", 1))
    order = graph.order()
    inp = graph.node(order[0])
    assert isinstance(inp, Input)
    x = np.asarray(x, dtype=np.float64)
    static = x.ndim == len(inp.shape) + 1
    batch = x.shape[0] if static else x.shape[1]
    if not static and x.shape[0] < steps:
        raise InteropError(f"time-major input has {x.shape[0]} frames, {steps} steps requested")
    state: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    spikes: dict[str, np.ndarray] = {}
    layers: dict[str, LMH] = {}  # each layer with the rules this run uses
    readout_name = graph.of_kind("readout")[0]
    readout = graph.node(readout_name)
    trace = np.zeros((steps, batch, readout.output_size()))
    for name in order:
        node = graph.node(name)
        if isinstance(node, LMH):
            layers[name] = node if (reset, v_init, strict) == ("subtract", "half", False) else \
                _nir_like(node, reset, v_init, strict)
            state[name] = float_initial_state(layers[name], (batch, node.size))
            spikes[name] = np.zeros((steps, batch, node.size), bool)
    for t in range(steps):
        values: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.node(name)
            if isinstance(node, Input):
                values[name] = (x if static else x[t]).reshape(batch, -1)
                continue
            pre = values[graph.inputs_of(name)[0]]
            if isinstance(node, Dense):
                values[name] = pre @ node.weight.T
            elif isinstance(node, LMH):
                v_d, v_s, s = lmh_float_step(layers[name], t, *state[name], pre,
                                             spikes[name][t - 1] if t else None)
                state[name] = (v_d, v_s)
                spikes[name][t] = s
                values[name] = s * node.theta
            elif isinstance(node, Readout):
                trace[t] = pre
    return FloatRun(spikes=spikes, logits=trace.mean(0) + readout.bias, readout_trace=trace)


def _nir_like(node: LMH, reset: str, v_init: str, strict: bool) -> LMH:
    """``node`` with the rules overridden as :func:`simulate_float`'s options ask."""
    return dataclasses.replace(
        node, reset="subtract" if reset == "subtract" else "set", reset_value=0.0,
        threshold_test=">" if strict else node.threshold_test,
        v_s_init=node.v_s_init if v_init == "half" else 0.0,
        v_d_init=node.v_d_init if v_init == "half" else 0.0)


def spike_disagreement(a: FloatRun, b: FloatRun) -> dict[str, Any]:
    """Fraction of (step, sample, neuron) spike entries that differ, overall and per layer."""
    agree, overall = spike_agreement_by_layer(b.spikes, a.spikes)
    return {"spike_disagreement": 1.0 - overall,
            "per_layer": {name: 1.0 - value for name, value in agree.items()},
            "prediction_agreement": float(np.mean(a.predictions == b.predictions))}


def measure_approximation(graph: Graph, approx: Graph, x: np.ndarray,
                          timesteps: int | None = None) -> dict[str, Any]:
    """How far ``approx`` (an exportable graph) is from ``graph`` on inputs ``x``.

    ``lmh_semantics``: both run with LM-H's own neuron (subtractive reset, ``v0 = theta/2``),
    i.e. the error of the factor approximation alone. ``nir_backend_semantics``: ``approx``
    runs as a typical NIR backend runs the exported file (reset to 0, ``v0 = 0``, ``v > theta``).
    """
    steps = int(timesteps if timesteps is not None else graph.meta.get("timesteps", 1))
    ref = simulate_float(graph, x, steps)
    same = simulate_float(approx, x, steps)
    nir_like = simulate_float(approx, x, steps, reset="zero", v_init="zero", strict=True)
    return {"samples": int(ref.logits.shape[0]), "timesteps": steps,
            "lmh_semantics": spike_disagreement(ref, same),
            "nir_backend_semantics": spike_disagreement(ref, nir_like)}


# =============================================================================== LIF plans
@dataclass
class NeuronPlan:
    """How one LM-H layer maps onto a standard neuron: per-neuron (n,) factor values.

    ``problems`` says why the layer is not exactly representable (empty if it is);
    ``approximations`` what the lossy plan changed.
    """

    name: str
    mu_d: np.ndarray
    lam_d: np.ndarray
    lam_s: np.ndarray
    problems: list[str] = field(default_factory=list)
    approximations: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:  # noqa: D102
        return not self.problems


def _describe(arr: np.ndarray) -> str:
    lo, hi = float(np.min(arr)), float(np.max(arr))
    return f"{lo:.4g}" if math.isclose(lo, hi, abs_tol=FACTOR_TOL) else f"{lo:.4g}..{hi:.4g}"


def _worst(arr: np.ndarray, target: float) -> float:
    flat = np.ravel(arr)
    return float(flat[np.argmax(np.abs(flat - target))])


def _snap(arr: np.ndarray, value: float) -> np.ndarray:
    out = np.array(arr, dtype=np.float64)
    out[np.abs(out - value) <= FACTOR_TOL] = value
    return out


def plan_layer(name: str, node: LMH, *, target: Target = "nir", lossy: bool = False) -> NeuronPlan:
    """Check one LM-H layer against the LIF family of ``target`` and plan its mapping.

    Exact when ``mu_s = 0``, factors constant in time, and (NIR) ``0 <= mu_d < 0.5`` with
    ``lam_s <= 1`` (``mu_d > 0`` needs ``lam_s < 1``), or (netx) ``mu_d = 0``, ``lam_s <= 1``,
    one ``lam_s`` per layer. ``lam_d`` is always exact (an input gain). With ``lossy`` the
    plan drops the dendrite memory (``mu_d = mu_s = 0``), averages time rows and clamps
    ``lam_s`` to 1, recording each change.
    """
    n = node.size
    fmt = "NIR" if target == "nir" else "netx"
    problems: list[str] = []
    rows = node.mu_d.shape[0]
    for fname in ("mu_d", "mu_s", "lam_d", "lam_s"):
        arr = getattr(node, fname)
        if rows > 1 and float(np.max(np.ptp(arr, axis=0))) > FACTOR_TOL:
            problems.append(f"{name}: radical factors: {fname} changes over the {rows} time "
                            f"steps ({_describe(arr)}); {fmt} neurons have constant parameters")
            break

    def per_neuron(fname: str) -> np.ndarray:
        return np.broadcast_to(getattr(node, fname).mean(axis=0), (n,)).astype(np.float64)

    mu_d, mu_s, lam_d, lam_s = (per_neuron(f) for f in ("mu_d", "mu_s", "lam_d", "lam_s"))
    if np.any(np.abs(mu_s) > FACTOR_TOL):
        problems.append(f"{name}: mu_s = {_worst(mu_s, 0):.4g} != 0; {fmt} has no soma->dendrite "
                        f"feedback (LM-H's second compartment coupling)")
    growing = bool(np.any(lam_s > 1 + FACTOR_TOL))
    if target == "nir":
        if np.any(mu_d < -FACTOR_TOL):
            problems.append(f"{name}: mu_d = {_worst(mu_d, 0):.4g} != 0; NIR has no dendrite->soma "
                            f"two-compartment neuron with a negative dendrite decay (a CubaLIF "
                            f"would need tau_syn = dt/(1 - mu_d) < dt)")
        elif np.any(mu_d > FACTOR_TOL) and np.any(lam_s >= 1 - FACTOR_TOL) and not growing:
            problems.append(f"{name}: mu_d = {_worst(mu_d, 0):.4g} with lam_s = "
                            f"{_worst(lam_s, 0):.4g} >= 1; NIR has no current-based IF neuron "
                            f"(CubaLIF needs a finite tau_mem, i.e. lam_s < 1)")
    elif np.any(np.abs(mu_d) > FACTOR_TOL):
        problems.append(f"{name}: mu_d = {_worst(mu_d, 0):.4g} != 0; the netx export covers the "
                        f"LIF case only (iDecay = 4096: the CUBA current keeps no memory)")
    if growing:
        problems.append(f"{name}: lam_s = {_worst(lam_s, 1):.4g} > 1; a growing soma is a negative "
                        f"time constant, which {fmt}'s leaky neurons cannot express")
    elif target == "nir" and np.any(lam_s >= 1 - FACTOR_TOL) and np.any(lam_s < 1 - FACTOR_TOL):
        problems.append(f"{name}: lam_s is 1 for some neurons and < 1 for others; NIR needs one "
                        f"node type (IF or LIF) per layer")
    if target == "netx" and float(np.ptp(lam_s)) > FACTOR_TOL:
        problems.append(f"{name}: per-neuron lam_s ({_describe(lam_s)}); netx CUBA has one vDecay "
                        f"per layer")
    plan = NeuronPlan(name=name, mu_d=_snap(mu_d, 0.0), lam_d=_snap(lam_d, 1.0),
                      lam_s=_snap(lam_s, 1.0), problems=problems)
    if problems and lossy:
        if rows > 1:
            plan.approximations.append(f"time rows of the {rows} radical factor sets averaged")
        if np.any(np.abs(mu_d) > FACTOR_TOL):
            plan.approximations.append(f"dendrite memory dropped: mu_d {_describe(mu_d)} -> 0")
        if np.any(np.abs(mu_s) > FACTOR_TOL):
            plan.approximations.append(f"soma->dendrite feedback dropped: mu_s {_describe(mu_s)} -> 0")
        plan.mu_d = np.zeros(n)
        new_lam_s = np.minimum(plan.lam_s, 1.0)
        if np.any(new_lam_s >= 1.0) and np.any(new_lam_s < 1.0):
            new_lam_s = np.minimum(new_lam_s, 1.0 - 2.0 ** -12)
        if target == "netx":
            new_lam_s = np.full(n, float(new_lam_s.mean()))
        if np.any(np.abs(new_lam_s - plan.lam_s) > FACTOR_TOL):
            plan.approximations.append(f"lam_s {_describe(plan.lam_s)} -> {_describe(new_lam_s)}")
        plan.lam_s = new_lam_s
    return plan


def check_dense_chain(graph: Graph, where: str = "the NIR export") -> None:
    """Raise :class:`InteropError` unless ``graph`` is ``Input -> (Dense -> LMH)* -> Dense ->
    Readout`` (what the exporters handle), naming the first node that is not."""
    shape = "Input -> (Dense -> LM-H)* -> Dense -> Readout"
    for name, node in graph.items():
        preds = graph.inputs_of(name)
        succs = list(graph.nx_graph.successors(name))
        if node.kind not in CHAIN_KINDS:
            raise InteropError(f"{name}: {node.kind} layers are not supported by {where}; "
                               f"supported: dense networks ({shape})")
        pred_kinds = [graph.node(p).kind for p in preds]
        if node.kind in ("lmh", "readout") and pred_kinds != ["dense"]:
            raise InteropError(f"{name}: fed by {preds}; {where} needs exactly one dense "
                               f"layer before each neuron (no residual sums): {shape}")
        if node.kind == "dense" and (pred_kinds[0] == "dense" or len(succs) != 1):
            raise InteropError(f"{name}: dense layers must come from the input or a neuron and "
                               f"feed exactly one neuron or the readout: {shape}")


def plan_graph(graph: Graph, *, target: Target = "nir", lossy: bool = False) -> dict[str, NeuronPlan]:
    """Plans for every LM-H layer; raise :class:`InteropError` listing all problems if any
    layer is not exactly representable and ``lossy`` is false."""
    try:
        validate(graph)
    except IRError as exc:
        raise InteropError(f"invalid graph: {exc}") from None
    check_dense_chain(graph, "the NIR export" if target == "nir" else "the netx export")
    plans = {name: plan_layer(name, node, target=target, lossy=lossy)
             for name, node in graph.items() if isinstance(node, LMH)}
    problems = [p for plan in plans.values() for p in plan.problems]
    if problems and not lossy:
        hint = ("pass allow_lossy=True (--lossy) for a LIF approximation whose measured error "
                "is reported" if target == "nir" else "only LIF-compatible networks export to netx")
        raise InteropError(f"cannot export to {'NIR' if target == 'nir' else 'netx'} exactly: "
                           + "; ".join(problems) + f". {hint}")
    return plans


def _factor(values: np.ndarray) -> np.ndarray:
    """(n,) per-neuron values -> (1, 1) if all equal else (1, n)."""
    if float(np.ptp(values)) <= FACTOR_TOL:
        return np.full((1, 1), float(values[0]))
    return values.reshape(1, -1).copy()


def lif_approximation(graph: Graph, plans: dict[str, NeuronPlan]) -> Graph:
    """The graph whose LM-H layers carry the planned (standard-neuron) factors, mu_s = 0."""
    out = graph.copy()
    for name, plan in plans.items():
        assert isinstance(out.node(name), LMH)
        out.replace(name, mu_d=_factor(plan.mu_d), lam_d=_factor(plan.lam_d),
                    lam_s=_factor(plan.lam_s), mu_s=np.zeros((1, 1)))
    return out


# =============================================================================== export
def _neuron_node(plan: NeuronPlan, theta: float, dt: float, meta: dict[str, Any]) -> nir.NIRNode:
    n = plan.mu_d.shape[0]
    thr, zeros = np.full(n, float(theta)), np.zeros(n)
    if np.all(plan.mu_d == 0):
        if np.all(plan.lam_s == 1):
            return nir.IF(r=plan.lam_d / dt, v_threshold=thr, v_reset=zeros, metadata=meta)
        tau = dt / (1.0 - plan.lam_s)
        return nir.LIF(tau=tau, r=plan.lam_d * tau / dt, v_leak=zeros, v_threshold=thr,
                       v_reset=zeros, metadata=meta)
    tau_syn, tau_mem = dt / (1.0 - plan.mu_d), dt / (1.0 - plan.lam_s)
    return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau_mem, r=plan.lam_d * tau_mem / dt,
                       v_leak=zeros, v_threshold=thr, v_reset=zeros, w_in=tau_syn / dt,
                       metadata=meta)


def graph_to_nir(graph: Graph, *, dt: float = 1e-3, allow_lossy: bool = False,
                 inputs: np.ndarray | None = None) -> nir.NIRGraph:
    """Export a float IR graph to a :class:`nir.NIRGraph` (see the module docstring).

    Raises :class:`InteropError` naming each layer and factor that prevents an exact
    export, unless ``allow_lossy``: then non-representable layers become LIF neurons with
    decay ``lam_s`` and input gain ``lam_d`` (dendrite memory dropped), and the measured
    error of that approximation (:func:`measure_approximation` on ``inputs``, or on
    :data:`DEFAULT_MEASURE_SAMPLES` seeded uniform samples in ``[0, x_max]``) is stored in
    ``metadata["lmh_deploy_error"]``. With ``inputs`` the error is measured for exact
    exports too (then only the NIR-backend reset difference remains).
    """
    if not (dt > 0 and math.isfinite(dt)):
        raise InteropError(f"dt must be finite and > 0, got {dt}")
    plans = plan_graph(graph, target="nir", lossy=allow_lossy)
    approx = lif_approximation(graph, plans)
    inp = graph.node(graph.order()[0])
    assert isinstance(inp, Input)
    timesteps = int(graph.meta.get("timesteps", 1))
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(inp.shape)})}
    edges: list[tuple[str, str]] = []
    tail = {"input": "input"}  # IR name -> NIR node that carries its output
    if len(inp.shape) > 1:
        nodes["flatten"] = nir.Flatten(input_type={"input": np.array(inp.shape)},
                                       start_dim=0, end_dim=-1)
        edges.append(("input", "flatten"))
        tail["input"] = "flatten"
    for name, node in approx.items():
        if isinstance(node, Input):
            continue
        (src,) = approx.inputs_of(name)
        if isinstance(node, Dense):
            pre = approx.node(src)
            amp = pre.theta if isinstance(pre, LMH) else 1.0
            (consumer,) = list(approx.nx_graph.successors(name))
            bias = np.asarray(approx.node(consumer).bias, dtype=np.float64)
            nodes[name] = nir.Affine(weight=node.weight * amp, bias=bias.copy())
        elif isinstance(node, LMH):
            plan = plans[name]
            meta = {"lmh_theta": float(node.theta), "lmh_reset": "subtract",
                    "lmh_v_init": float(node.theta) / 2, "lmh_exact": int(plan.exact)}
            if plan.approximations:
                meta["lmh_approximation"] = "; ".join(plan.approximations)
            nodes[name] = _neuron_node(plan, node.theta, dt, meta)
        elif isinstance(node, Readout):
            name = "output"
            nodes[name] = nir.Output(output_type={"output": np.array([node.output_size()])})
        edges.append((tail[src], name))
        tail[name] = name
    exact = all(p.exact for p in plans.values())
    from lmh_deploy import __version__

    meta: dict[str, Any] = {
        "producer": f"lmh-deploy {__version__}", "dt": float(dt), "timesteps": timesteps,
        "x_max": float(inp.x_max), "exact": int(exact),
        "discretisation": "forward Euler, one step = dt: lam = 1 - dt/tau, r = lam_d*tau/dt "
                          "(snnTorch convention); CubaLIF: mu_d = 1 - dt/tau_syn, w_in = tau_syn/dt",
        "readout": "logits = mean over the timesteps of the output (Affine incl. bias)",
        "lmh_semantics": "subtractive reset, fire at v >= v_threshold, initial v = v_threshold/2",
        # Each layer's own neuron rules (lmh-deploy reads them back; other tools ignore them).
        "lmh_deploy_rules": _nir_safe({n: graph.node(n).rules() for n in graph.of_kind("lmh")})}
    if allow_lossy or inputs is not None:
        x = inputs
        if x is None:
            rng = np.random.default_rng(0)
            x = rng.uniform(0.0, inp.x_max, (DEFAULT_MEASURE_SAMPLES, *inp.shape))
            meta["error_inputs"] = f"{DEFAULT_MEASURE_SAMPLES} seeded uniform samples in [0, x_max]"
        else:
            meta["error_inputs"] = f"{np.asarray(x).shape[0]} given samples"
        meta["lmh_deploy_error"] = _nir_safe(measure_approximation(graph, approx, x, timesteps))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _nir_safe(value: Any) -> Any:
    """Make a report dict writable by ``nir.write`` (nested dicts of str / float / int)."""
    if isinstance(value, dict):
        return {str(k): _nir_safe(v) for k, v in value.items()}
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return value


def _plain(value: Any) -> Any:
    """NIR metadata read back from HDF5 (NumPy scalars, bytes) -> plain Python values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_nir(graph: Graph, path: str | Path, *, dt: float = 1e-3, allow_lossy: bool = False,
              inputs: np.ndarray | None = None) -> dict[str, Any]:
    """:func:`graph_to_nir` then ``nir.write``; returns a summary (node types, exactness, error)."""
    nir_graph = graph_to_nir(graph, dt=dt, allow_lossy=allow_lossy, inputs=inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, nir_graph)
    layers = {}
    for name, node in nir_graph.nodes.items():
        entry: dict[str, Any] = {"type": type(node).__name__}
        if "lmh_exact" in node.metadata:
            entry["exact"] = bool(node.metadata["lmh_exact"])
            entry["approximation"] = node.metadata.get("lmh_approximation", "")
        layers[name] = entry
    return {"path": str(path), "dt": dt, "exact": bool(nir_graph.metadata["exact"]),
            "nodes": layers, "error": nir_graph.metadata.get("lmh_deploy_error")}


# =============================================================================== import
def _chain(g: nir.NIRGraph) -> list[tuple[str, nir.NIRNode]]:
    """The nodes of a NIR graph as one Input -> ... -> Output chain, or InteropError."""
    inputs = [k for k, v in g.nodes.items() if isinstance(v, nir.Input)]
    outputs = [k for k, v in g.nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise InteropError(f"NIR graph needs exactly one Input and one Output node, has "
                           f"{len(inputs)} and {len(outputs)}")
    succ: dict[str, list[str]] = {k: [] for k in g.nodes}
    pred: dict[str, list[str]] = {k: [] for k in g.nodes}
    for a, b in g.edges:
        if a not in g.nodes or b not in g.nodes:
            raise InteropError(f"NIR edge ({a!r}, {b!r}) names a missing node")
        succ[a].append(b)
        pred[b].append(a)
    for k in g.nodes:
        if len(succ[k]) > 1 or len(pred[k]) > 1:
            raise InteropError(f"NIR node {k!r} has {len(pred[k])} inputs and {len(succ[k])} "
                               f"outputs; only feed-forward chains import (no recurrence or "
                               f"branches)")
    chain, cur, seen = [], inputs[0], set()
    while True:
        if cur in seen:
            raise InteropError(f"NIR graph has a cycle through {cur!r}")
        seen.add(cur)
        chain.append((cur, g.nodes[cur]))
        if cur == outputs[0]:
            break
        if not succ[cur]:
            raise InteropError(f"NIR node {cur!r} leads nowhere; the Input does not reach the Output")
        cur = succ[cur][0]
    stray = set(g.nodes) - seen
    if stray:
        raise InteropError(f"NIR nodes {sorted(stray)} are not on the Input -> Output chain")
    return chain


def _vec(node: nir.NIRNode, attr: str, n: int, where: str) -> np.ndarray:
    value = np.asarray(getattr(node, attr), dtype=np.float64)
    try:
        out = np.broadcast_to(value.reshape(-1) if value.size == n else value, (n,)).copy()
    except ValueError:
        raise InteropError(f"{where}: {attr} of shape {value.shape} does not fit {n} neurons") from None
    if not np.all(np.isfinite(out)):
        raise InteropError(f"{where}: {attr} has non-finite values")
    return out


def _check_range(where: str, what: str, values: np.ndarray, lo: float, hi: float, why: str) -> None:
    bad = values[(values < lo) | (values >= hi)]
    if bad.size:
        raise InteropError(f"{where}: {what} = {float(bad[0]):.4g} is outside LM-H's [{lo}, {hi}); "
                           f"{why}")


def _neuron_to_lmh(where: str, node: nir.NIRNode, n: int, dt: float) -> dict[str, Any]:
    """Per-neuron LM-H parameters of a NIR neuron: mu_d, lam_s, dendrite input gain ``a``,
    soma gain ``g`` (lam_d before folding), soma constant ``c`` per step, thresholds."""
    kind = type(node).__name__
    thr = _vec(node, "v_threshold", n, where)
    if np.any(thr <= 0):
        raise InteropError(f"{where}: v_threshold must be > 0 (LM-H thresholds are positive), "
                           f"got {float(thr.min()):.4g}")
    v_reset = _vec(node, "v_reset", n, where) if getattr(node, "v_reset", None) is not None else np.zeros(n)
    if np.any(v_reset != 0):
        raise InteropError(f"{where}: v_reset = {float(v_reset[v_reset != 0][0]):.4g} != 0; LM-H "
                           f"resets by subtracting theta and has no reset potential")
    if kind == "IF":
        r = _vec(node, "r", n, where)
        return {"mu_d": np.zeros(n), "lam_s": np.ones(n), "a": np.ones(n), "g": dt * r,
                "c": np.zeros(n), "thr": thr}
    tau_name = "tau" if kind == "LIF" else "tau_mem"
    tau = _vec(node, tau_name, n, where)
    if np.any(tau <= 0):
        raise InteropError(f"{where}: {tau_name} must be > 0, got {float(tau.min()):.4g}")
    r, v_leak = _vec(node, "r", n, where), _vec(node, "v_leak", n, where)
    lam_s = 1.0 - dt / tau
    _check_range(where, f"lam_s = 1 - dt/{tau_name} (dt = {dt:g})", lam_s, 0.5, 1.5,
                 f"{tau_name} must be >= 2*dt")
    g, c = dt * r / tau, dt * v_leak / tau
    if kind == "LIF":
        return {"mu_d": np.zeros(n), "lam_s": lam_s, "a": np.ones(n), "g": g, "c": c, "thr": thr}
    if np.any(v_leak != 0):
        raise InteropError(f"{where}: CubaLIF v_leak != 0 is a constant soma drive, which LM-H "
                           f"(bias on the dendrite) cannot express when the dendrite has memory")
    tau_syn, w_in = _vec(node, "tau_syn", n, where), _vec(node, "w_in", n, where)
    if np.any(tau_syn <= 0):
        raise InteropError(f"{where}: tau_syn must be > 0, got {float(tau_syn.min()):.4g}")
    mu_d = 1.0 - dt / tau_syn
    _check_range(where, f"mu_d = 1 - dt/tau_syn (dt = {dt:g})", mu_d, -0.5, 0.5,
                 "the synaptic current maps to LM-H's dendrite, whose decay lies in "
                 "[-0.5, 0.5): tau_syn must lie in [dt/1.5, 2*dt)")
    return {"mu_d": mu_d, "lam_s": lam_s, "a": dt * w_in / tau_syn, "g": g, "c": c, "thr": thr}


def nir_to_graph(path_or_graph: str | Path | nir.NIRGraph, *, dt: float | None = None,
                 timesteps: int | None = None, x_max: float | None = None) -> Graph:
    """Import a feed-forward LIF / IF / CubaLIF NIR graph into the float IR.

    Accepted: ``Input -> [Flatten] -> (Affine|Linear -> LIF|IF|CubaLIF)* -> Affine|Linear ->
    Output``; a graph ending in a spiking layer gets an identity readout whose logits are
    firing rates; consecutive Affines are multiplied out. ``dt`` (else the file's
    ``metadata["dt"]``) fixes the discretisation: ``lam_s = 1 - dt/tau_mem``,
    ``mu_d = 1 - dt/tau_syn``, input gains ``dt*r/tau`` and ``dt*w_in/tau_syn``. Gains go
    into ``lam_d`` when they lie in [0.5, 1.5), else into the weights; per-neuron
    thresholds are normalised into the weights; ``v_leak`` of a LIF becomes bias.
    Raises :class:`InteropError` naming the node for anything LM-H cannot represent.
    The imported graph uses LM-H semantics (subtractive reset, ``v0 = theta/2``).
    """
    if isinstance(path_or_graph, nir.NIRGraph):
        g, source = path_or_graph, None
    else:
        try:
            g = nir.read(path_or_graph)
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            raise InteropError(f"{path_or_graph}: cannot read NIR file: {exc}") from None
        source = Path(path_or_graph).name
    gmeta = _plain(dict(g.metadata)) if isinstance(g.metadata, dict) else {}
    if dt is None:
        dt = gmeta.get("dt")
        if dt is None:
            raise InteropError("the NIR graph does not record its time step: pass dt= (snnTorch's "
                               "export_to_nir uses dt = 1e-4)")
    dt = float(dt)
    if not (dt > 0 and math.isfinite(dt)):
        raise InteropError(f"dt must be finite and > 0, got {dt}")
    timesteps = timesteps if timesteps is not None else gmeta.get("timesteps")
    x_max = float(x_max if x_max is not None else gmeta.get("x_max", 1.0))
    chain = _chain(g)
    in_shape = tuple(int(d) for d in np.asarray(chain[0][1].input_type["input"]).reshape(-1))
    notes = ["reset: NIR neurons reset to v_reset = 0, the imported LM-H layers subtract theta",
             "initial state: LM-H starts at v = theta/2 (NIR backends usually at 0)",
             "firing: LM-H fires at v >= theta, NIR at v > v_threshold"]
    ir = Graph(meta={"dt": dt, "x_max": x_max})
    prev = ir.add("input", Input(shape=in_shape, x_max=x_max))
    size, amp = int(np.prod(in_shape)), 1.0  # amp: amplitude of what `prev` sends
    pending: tuple[np.ndarray, np.ndarray] | None = None
    n_dense = n_lmh = 0
    for name, node in chain[1:]:
        kind = type(node).__name__
        where = f"NIR node {name!r} ({kind})"
        if isinstance(node, nir.Flatten):
            continue  # the IR's dense layers consume flattened inputs
        if isinstance(node, (nir.Affine, nir.Linear)):
            w = np.asarray(node.weight, dtype=np.float64)
            b = (np.asarray(node.bias, dtype=np.float64).reshape(-1) if isinstance(node, nir.Affine)
                 else np.zeros(w.shape[0]))
            if w.ndim != 2 or w.shape[1] != size or b.shape != (w.shape[0],):
                raise InteropError(f"{where}: weight {w.shape} / bias {b.shape} do not fit an "
                                   f"input of {size}")
            if pending is not None:
                w, b = w @ pending[0], w @ pending[1] + b
            pending, size = (w, b), w.shape[0]
        elif kind in NEURON_TYPES:
            w, b = pending if pending is not None else (np.eye(size), np.zeros(size))
            p = _neuron_to_lmh(where, node, size, dt)
            g_soma = p["g"]
            in_range = bool(np.all((g_soma >= 0.5) & (g_soma < 1.5)))
            lam_d = _snap(g_soma, 1.0) if in_range else np.ones(size)
            k = g_soma / lam_d  # the part of the soma gain folded into the dendrite's inputs
            theta = float(np.max(p["thr"]))
            q = theta / p["thr"]  # per-neuron threshold normalisation
            row = q * k * p["a"]
            weight = w * row[:, None] / amp
            bias = row * b + q * p["c"] / lam_d
            dname = ir.add(f"dense{n_dense}", Dense(weight=weight), (prev,))
            lmh = LMH(size=size, theta=theta, bias=bias, mu_d=_factor(_snap(p["mu_d"], 0.0)),
                      mu_s=np.zeros((1, 1)), lam_d=_factor(lam_d), lam_s=_factor(_snap(p["lam_s"], 1.0)),
                      **_plain(gmeta.get("lmh_deploy_rules", {}).get(name, {})))
            prev = ir.add(f"lmh{n_lmh}", lmh, (dname,))
            n_dense, n_lmh = n_dense + 1, n_lmh + 1
            pending, amp = None, theta
            if not in_range:
                notes.append(f"lmh{n_lmh - 1}: input gain dt*r/tau outside [0.5, 1.5) folded into "
                             f"the weights (lam_d = 1)")
        elif isinstance(node, nir.Output):
            if pending is None:
                pending = (np.eye(size), np.zeros(size))
                notes.append("the graph ends in a spiking layer: identity readout added "
                             "(logits = firing rates)")
            w, b = pending
            dname = ir.add(f"dense{n_dense}", Dense(weight=w / amp), (prev,))
            ir.add("readout", Readout(bias=b.copy()), (dname,))
            ir.meta["num_classes"] = int(w.shape[0])
        else:
            raise InteropError(f"{where}: node type {kind} cannot be imported; supported: "
                               f"{', '.join(SUPPORTED_IMPORT)}")
    if timesteps is not None:
        ir.meta["timesteps"] = int(timesteps)
    ir.meta["source"] = {"format": "nir", "file": source,
                         "producer": str(gmeta.get("producer", "unknown"))}
    ir.meta["import_notes"] = notes
    try:
        validate(ir)
    except IRError as exc:
        raise InteropError(f"imported graph is invalid: {exc}") from None
    return ir


def read_nir(path: str | Path, **kwargs: Any) -> Graph:
    """Alias of :func:`nir_to_graph` for a file path."""
    return nir_to_graph(path, **kwargs)
