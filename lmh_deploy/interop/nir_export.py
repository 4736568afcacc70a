"""Float IR -> NIR (nir 1.0.x): the exporter, convolutions included.

One IR step is one forward-Euler step of length ``dt`` (snnTorch's convention, and
snnTorch's default dt = 1e-4, so its ``import_from_nir`` rebuilds the same network):

* ``mu_d = 0``, ``lam_s < 1``:  ``LIF(tau = dt/(1-lam_s), r = lam_d*tau/dt, v_leak = 0)``;
* ``mu_d = 0``, ``lam_s = 1``:  ``IF(r = lam_d/dt)``;
* ``0 < mu_d``, ``lam_s < 1``:  ``CubaLIF(tau_syn = dt/(1-mu_d), w_in = tau_syn/dt,
  tau_mem = dt/(1-lam_s), r = lam_d*tau_mem/dt)`` (the dendrite is the synaptic current);
* ``Dense`` -> ``Affine`` (after a map with a ``Flatten`` before it, its dims counted from
  the end so that importers flatten a batch per sample), ``Conv2d`` -> ``Conv2d``,
  ``AvgPool`` -> a ``Conv2d`` of ``1/(kh kw)`` per channel (the pooling node that norse,
  snnTorch and sinabs all import); weights are multiplied by the presynaptic spike
  amplitude ``theta_pre`` (LM-H spikes carry theta, NIR spikes are 1); a neuron's bias goes
  into the bias of the synapse before it (per channel for a convolution).

NIR neurons fire at ``v > v_threshold``, reset to ``v_reset`` and start at 0. A layer with
those rules exports exactly; a layer with other rules (LM-H's subtractive reset, ``>=``,
``v_s = theta/2``) is written with its rules in the node's ``lmh_rules`` metadata (read back
by lmh-deploy) and the export reports how far a plain NIR backend's run is from it.

A general LM-H layer (``mu_s != 0``, ``mu_d < 0``, ``lam_s > 1``, per-step factors: NIR has
no neuron for them) is written the same way: the NIR node holds its nearest LIF (dendrite
memory dropped, time rows averaged, ``lam_s`` clamped to 1), its exact factors go into the
node's ``lmh_factors`` metadata (lmh-deploy reads the exact layer back), and the export
measures how far the LIF a plain NIR backend runs is from the layer
(``metadata["lmh_deploy_error"]``). ``metadata["dt"]`` records the time step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import nir
import numpy as np

from lmh_deploy.files import atomic_path
from lmh_deploy.frontends.nir import ORDER_NODES_KEY
from lmh_deploy.interop import InteropError, leaky_readout_refusal
from lmh_deploy.ir import (
    LMH,
    AvgPool,
    Conv2d,
    Dense,
    Graph,
    Input,
    IRError,
    Readout,
    validate,
)

#: |factor - exact value| below this counts as exact (the 12-bit factor quantum is 2.4e-4).
FACTOR_TOL = 1e-9
#: The LM-H factors a layer the NIR node only approximates keeps in ``lmh_factors`` metadata.
FACTOR_NAMES = ("mu_d", "mu_s", "lam_d", "lam_s")
#: Number of random samples used to measure an approximate export when no inputs are given.
DEFAULT_MEASURE_SAMPLES = 64
#: snnTorch's export_to_nir / import_from_nir step.
DEFAULT_DT = 1e-4
NIR_RULES = {
    "reset": "set",
    "reset_value": 0.0,
    "threshold_test": ">",
    "reset_timing": "same-step",
    "v_d_init": 0.0,
    "v_s_init": 0.0,
}


def spike_disagreement(a, b) -> dict[str, Any]:
    """Fraction of (step, sample, neuron) spike entries that differ, overall and per layer."""
    per_layer = {name: float(np.mean(a.spikes[name] != b.spikes[name])) for name in a.spikes}
    total = sum(int(np.sum(a.spikes[n] != b.spikes[n])) for n in a.spikes)
    count = sum(a.spikes[n].size for n in a.spikes)
    return {
        "spike_disagreement": total / max(count, 1),
        "per_layer": per_layer,
        "prediction_agreement": float(np.mean(a.predictions == b.predictions)),
    }


def nir_semantics(graph: Graph) -> Graph:
    """``graph`` with every layer's rules replaced by what a plain NIR backend does."""
    out = graph.copy()
    for name in out.of_kind("lmh"):
        out.replace(
            name,
            **{k: v for k, v in NIR_RULES.items() if k != "reset_value" or out.node(name).reset != "set"},
        )
    return out


def measure_approximation(
    graph: Graph, approx: Graph, x: np.ndarray, timesteps: int | None = None
) -> dict[str, Any]:
    """How far ``approx`` (an exportable graph) is from ``graph`` on inputs ``x``.

    ``lmh_semantics``: both with the graph's own rules (the factor approximation alone);
    ``nir_backend_semantics``: ``approx`` run as a plain NIR backend runs the file
    (reset to ``v_reset``, ``v > theta``, states from 0).
    """
    from lmh_deploy.backends.float.ir import simulate_float

    steps = int(timesteps if timesteps is not None else graph.meta.get("timesteps", 1))
    x = np.asarray(x, dtype=np.float64).reshape((len(x), *graph.node("input").shape))
    ref = simulate_float(graph, x, steps)
    same = simulate_float(approx, x, steps)
    nir_like = simulate_float(nir_semantics(approx), x, steps)
    return {
        "samples": len(x),
        "timesteps": steps,
        "lmh_semantics": spike_disagreement(ref, same),
        "nir_backend_semantics": spike_disagreement(ref, nir_like),
    }


# =============================================================================== LIF plans
class Problem(NamedTuple):
    """One rule a layer breaks: ``rule`` (``mu_s != 0``), the layer, its value, and why the
    format cannot hold it; a refusal names each rule once with all the layers that break it."""

    rule: str
    layer: str
    value: str
    reason: str


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
    problems: list[Problem] = field(default_factory=list)
    approximations: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
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


def plan_layer(name: str, node: LMH) -> NeuronPlan:
    """Check one LM-H layer against NIR's LIF family and plan its mapping.

    Exact when ``mu_s = 0``, factors constant in time, ``0 <= mu_d < 0.5`` with
    ``lam_s <= 1`` (``mu_d > 0`` needs ``lam_s < 1``). ``lam_d`` is always exact (an input
    gain). Otherwise the plan drops the dendrite memory (``mu_d = mu_s = 0``), averages time
    rows and clamps ``lam_s`` to 1, recording each change.
    """
    n = node.size
    problems: list[Problem] = []
    rows = node.mu_d.shape[0]
    for fname in ("mu_d", "mu_s", "lam_d", "lam_s"):
        arr = getattr(node, fname)
        if rows > 1 and float(np.max(np.ptp(arr, axis=0))) > FACTOR_TOL:
            problems.append(
                Problem(
                    "radical (per-step) factors",
                    name,
                    f"{fname} {_describe(arr)} over {rows} steps",
                    "NIR neurons have constant parameters",
                )
            )
            break

    def per_neuron(fname: str) -> np.ndarray:
        return np.broadcast_to(getattr(node, fname).mean(axis=0), (n,)).astype(np.float64)

    mu_d, mu_s, lam_d, lam_s = (per_neuron(f) for f in ("mu_d", "mu_s", "lam_d", "lam_s"))
    if np.any(np.abs(mu_s) > FACTOR_TOL):
        problems.append(
            Problem("mu_s != 0", name, f"{_worst(mu_s, 0):.4g}", "NIR has no soma->dendrite feedback")
        )
    growing = bool(np.any(lam_s > 1 + FACTOR_TOL))
    if np.any(mu_d < -FACTOR_TOL):
        problems.append(
            Problem(
                "mu_d < 0",
                name,
                f"{_worst(mu_d, 0):.4g}",
                "a CubaLIF would need tau_syn = dt/(1 - mu_d) < dt",
            )
        )
    elif np.any(mu_d > FACTOR_TOL) and np.any(lam_s >= 1 - FACTOR_TOL) and not growing:
        problems.append(
            Problem(
                "mu_d > 0 with lam_s >= 1",
                name,
                f"mu_d {_worst(mu_d, 0):.4g}, lam_s {_worst(lam_s, 0):.4g}",
                "NIR has no current-based IF neuron (CubaLIF needs lam_s < 1)",
            )
        )
    if growing:
        problems.append(
            Problem(
                "lam_s > 1",
                name,
                f"{_worst(lam_s, 1):.4g}",
                "a growing soma, which NIR neurons cannot express",
            )
        )
    elif np.any(lam_s >= 1 - FACTOR_TOL) and np.any(lam_s < 1 - FACTOR_TOL):
        problems.append(
            Problem("lam_s both 1 and < 1", name, "", "NIR has one node type (IF or LIF) per layer")
        )
    plan = NeuronPlan(
        name=name, mu_d=_snap(mu_d, 0.0), lam_d=_snap(lam_d, 1.0), lam_s=_snap(lam_s, 1.0), problems=problems
    )
    if problems:
        if rows > 1:
            plan.approximations.append(f"time rows of the {rows} radical factor sets averaged")
        if np.any(np.abs(mu_d) > FACTOR_TOL):
            plan.approximations.append(f"dendrite memory dropped: mu_d {_describe(mu_d)} -> 0")
        if np.any(np.abs(mu_s) > FACTOR_TOL):
            plan.approximations.append(f"soma->dendrite feedback dropped: mu_s {_describe(mu_s)} -> 0")
        plan.mu_d = np.zeros(n)
        new_lam_s = np.minimum(plan.lam_s, 1.0)
        if np.any(new_lam_s >= 1.0) and np.any(new_lam_s < 1.0):
            new_lam_s = np.minimum(new_lam_s, 1.0 - 2.0**-12)
        if np.any(np.abs(new_lam_s - plan.lam_s) > FACTOR_TOL):
            plan.approximations.append(f"lam_s {_describe(plan.lam_s)} -> {_describe(new_lam_s)}")
        plan.lam_s = new_lam_s
    return plan


def check_exportable(graph: Graph) -> None:
    """Raise :class:`InteropError` unless every synapse is one NIR writes, naming the first
    culprit."""
    for name, node in graph.items():
        if node.kind == "maxpool":
            raise InteropError(
                f"{name}: NIR has no max pooling (its pools sum or average); use AvgPool2d, or "
                f"put the MaxPool2d after the neuron"
            )
        if node.kind not in ("input", "lmh", "readout", "dense", "conv2d", "avgpool"):
            raise InteropError(f"{name}: {node.kind} layers are not supported by the NIR export")


def plan_graph(graph: Graph) -> dict[str, NeuronPlan]:
    """Plans for every LM-H layer (:func:`plan_layer`)."""
    try:
        validate(graph)
    except IRError as exc:
        raise InteropError(f"invalid graph: {exc}") from None
    check_exportable(graph)
    return {name: plan_layer(name, node) for name, node in graph.items() if isinstance(node, LMH)}


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
        out.replace(
            name,
            mu_d=_factor(plan.mu_d),
            lam_d=_factor(plan.lam_d),
            lam_s=_factor(plan.lam_s),
            mu_s=np.zeros((1, 1)),
        )
    return out


# =============================================================================== export
def _neuron_node(
    plan: NeuronPlan, node: LMH, dt: float, shape: tuple[int, ...], meta: dict[str, Any]
) -> nir.NIRNode:
    """The NIR neuron of one layer; arrays shaped like the layer's output (as snnTorch does)."""

    def full(values) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=np.float64), (node.size,)).reshape(shape)

    thr = full(node.theta)
    v_reset = full(node.reset_value if getattr(node, "reset", "subtract") == "set" else 0.0)
    zeros = full(0.0)
    if np.all(plan.mu_d == 0):
        r = input_gain(plan, dt)
        if np.all(plan.lam_s == 1):
            return nir.IF(r=full(plan.lam_d / dt / r), v_threshold=thr, v_reset=v_reset, metadata=meta)
        tau = dt / (1.0 - plan.lam_s)
        return nir.LIF(
            tau=full(tau),
            r=full(plan.lam_d * tau / dt / r),
            v_leak=zeros,
            v_threshold=thr,
            v_reset=v_reset,
            metadata=meta,
        )
    tau_syn, tau_mem = dt / (1.0 - plan.mu_d), dt / (1.0 - plan.lam_s)
    return nir.CubaLIF(
        tau_syn=full(tau_syn),
        tau_mem=full(tau_mem),
        r=full(plan.lam_d * tau_mem / dt),
        v_leak=zeros,
        v_threshold=thr,
        v_reset=v_reset,
        w_in=full(tau_syn / dt),
        metadata=meta,
    )


def input_gain(plan: NeuronPlan, dt: float) -> float:
    """The gain an `IF`/`LIF` layer's synapses carry so that its NIR ``r`` is 1: ``lam_d tau /
    dt`` (``lam_d / dt`` for IF) when it is one value per layer, else 1 (``r`` keeps it).

    NIR's LIF ``v += dt/tau (v_leak - v + r I)`` leaves the input gain to ``r``; norse's
    ``from_nir`` ignores ``r`` (it assumes 1), and snnTorch's ``import_from_nir`` accepts any
    uniform ``r dt / tau`` (``hack_w_scale``: it divides the threshold instead). With ``r = 1``
    and the gain in the weights both importers run the file as NIR defines it."""
    if np.any(plan.mu_d != 0) or not plan.exact:
        # CubaLIF: both importers apply w_in and r; an approximated layer carries its exact
        # factors (lmh_factors), which lmh-deploy's import reads with the weights as they are
        return 1.0
    if np.all(plan.lam_s == 1):
        gains = np.ravel(plan.lam_d) / dt
    else:
        gains = np.ravel(plan.lam_d / (1.0 - plan.lam_s))  # lam_d tau / dt
    return float(gains[0]) if np.allclose(gains, gains[0], rtol=1e-12, atol=0) else 1.0


def _rules(node: LMH) -> dict[str, Any]:
    return {k: getattr(node, k) for k in NIR_RULES if hasattr(node, k)}


def _is_nir_native(node: LMH) -> bool:
    rules = _rules(node)
    return bool(rules) and all(np.all(rules[k] == v) for k, v in NIR_RULES.items() if k != "reset_value")


def average_pool_as_conv(pool: AvgPool) -> Conv2d:
    """An average pool as the convolution it is: kernel ``1/(kh kw)`` from each channel to
    itself, zero across channels, no bias.

    Written so because it is the one pooling node every NIR importer here maps: norse's
    ``from_nir`` has no ``AvgPool2d`` (only ``SumPool2d``, as ``LPPool2d``), snnTorch's
    ``import_from_nir`` has no ``SumPool2d``, sinabs's ``from_nir`` neither ``AvgPool2d``;
    all three map ``Conv2d``. A dense (not grouped) kernel, since nir up to 1.0.4 types a
    ``Conv2d``'s input with ``weight.shape[1]`` channels, which a depthwise kernel breaks."""
    c = pool.input_shape[0]
    kernel = np.zeros((c, c, *pool.kernel))
    kernel[np.arange(c), np.arange(c)] = 1.0 / float(np.prod(pool.kernel))
    return Conv2d(weight=kernel, input_shape=pool.input_shape, stride=pool.stride)


def batch_safe_flatten(shape: tuple[int, ...]) -> nir.Flatten:
    """A NIR ``Flatten`` of one sample of ``shape`` into a vector, with negative dims.

    NIR's ``start_dim``/``end_dim`` count a sample's dimensions, but snnTorch's
    ``import_from_nir`` and norse's ``from_nir`` build ``torch.nn.Flatten(start_dim,
    end_dim)`` from them as written and call it on a batch: ``start_dim = 0`` (what earlier
    exports and snnTorch's own ``export_to_nir`` write) flattens the batch into one row.
    Counted from the end, ``-len(shape) .. -1`` names the same dimensions of one sample and of
    a batch (sinabs's importer keeps negative dims as they are), and nir's
    ``calc_flatten_output`` (1.0.4 through 1.0.8) types it as ``[prod(shape)]``."""
    return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=-len(shape), end_dim=-1)


def order_node(shape: tuple[int, ...], to_shape: tuple[int, ...]) -> nir.NIRNode | None:
    """An all-zero NIR node from a signal of ``shape`` to one of ``to_shape`` (an Affine for
    vectors; for maps a stride-1 Conv2d, zero-padded up to ``to_shape``); None where no such
    node fits (a map into a vector or the reverse, a smaller map)."""
    if len(shape) == len(to_shape) == 1:
        return nir.Affine(weight=np.zeros((to_shape[0], shape[0])), bias=np.zeros(to_shape[0]))
    if len(shape) != 3 or len(to_shape) != 3 or any(a < b for a, b in zip(to_shape[1:], shape[1:])):
        return None
    pad = tuple((big - small + 1) // 2 for big, small in zip(to_shape[1:], shape[1:]))
    kernel = tuple(small + 2 * p + 1 - big for small, p, big in zip(shape[1:], pad, to_shape[1:]))
    return nir.Conv2d(
        input_shape=shape[1:],
        weight=np.zeros((to_shape[0], shape[0], *kernel)),
        stride=1,
        padding=pad,
        dilation=1,
        groups=1,
        bias=np.zeros(to_shape[0]),
    )


def depth_first_order_runs(nir_graph: nir.NIRGraph) -> bool:
    """Whether nirtorch's legacy ``GraphExecutor`` (``nirtorch.load``, which norse 1.1.0's
    ``from_nir`` calls) runs ``nir_graph`` as written: its order, depth-first preorder from
    the Input following each node's edges in the order they are listed, must put every node
    after all its inputs, and end at the Output (whose value it returns)."""
    children: dict[str, list[str]] = {}
    parents: dict[str, set[str]] = {}
    for a, b in nir_graph.edges:
        children.setdefault(a, []).append(b)
        parents.setdefault(b, set()).add(a)
    start = next(k for k, v in nir_graph.nodes.items() if isinstance(v, nir.Input))
    order: list[str] = []
    stack = [start]
    while stack:  # iterative preorder with the same child order as nirtorch's recursion
        node = stack.pop()
        if node in order:
            continue
        order.append(node)
        stack.extend(reversed([c for c in children.get(node, []) if c not in order]))
    seen: set[str] = set()
    for node in order:
        if not parents.get(node, set()) <= seen:
            return False
        seen.add(node)
    return isinstance(nir_graph.nodes[order[-1]], nir.Output)


class _Writer:
    """Emits NIR nodes for an exportable IR graph (see :func:`graph_to_nir`)."""

    def __init__(self, graph: Graph, original: Graph, plans: dict[str, NeuronPlan], dt: float) -> None:
        self.g, self.original, self.plans, self.dt = graph, original, plans, dt
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.tail = "input"  # NIR node carrying the current signal
        self.shape: tuple[int, ...] = ()
        self.amp = 1.0  # IR value of one NIR unit on the current signal
        #: per written IR neuron (and the input): its NIR node, output shape and amplitude
        self.sources: dict[str, tuple[str, tuple[int, ...], float]] = {}
        self.order_nodes: list[str] = []  #: see :meth:`chain_branches`

    def emit(self, name: str, node: nir.NIRNode, inputs: tuple[str, ...] | None = None) -> None:
        """Add ``node``, fed by ``inputs`` (NIR sums converging edges), by default the tail."""
        self.nodes[name] = node
        self.edges.extend((src, name) for src in (inputs or (self.tail,)))
        self.tail = name

    def synapse(self, name: str, node: Any, bias: np.ndarray | None, last: bool, gain: float = 1.0) -> None:
        """One IR synapse; ``bias`` (over its output) goes into it when it is ``last``, and
        so does ``gain`` (weights and bias times it: the neuron's input gain, see
        :func:`input_gain`)."""
        out_shape = node.output_shape if isinstance(node, (Conv2d, AvgPool)) else (node.output_size(),)
        gain = gain if last else 1.0
        if isinstance(node, AvgPool):
            node = average_pool_as_conv(node)
        b = np.zeros(out_shape) if bias is None or not last else np.asarray(bias).reshape(out_shape) * gain
        if isinstance(node, Dense):
            if len(self.shape) > 1:
                self.emit(f"{name}_flatten", batch_safe_flatten(self.shape))
            self.emit(name, nir.Affine(weight=node.weight * (self.amp * gain), bias=b.reshape(-1).copy()))
        else:
            per_channel = b.reshape(out_shape[0], -1)
            if not np.allclose(per_channel, per_channel[:, :1], rtol=1e-9, atol=1e-12):
                raise InteropError(
                    f"{name}: the neuron bias after this convolution varies "
                    f"within a channel (a pushed bias meeting zero padding); "
                    f"NIR Conv2d biases are per channel"
                )
            self.emit(
                name,
                nir.Conv2d(
                    input_shape=tuple(node.input_shape[1:]),
                    weight=node.weight * (self.amp * gain),
                    stride=node.stride,
                    padding=node.padding,
                    dilation=1,
                    groups=1,
                    bias=per_channel[:, 0].copy(),
                ),
            )
        self.shape, self.amp = out_shape, 1.0

    def chain_from(self, last: str) -> tuple[str, list[str]]:
        """The neuron (or input) a synapse chain starts at, and its synapses up to ``last``."""
        chain, cur = [], last
        while self.g.node(cur).kind not in ("input", "lmh"):
            chain.append(cur)
            cur = self.g.inputs_of(cur)[0]
        return cur, chain[::-1]

    def chain_branches(
        self, name: str, branches: list[tuple[str, str, str]], end_shape: tuple[int, ...]
    ) -> None:
        """Make the branches ``(source, first node, end node)`` of a sum a chain of ancestors,
        so that a depth-first executor runs the sum after all of them.

        nirtorch's legacy ``GraphExecutor`` (``nirtorch.load``, which norse 1.1.0's
        ``from_nir`` calls) runs nodes in depth-first preorder from the Input: a sum (a neuron
        with several input edges) runs as soon as the first of its branches is done, reading
        the others from the previous step, and the value returned is the last node run (in a
        ResNet a shortcut convolution). Preorder puts every node after its inputs only if the
        inputs of each sum lie on one path. So, branches taken from the earliest source on,
        an all-zero node (:func:`order_node`) leads from each branch's end into the node that
        starts the way from that branch's source to the next branch, and that source's edge
        into its own branch is listed first. The zero node adds nothing (every importer
        computes the same function; lmh-deploy's import drops it). Where no such node fits,
        the graph is left as it is (:func:`depth_first_order_runs` says so)."""
        rank = {n: i for i, n in enumerate(self.g.order())}
        branches = sorted(branches, key=lambda b: rank.get(b[0], -1))
        links = []
        for (source, first, end), (_, next_first, _) in zip(branches, branches[1:]):
            target = next(
                (c for c in self._children(source) if c != first and self._reaches(c, next_first)), None
            )
            zero = order_node(end_shape, self.sources[source][1])
            if target is None or zero is None:
                return  # all links or none
            links.append((source, first, end, target, zero))
        for j, (source, first, end, target, zero) in enumerate(links):
            self.nodes[f"{name}_order{j}"] = zero
            self.order_nodes.append(f"{name}_order{j}")
            self.edges += [(end, f"{name}_order{j}"), (f"{name}_order{j}", target)]
            own, other = self.edges.index((source, first)), self.edges.index((source, target))
            if own > other:  # the branch's own edge first: preorder takes it before the target
                self.edges.insert(other, self.edges.pop(own))

    def _children(self, node: str) -> list[str]:
        return [b for a, b in self.edges if a == node]

    def _reaches(self, node: str, goal: str) -> bool:
        todo, seen = [node], set()
        while todo:
            cur = todo.pop()
            if cur == goal:
                return True
            if cur not in seen:
                seen.add(cur)
                todo += self._children(cur)
        return False

    def layer(self, name: str) -> None:
        """One neuron layer (or the readout) and the synaptic chains into it: one for a
        feed-forward layer, one per branch of a residual sum (NIR sums converging edges;
        the layer's bias rides on the first branch)."""
        node = self.g.node(name)
        gain = 1.0 if isinstance(node, Readout) else input_gain(self.plans[name], self.dt)
        ends, shapes, branches = [], [], []
        for branch, last in enumerate(self.g.inputs_of(name)):
            source, chain = self.chain_from(last)
            self.tail, self.shape, self.amp = self.sources[source]
            before = len(self.nodes)
            for i, syn in enumerate(chain):
                bias = node.bias if branch == 0 else None
                self.synapse(syn, self.g.node(syn), bias, last=i == len(chain) - 1, gain=gain)
            ends.append(self.tail)
            shapes.append(self.shape)
            if chain:
                branches.append((self.sources[source][0], list(self.nodes)[before], self.tail))
        if len(set(shapes)) > 1:
            raise InteropError(f"{name}: its branches end in different shapes {shapes}")
        if len(branches) > 1:
            self.chain_branches(name, branches, shapes[0])
        if isinstance(node, Readout):
            if node.leaky.size:
                raise InteropError(leaky_readout_refusal(name, "NIR"))
            self.emit(
                "output", nir.Output(output_type={"output": np.array([node.output_size()])}), tuple(ends)
            )
            return
        plan = self.plans[name]
        meta: dict[str, Any] = {"lmh_theta": float(node.theta), "lmh_exact": int(plan.exact)}
        if not _is_nir_native(node):
            meta["lmh_rules"] = {  # a per-neuron v_d_init as its array
                k: (float(v) if isinstance(v, (int, float, np.floating)) else v)
                for k, v in _rules(node).items()
            }
            if "v_s_init" not in meta["lmh_rules"]:
                meta["lmh_rules"].update(
                    {"reset": "subtract", "threshold_test": ">=", "v_s_init": float(node.theta) / 2}
                )
        if plan.approximations:
            meta["lmh_approximation"] = "; ".join(plan.approximations)
        if not plan.exact:  # the layer itself, for lmh-deploy's import
            own = self.original.node(name)
            meta["lmh_factors"] = {
                f: np.asarray(getattr(own, f), dtype=np.float64).copy() for f in FACTOR_NAMES
            }
        self.emit(name, _neuron_node(plan, node, self.dt, self.shape, meta), tuple(ends))
        self.amp = float(node.theta)
        self.sources[name] = (name, self.shape, self.amp)


def graph_to_nir(graph: Graph, *, dt: float = DEFAULT_DT, inputs: np.ndarray | None = None) -> nir.NIRGraph:
    """Export a float IR graph to a :class:`nir.NIRGraph` (see the module docstring).

    Layers NIR cannot hold become LIF neurons with decay ``lam_s`` and input gain ``lam_d``
    (dendrite memory dropped) carrying their exact factors in ``lmh_factors`` metadata;
    how far a plain NIR backend's run is from the graph (:func:`measure_approximation` on
    ``inputs``, or on :data:`DEFAULT_MEASURE_SAMPLES` seeded uniform samples) is stored in
    ``metadata["lmh_deploy_error"]``. Layer kinds NIR lacks are refused naming the layer.
    """
    if not (dt > 0 and math.isfinite(dt)):
        raise InteropError(f"dt must be finite and > 0, got {dt}")
    for name in graph.of_kind("lmh"):
        if getattr(graph.node(name), "v_s_min", None) is not None:
            raise InteropError(f"{name}: a soma floor (v_s_min, sinabs's min_v_mem) has no NIR field")
        k = getattr(graph.node(name), "max_spikes", 1)
        if k > 1:
            raise InteropError(
                f"{name}: graded spikes (up to {k} a step, max_spikes) have no NIR node (NIR "
                f"neurons send one spike a step); deploy the source module instead"
            )
    plans = plan_graph(graph)
    approx = lif_approximation(graph, plans)
    inp = graph.node("input")
    assert isinstance(inp, Input)
    writer = _Writer(approx, graph, plans, dt)
    shape = tuple(inp.shape)
    if all(approx.node(n).kind == "dense" for n in approx.nx_graph.successors("input")):
        # a flat input type: no Flatten node, which importers apply to batched tensors with
        # NIR's per-sample start_dim (snnTorch's import_from_nir flattens the batch too)
        shape = (int(np.prod(shape)),)
    writer.nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
    writer.shape = shape
    writer.sources["input"] = ("input", shape, 1.0)
    for name in approx.order():
        if approx.node(name).kind in ("lmh", "readout"):
            writer.layer(name)
    exact = all(p.exact for p in plans.values())
    native = all(_is_nir_native(graph.node(n)) for n in graph.of_kind("lmh"))
    from lmh_deploy import __version__

    meta: dict[str, Any] = {
        "producer": f"lmh-deploy {__version__}",
        "dt": float(dt),
        "timesteps": int(graph.meta.get("timesteps", 1)),
        "x_max": float(inp.x_max),
        "input_signed": int(inp.signed),
        "input_bits": int(inp.bits),  # the graded input messages' width (lmh-deploy's deployment)
        "exact": int(exact),
        "nir_native_rules": int(native),
        "discretisation": "forward Euler, one step = dt: lam = 1 - dt/tau, r = lam_d*tau/dt "
        "(snnTorch convention); CubaLIF: mu_d = 1 - dt/tau_syn, w_in = tau_syn/dt",
        "readout": "logits = mean over the timesteps of the output (Affine incl. bias)",
    }
    if writer.order_nodes:
        meta[ORDER_NODES_KEY] = dict.fromkeys(writer.order_nodes, 1)
    if not exact or inputs is not None or not native:
        x = inputs
        if x is None:
            rng = np.random.default_rng(0)
            low = -inp.x_max if inp.signed else 0.0
            x = rng.uniform(low, inp.x_max, (DEFAULT_MEASURE_SAMPLES, *inp.shape))
            low_name = "-x_max" if inp.signed else "0"
            meta["error_inputs"] = f"{DEFAULT_MEASURE_SAMPLES} seeded uniform samples in [{low_name}, x_max]"
        else:
            meta["error_inputs"] = f"{np.asarray(x).shape[0]} given samples"
        meta["lmh_deploy_error"] = _nir_safe(measure_approximation(graph, approx, x))
    return nir.NIRGraph(nodes=writer.nodes, edges=writer.edges, metadata=meta)


def _nir_safe(value: Any) -> Any:
    """Make a report dict writable by ``nir.write`` (nested dicts of str / float / int)."""
    if isinstance(value, dict):
        return {str(k): _nir_safe(v) for k, v in value.items()}
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return value


def write_nir(
    graph: Graph,
    path: str | Path,
    *,
    dt: float = DEFAULT_DT,
    inputs: np.ndarray | None = None,
) -> dict[str, Any]:
    """:func:`graph_to_nir` then ``nir.write``; returns a summary (node types, exactness, error)."""
    nir_graph = graph_to_nir(graph, dt=dt, inputs=inputs)
    path = Path(path)
    with atomic_path(path) as tmp:  # readers never see half a file
        nir.write(tmp, nir_graph)
        nonzero_resets = drop_zero_v_reset(tmp)
    layers = {}
    for name, node in nir_graph.nodes.items():
        entry: dict[str, Any] = {"type": type(node).__name__}
        if "lmh_exact" in node.metadata:
            entry["exact"] = bool(node.metadata["lmh_exact"])
            entry["approximation"] = node.metadata.get("lmh_approximation", "")
        layers[name] = entry
    order_nodes = set(nir_graph.metadata.get(ORDER_NODES_KEY) or {})
    inputs_per_node: dict[str, int] = {}
    for src, dst in nir_graph.edges:
        if src not in order_nodes:
            inputs_per_node[dst] = inputs_per_node.get(dst, 0) + 1
    return {
        "path": str(path),
        "dt": dt,
        # neurons summing branches (a residual net), and whether a depth-first executor runs it
        "sums": sorted(n for n, k in inputs_per_node.items() if k > 1),
        "depth_first_order_runs": depth_first_order_runs(nir_graph),
        "exact": bool(nir_graph.metadata["exact"]),
        "nir_native_rules": bool(nir_graph.metadata["nir_native_rules"]),
        "nodes": layers,
        "error": nir_graph.metadata.get("lmh_deploy_error"),
        # nir 1.0.4 (sinabs's and rockpool's pin) has no v_reset and refuses a file with one
        "nir_versions": ">= 1.0.5 (v_reset != 0: " + ", ".join(nonzero_resets) + ")"
        if nonzero_resets
        else ">= 1.0.4",
    }


def residual_nir_note(sums: int, depth_first_order_runs: bool) -> str:
    """The one line ``export`` prints for a graph with ``sums`` residual sums: which
    importers run it batched (measured: tests/test_foreign_snntorch.py,
    tests/test_foreign_norse.py, tests/test_nir.py)."""
    if depth_first_order_runs:
        return (
            f"{sums} residual sums (converging NIR edges): run batched by snnTorch's import_from_nir, "
            f"norse's from_nir and lmh-deploy; each shortcut leads into the next branch through an "
            f"all-zero node (metadata {ORDER_NODES_KEY}) so that norse's depth-first executor "
            f"(nirtorch.load) runs every sum after its branches"
        )
    return (
        f"{sums} residual sums (converging NIR edges): run batched by snnTorch's import_from_nir and "
        f"lmh-deploy; NOT by norse 1.1.0's from_nir (nirtorch.load's depth-first order runs a sum "
        f"before one of its branches here); use nirtorch.nir_to_torch instead"
    )


def drop_zero_v_reset(path: str | Path) -> list[str]:
    """Delete every all-zero ``v_reset`` dataset from the NIR file at ``path``; return the
    nodes whose ``v_reset`` is not zero (kept).

    nir 1.0.5 added ``v_reset`` to ``LIF``/``IF``/``CubaLIF`` and reads a node without it as
    ``v_reset = 0``; nir 1.0.4 (still pinned by sinabs 3.1.3 and rockpool 3.1.0) builds the
    node from every field in the file and refuses one it does not know. Without a zero
    ``v_reset`` the file reads the same in both."""
    import h5py

    kept: list[str] = []
    with h5py.File(path, "r+") as f:

        def walk(group: h5py.Group, where: str) -> None:
            for key, item in list(group.items()):
                if isinstance(item, h5py.Group):
                    if key != "metadata":
                        walk(item, f"{where}/{key}" if where else key)
                elif key == "v_reset":
                    if np.any(item[()] != 0):
                        kept.append(where)
                    else:
                        del group[key]

        walk(f["node"]["nodes"], "")
    return kept
