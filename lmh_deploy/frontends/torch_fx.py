"""Any PyTorch module -> float graph IR, by torch.fx tracing (neurons are leaf modules).

The module is the user's own network, written the way other tools write them: its
``forward(x)`` computes ONE time step on a (B, *input_shape) batch, and its spiking neurons
keep their state between calls (the paper's code, snnTorch ``init_hidden=True``); the
deployed network presents the same input at every step and its logits are the mean of the
output over the steps. Spiking neurons are recognised by the adapters of
:mod:`lmh_deploy.frontends.neurons`; the synaptic layers are those of our own checkpoints
(:mod:`lmh_deploy.frontends.pytorch` maps them, BN folded, biases pushed to the neurons):
Linear, Conv2d, BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten / view / reshape,
Dropout, Identity, and residual sums ``neuron(branch + shortcut)``; the functional pools
``F.max_pool2d`` / ``F.avg_pool2d`` / ``F.adaptive_avg_pool2d`` as the module of the same
arguments (snnTorch tutorial 6); MaxPool2d over spikes (an
exact OR layer, :meth:`_Walker.max_pool`) and over the currents of a convolution before a
neuron (a ``MaxPool`` node); other libraries' subclasses of these layers
(SpikingJelly's ``layer.*``) and SpikingJelly's multi-step form (input repeated over a time
axis, mean over it at the end; ``layer.SeqToANNContainer`` traced as its children, applied at
every step); after the last neuron layer a fixed average over groups of
outputs (the paper's ``VotingLayer``, ``AvgPool1d``) folds into the readout. Networks that
take all steps in one ``(T*N, ...)`` call (the paper's TEBN mode) are traced as their
per-step equivalent (:mod:`.time_batched`). Everything else is refused in one line naming the
module path and type; an ANN still holding its QCFS activations is refused naming the
conversion it needs.
"""

from __future__ import annotations

import copy
import functools
import inspect
import operator
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from lmh_deploy.frontends.neurons import (
    LEAKY_READOUT,
    NeuronError,
    NeuronSpec,
    adapter_for,
    find_adapter,
    registered_names,
    unsupported_neuron,
)
from lmh_deploy.frontends.rockpool import is_rockpool_network, per_step_view
from lmh_deploy.frontends.sinabs import fold_norm_input
from lmh_deploy.frontends.time_batched import per_step_copy, time_batched_steps
from lmh_deploy.frontends.pytorch import Cursor, GraphBuilder
from lmh_deploy.frontends.time_loop import first_step
from lmh_deploy.ir import LMH, Conv2d, Dense, Graph, Input, IRError, Readout, validate

SYNAPSE_MODULES = (
    nn.Linear,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardtanh)
MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)
MAXPOOL_WHY = (
    "only nn.MaxPool2d is deployed: over the spikes of a neuron layer, or over the currents "
    "of a Conv2d (and its BatchNorm2d) straight into a neuron"
)
#: threshold of the integrate-and-fire layer that max-pools spikes: fires on >= 1 input spike
OR_THETA = 0.5
PASS_FUNCTIONS = (F.dropout, torch.nn.functional.dropout)
AVG_POOL_1D = (F.avg_pool1d, torch.avg_pool1d)
#: functional 2-D pools, mapped as the module of the same arguments: (module, argument names)
MAX_POOL_ARGS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
POOL_FUNCTIONS: dict[Any, tuple[type[nn.Module], tuple[str, ...]]] = dict.fromkeys(
    (F.max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d), (nn.MaxPool2d, MAX_POOL_ARGS)
)
POOL_FUNCTIONS[F.avg_pool2d] = (
    nn.AvgPool2d,
    ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
)
POOL_FUNCTIONS[F.adaptive_avg_pool2d] = (nn.AdaptiveAvgPool2d, ("output_size",))
TORCH_DIR = str(Path(torch.__file__).parent)
QCFS_WHY = (
    "a QCFS activation: this is the ANN as trained, before conversion; build the SNN as the "
    "paper's main.py does (replace_QCFS_by_Lneuron(model, use_TEBN, use_SEW, T), or "
    "replace_QCFS_by_Oneuron for online training) and load the SNN's state_dict"
)


def source_line(node: fx.Node) -> str | None:
    """``file.py:line`` of the innermost frame outside torch that made ``node`` (traced with
    ``record_stack_traces``), or None."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', node.meta.get("stack_trace") or "")
    own = [(f, n) for f, n in frames if not f.startswith(TORCH_DIR)]
    return f"{Path(own[-1][0]).name}:{own[-1][1]}" if own else None


def _first(value: Any) -> int:
    """A 1-D pooling size given as ``k`` or ``(k,)``."""
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def is_qcfs(module: nn.Module) -> bool:
    """The paper's QCFS activation (clip-floor-shift, ``up`` threshold, ``t`` levels)."""
    up = module._parameters.get("up") if isinstance(module, nn.Module) else None
    return up is not None and up.numel() == 1 and isinstance(getattr(module, "t", None), int)


RULE_FIELDS = ("reset", "reset_value", "threshold_test", "reset_timing", "v_d_init", "v_s_init")
LMH_DEFAULT_RULES = {
    "reset": "subtract",
    "reset_value": 0.0,
    "threshold_test": ">=",
    "reset_timing": "same-step",
    "v_d_init": 0.0,
}


def pair(value: Any) -> tuple[int, int]:
    """A torch kernel/stride/padding argument (int or pair) as a pair."""
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


class FrontendError(IRError):
    """A module the frontend cannot trace or map (names the module path and type)."""


@dataclass
class Signal:
    """A traced tensor: IR cursor, and ``gain`` (source value = gain * IR value)."""

    cur: Cursor
    gain: float = 1.0
    neuron: bool = False  # produced by a neuron (spikes), not by a synapse


@dataclass
class Sum:
    """``a + b + ...`` of synaptic signals: only a neuron may consume it (residual add)."""

    terms: list[Signal]


@dataclass
class NeuronTuple:
    """A neuron that returns ``(spikes, state...)``; element 0 is the spikes."""

    spikes: Signal
    where: str


@dataclass
class LeakyOut:
    """The voltage of a leaky-integrator cell (norse ``LICell``): only the model output."""

    sig: Signal
    leaky: np.ndarray
    where: str


@dataclass
class LeakyTuple:
    """A leaky-integrator cell's ``(voltage, state)``."""

    out: LeakyOut


class _Batch:
    """``x.size(0)`` / ``x.shape[0]``: the batch dimension in a view/reshape."""


@dataclass
class _Shape:
    shape: tuple[int, ...]


@dataclass
class _Channel:
    """``x.unsqueeze(1)`` of a flat signal: one channel of ``n`` values (before avg_pool1d)."""

    sig: Signal


SPIKINGJELLY_CONTAINERS = "spikingjelly.activation_based.layer.container"


def per_step_container(m: nn.Module) -> bool:
    """SpikingJelly's ``layer.SeqToANNContainer`` (and ``StepModeContainer(stateful=False)`` in
    multi-step mode): plain torch layers run on the (T*B, ...) merge of a multi-step input, i.e.
    the same layers applied at every step, as ``layer.Conv2d`` in multi-step mode is. Traced as
    its children in turn (its ``seq_to_ann_forward`` reshapes cannot be mapped)."""
    mod = sys.modules.get(SPIKINGJELLY_CONTAINERS)
    if mod is None:
        return False
    if type(m) is getattr(mod, "SeqToANNContainer", None):
        return True
    step_mode = getattr(mod, "StepModeContainer", None)
    return type(m) is step_mode and not getattr(m, "stateful", True) and getattr(m, "step_mode", "s") == "m"


#: how to write each SpikingJelly container that loops over time in Python (not traceable)
REWRITE = (
    "SpikingJelly's layer.* and neuron.*Node modules in an "
    "nn.Sequential with functional.set_step_mode(net, 'm') (the same per-step computation; "
    "plain torch layers go in layer.SeqToANNContainer, neurons outside it)"
)
LOOPING_CONTAINERS = {
    "MultiStepContainer": "runs its children one step at a time in a Python loop over T, which "
    "cannot be traced; write its children without it: " + REWRITE,
    "TLastMultiStepContainer": "loops over a time-last (N, ..., T) input, which cannot be traced; "
    "write the net time-first (input x.unsqueeze(0).repeat(T, ...)), its children without the "
    "container: " + REWRITE,
    "TLastSeqToANNContainer": "runs on a time-last (N, ..., T) input, which is not deployed; write "
    "the net time-first (input x.unsqueeze(0).repeat(T, ...)) with layer.SeqToANNContainer",
}


def looping_container(m: nn.Module) -> str | None:
    """Why a SpikingJelly container that loops over time itself cannot be traced, and what to
    write instead; None for any other module."""
    mod = sys.modules.get(SPIKINGJELLY_CONTAINERS)
    if mod is None:
        return None
    kind = type(m).__name__
    if type(m) is getattr(mod, kind, None) and kind in LOOPING_CONTAINERS:
        return LOOPING_CONTAINERS[kind]
    step_mode = getattr(mod, "StepModeContainer", None)
    if type(m) is step_mode and getattr(m, "step_mode", "s") == "m" and getattr(m, "stateful", False):
        return "(stateful, multi-step) " + LOOPING_CONTAINERS["MultiStepContainer"]
    return None


def check_per_step_containers(module: nn.Module) -> None:
    """A neuron inside a per-step container would run the T*B merged samples as ONE step."""
    for path, m in module.named_modules():
        if not per_step_container(m):
            continue
        for sub, child in m.named_modules():
            if child is not m and (
                find_adapter(child) is not None
                or unsupported_neuron(child) is not None
                or LEAKY_READOUT.matches(child)
            ):
                raise FrontendError(
                    f"{path}.{sub} ({type(child).__name__}): a spiking neuron inside "
                    f"{type(m).__name__} runs on time and batch merged, not step by step; put the "
                    f"neuron after the container (neuron.*Node in multi-step mode)"
                )


class _Refused(FrontendError):
    """A refusal made while tracing (passed on as it is)."""


class _Tracer(fx.Tracer):
    """Neurons (adapters) and torch.nn layers are leaves; remembers where tracing was."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str]] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            find_adapter(m) is not None
            or LEAKY_READOUT.matches(m)
            or unsupported_neuron(m) is not None
            or is_qcfs(m)
            or isinstance(m, (*SYNAPSE_MODULES, *MAXPOOL, nn.LPPool2d))  # also other libraries' subclasses
            or super().is_leaf_module(m, qualname)
        )

    def call_module(self, m, forward, args, kwargs):
        self.stack.append((self.path_of_module(m) or "<root>", type(m).__name__))
        why = looping_container(m)
        if why is not None:
            raise _Refused(f"{self.stack[-1][0]} ({self.stack[-1][1]}): {why}")
        if per_step_container(m):  # its children, in turn, on the per-step signal
            forward = functools.partial(nn.Sequential.forward, m)
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return out


def trace(module: nn.Module) -> fx.GraphModule:
    """torch.fx graph of ``module``; untraceable code is refused naming the innermost module."""
    tracer = _Tracer()
    tracer.record_stack_traces = True  # refusals of functional code name its source line
    # forward(x, state=None) (norse's SequentialState): traced with the state left at None
    params = list(inspect.signature(module.forward).parameters.values())[1:]
    concrete = {p.name: None for p in params if p.default is None}
    try:
        graph = tracer.trace(module, concrete_args=concrete or None)
    except _Refused as exc:
        raise FrontendError(str(exc)) from None
    except Exception as exc:
        for path, m in module.named_modules():  # a known library's neuron that cannot deploy
            why = unsupported_neuron(m)
            if why is not None:
                raise NeuronError(f"{path} ({type(m).__name__}): {why}") from None
        where, kind = tracer.stack[-1] if tracer.stack else ("<root>", type(module).__name__)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FrontendError(f"{where} ({kind}): torch.fx cannot trace it: {first}") from None
    return fx.GraphModule(module, graph)


def _per_neuron(arr: np.ndarray, shape: tuple[int, ...], what: str, where: str) -> np.ndarray:
    """(K, *b) factor values -> (K, 1) or (K, n) over a (C, ...) or (n,) feature map."""
    rows = arr.shape[0]
    flat = arr.reshape(rows, -1)
    n = int(np.prod(shape))
    if flat.shape[1] == n or flat.shape[1] == 1:
        out = flat
    elif flat.shape[1] == shape[0]:  # per channel
        out = np.repeat(flat, n // shape[0], axis=1)
    else:
        raise NeuronError(
            f"{where}: {what} has {flat.shape[1]} values per step; the layer has "
            f"{shape[0]} channels and {n} neurons"
        )
    if out.shape[1] > 1 and np.all(out == out[:, :1]):
        out = out[:, :1]
    return np.ascontiguousarray(out, dtype=np.float64)


def make_lmh(spec: NeuronSpec, shape: tuple[int, ...], bias: np.ndarray, where: str) -> LMH:
    """The LM-H IR node of one neuron layer, with the source's rules (checked)."""
    factors: dict[str, Any] = {
        k: _per_neuron(np.asarray(v, dtype=np.float64), shape, k, where) for k, v in spec.factors.items()
    }
    rows = {a.shape[0] for a in factors.values()}
    if len(rows) > 1:
        raise NeuronError(f"{where}: factors have different numbers of time rows {sorted(rows)}")
    have = {f.name for f in fields(LMH)}
    rules: dict[str, Any] = {k: v for k, v in spec.rules.items() if k in have}
    if np.ndim(rules.get("v_d_init", 0.0)):  # per neuron (or per channel)
        rules["v_d_init"] = _per_neuron(np.asarray(rules["v_d_init"])[None], shape, "v_d_init", where)[0]
    missing = {
        k: v for k, v in spec.rules.items() if k not in have and LMH_DEFAULT_RULES.get(k, spec.theta / 2) != v
    }
    if missing:
        raise NeuronError(
            f"{where}: the neuron's rules {missing} need the IR's neuron-rule fields, which this build lacks"
        )
    node = LMH(
        size=int(np.prod(shape)), theta=float(spec.theta), bias=bias.ravel().copy(), **factors, **rules
    )
    try:
        node.check(where)
    except IRError as exc:
        raise NeuronError(str(exc)) from None
    return node


class _Walker:
    """Walks the fx graph in order, turning each op into IR nodes via the shared exporter."""

    def __init__(self, gm: fx.GraphModule, graph: Graph, input_shape: tuple[int, ...]) -> None:
        self.gm, self.g = gm, graph
        self.ex = GraphBuilder(graph)
        self.input_shape = input_shape
        self.env: dict[str, Any] = {}
        self.source_neurons: dict[str, str] = {}
        #: module path of every MaxPool2d of currents, by its IR node
        self.source_max_pools: dict[str, str] = {}
        self.output_index: int | None = None
        #: T of a multi-step forward that repeats its input over a leading time axis
        self.time_repeat: int | None = None
        #: module path of a leaky-integrator readout cell (norse LICell)
        self.readout_cell: str | None = None

    # ------------------------------------------------------------------ helpers
    def arg(self, a: Any, where: str) -> Any:
        if isinstance(a, fx.Node):
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x, where) for x in a)
        return a

    def signal(self, value: Any, where: str) -> Signal:
        if isinstance(value, Signal):
            return value
        if isinstance(value, NeuronTuple):
            raise FrontendError(
                f"{where}: uses the tuple output of {value.where} as a tensor; "
                f"unpack it (spk, mem = ...) and pass the spikes on"
            )
        if isinstance(value, Sum):
            raise FrontendError(
                f"{where}: a sum of branches (residual add) must go straight into a spiking neuron"
            )
        if isinstance(value, _Channel):
            raise FrontendError(
                f"{where}: x.unsqueeze(1) is supported only before avg_pool1d (a VotingLayer)"
            )
        if isinstance(value, _TimeMean):
            raise FrontendError(f"{where}: a mean over time (x_seq.mean(0)) must be the model output")
        if isinstance(value, (LeakyOut, LeakyTuple)):
            cell = value.where if isinstance(value, LeakyOut) else value.out.where
            raise FrontendError(
                f"{where}: uses the voltage of the leaky integrator {cell}, which can only be the "
                f"model output (the readout)"
            )
        if isinstance(value, _NewAxis):
            raise FrontendError(f"{where}: x.unsqueeze(0) must be followed by .repeat(T, 1, ...)")
        raise FrontendError(f"{where}: expects a tensor, got {type(value).__name__}")

    def identity_synapse(self, sig: Signal, where: str) -> Signal:
        """A neuron's (or the input's) output used directly in a sum: a 1:1 synapse."""
        shape = sig.cur.shape
        node: Conv2d | Dense
        if len(shape) == 3:
            c = shape[0]
            node = Conv2d(weight=np.eye(c).reshape(c, c, 1, 1) * sig.gain, input_shape=shape)
            prefix = "conv"
        else:
            node = Dense(weight=np.eye(int(np.prod(shape))) * sig.gain)
            prefix = "dense"
        return Signal(self.ex.synapse(sig.cur, prefix, node, shape))

    def module_op(self, module: nn.Module, sig: Signal, here: str) -> Signal:
        if isinstance(module, (nn.Linear, nn.Conv2d)) and sig.gain != 1.0:
            module = copy.deepcopy(module)  # the source's spikes carry gain * theta
            with torch.no_grad():
                module.weight.mul_(sig.gain)
            gain = 1.0
        else:
            gain = sig.gain
        try:
            cur = self.ex.layer(module, sig.cur, here)
        except IRError as exc:
            raise FrontendError(str(exc)) from None
        return Signal(cur, gain, sig.neuron and cur.node == sig.cur.node)

    def max_pool(self, module: nn.Module, sig: Signal, path: str, here: str) -> Signal:
        """MaxPool2d over spikes = a logical OR per window: a sum pool of spike counts into
        memoryless integrate-and-fire neurons that fire on >= 1 input spike (exact). Over the
        currents of a convolution it is a ``MaxPool`` node before the neuron (exact)."""
        if not isinstance(module, nn.MaxPool2d):
            raise FrontendError(f"{here}: {MAXPOOL_WHY}")
        if not sig.neuron:  # currents: max(gain * x) = gain * max(x), the gain is > 0
            try:
                cur = self.ex.max_pool(module, sig.cur, here)
            except IRError as exc:
                raise FrontendError(str(exc)) from None
            self.source_max_pools[cur.node] = path
            return Signal(cur, sig.gain)
        if np.any(sig.cur.bias) or self.g.node(sig.cur.node).kind != "lmh":
            raise FrontendError(f"{here}: {MAXPOOL_WHY}")
        if len(sig.cur.shape) != 3:
            raise FrontendError(f"{here}: only nn.MaxPool2d over (C, H, W) spike maps is supported")
        if module.ceil_mode or pair(module.dilation) != (1, 1) or module.return_indices:
            raise FrontendError(
                f"{here}: MaxPool2d with ceil_mode, dilation or return_indices is not supported"
            )
        c = sig.cur.shape[0]
        kh, kw = pair(module.kernel_size)
        kernel = np.zeros((c, c, kh, kw))
        # zero padding is exact: spikes are >= 0, so a padded zero never wins the max
        kernel[np.arange(c), np.arange(c)] = 1.0 / self.g.node(sig.cur.node).theta  # spike counts
        conv = Conv2d(
            weight=kernel,
            input_shape=tuple(sig.cur.shape),
            stride=pair(module.stride or module.kernel_size),
            padding=pair(module.padding),
        )
        cur = self.ex.synapse(sig.cur, "conv", conv, conv.output_shape)
        # an integrate-and-fire neuron, reset to 0: its input is a whole number of spikes,
        # so it fires on >= 1 and is back at exactly 0 after every step (no memory)
        zeros, ones = np.zeros((1, 1)), np.ones((1, 1))
        node = LMH(
            size=int(np.prod(conv.output_shape)),
            theta=OR_THETA,
            mu_d=zeros,
            mu_s=zeros,
            lam_d=ones,
            lam_s=ones,
            bias=np.zeros(int(np.prod(conv.output_shape))),
            reset="set",
            threshold_test=">",
            v_s_init=0.0,
        )
        name = self.ex.add("lmh", node, (cur.node,))
        self.source_neurons[name] = path
        source_spike = sig.gain * self.g.node(sig.cur.node).theta
        return Signal(
            Cursor(name, conv.output_shape, np.zeros(conv.output_shape)), source_spike / OR_THETA, True
        )

    def sum_pool(self, module: nn.LPPool2d, sig: Signal, here: str) -> Signal:
        """``LPPool2d`` with ``p = 1`` (sinabs ``SumPool2d``): a sum over each window, which is
        the window's average times its area (the area goes into the signal's gain)."""
        if float(module.norm_type) != 1.0:
            raise FrontendError(
                f"{here}: LPPool2d with norm_type={module.norm_type} is not supported; only p = 1 "
                f"(a sum pool, sinabs.layers.SumPool2d)"
            )
        kh, kw = pair(module.kernel_size)
        avg = nn.AvgPool2d((kh, kw), stride=module.stride or (kh, kw), ceil_mode=bool(module.ceil_mode))
        out = self.module_op(avg, sig, here)
        return Signal(out.cur, out.gain * kh * kw, out.neuron)

    def neuron(self, module: nn.Module, value: Any, path: str, here: str) -> Any:
        terms = value.terms if isinstance(value, Sum) else [self.signal(value, here)]
        terms = [self.identity_synapse(t, here) if t.neuron or t.cur.node == "input" else t for t in terms]
        shape = terms[0].cur.shape
        if any(t.cur.shape != shape for t in terms):
            raise FrontendError(f"{here}: summed branches have shapes {[t.cur.shape for t in terms]}")
        if any(t.gain != 1.0 for t in terms):
            raise FrontendError(
                f"{here}: a pooled spike signal reaches a neuron without a weight layer in between"
            )
        spec = adapter_for(module, here).spec(module, here)
        bias = sum(t.cur.bias for t in terms) + spec.bias
        node = make_lmh(spec, shape, np.asarray(bias), here)
        name = self.ex.add("lmh", node, tuple(t.cur.node for t in terms))
        self.source_neurons[name] = path
        out = Signal(Cursor(name, shape, np.zeros(shape)), spec.amplitude / spec.theta, True)
        return NeuronTuple(out, here) if spec.tuple_output else out

    @staticmethod
    def where(node: fx.Node, what: str) -> str:
        """``path (Type) at file.py:line: what`` of the forward() that holds ``node``."""
        stack = node.meta.get("nn_module_stack") or {}
        line = source_line(node)
        at = f" at {line}" if line else ""
        if stack:
            path, kind = list(stack.values())[-1]
            kind = getattr(kind, "__name__", str(kind).rsplit(".", 1)[-1].strip("'>"))
            return f"{path} ({kind}){at}: {what}"
        return f"forward() of the root module{at}: {what}"

    # ------------------------------------------------------------------ ops
    def call_module(self, node: fx.Node) -> Any:
        path = str(node.target)
        module = self.gm.get_submodule(path)
        here = f"{path} ({type(module).__name__})"
        args = self.arg(node.args, here)
        if find_adapter(module) is not None:
            return self.neuron(module, args[0], path, here)
        if LEAKY_READOUT.matches(module):
            if self.readout_cell is not None:
                raise FrontendError(f"{here}: a second leaky integrator; only the readout may be one")
            self.readout_cell = path
            leaky = LEAKY_READOUT.leaky(module, here)
            return LeakyTuple(LeakyOut(self.signal(args[0], here), leaky, here))
        why = unsupported_neuron(module)
        if why is not None:
            raise NeuronError(f"{here}: {why}")
        if isinstance(module, MAXPOOL):
            return self.max_pool(module, self.signal(args[0], here), path, here)
        if is_qcfs(module):
            raise FrontendError(f"{here}: {QCFS_WHY}")
        if isinstance(module, nn.LPPool2d):
            return self.sum_pool(module, self.signal(args[0], here), here)
        if isinstance(module, nn.AvgPool1d):
            return self.avg_pool1d(
                args[0], _first(module.kernel_size), _first(module.stride), _first(module.padding), here
            )
        if isinstance(module, ACTIVATIONS):
            raise FrontendError(
                f"{here}: an ANN activation left in the model; swap it for a "
                f"spiking neuron (recognised: {', '.join(registered_names())})"
            )
        if not isinstance(module, SYNAPSE_MODULES):
            raise FrontendError(
                f"{here}: unsupported layer type; supported: Linear, Conv2d, "
                f"BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten, "
                f"Dropout, Identity, residual add, and neurons "
                f"({', '.join(registered_names())})"
            )
        return self.module_op(module, self.signal(args[0], here), here)

    def avg_pool1d(self, value: Any, kernel: int, stride: int | None, padding: int, here: str) -> Any:
        """A fixed average over groups of a flat signal (the paper's VotingLayer): a Linear
        whose rows average ``kernel`` neighbours, folded into the readout like any Linear."""
        channel = isinstance(value, _Channel)
        sig = self.signal(value.sig if channel else value, here)
        stride = int(stride or kernel)
        n = int(np.prod(sig.cur.shape))
        if len(sig.cur.shape) != 1 or padding != 0 or kernel > n:
            raise FrontendError(
                f"{here}: only avg_pool1d over the features of a flat signal, without padding, is "
                f"supported (got shape {sig.cur.shape}, kernel {kernel}, padding {padding})"
            )
        n_out = (n - kernel) // stride + 1
        pool = nn.Linear(n, n_out, bias=False)
        with torch.no_grad():
            pool.weight.zero_()
            for i in range(n_out):
                pool.weight[i, i * stride : i * stride + kernel] = 1.0 / kernel
        out = self.module_op(pool, sig, here)
        return _Channel(out) if channel else out

    def pool_function(self, fn: Any, args: Any, kwargs: dict[str, Any], here: str) -> Signal:
        """``F.max_pool2d`` / ``F.avg_pool2d`` / ``F.adaptive_avg_pool2d`` (snnTorch tutorial 6):
        the module of the same arguments, mapped (and refused) as the module would be."""
        kind, names = POOL_FUNCTIONS[fn]
        given = {**dict(zip(("input", *names), args)), **kwargs}
        if given.get("stride") in ([], ()):  # torch.max_pool2d's default: the kernel size
            given["stride"] = None
        if fn is F.max_pool2d_with_indices:
            given["return_indices"] = True
        sig = self.signal(given.pop("input"), here)
        module = kind(**given)
        if not isinstance(module, nn.MaxPool2d):
            return self.module_op(module, sig, here)
        if sig.neuron:  # its OR layer's spikes would have no module for verify to record
            raise FrontendError(
                f"{here}: a max pool of spikes must be an nn.MaxPool2d module (deployed exactly as "
                f"an OR layer of neurons, whose spikes verify records from the module)"
            )
        return self.max_pool(module, sig, here.rsplit(": ", 1)[0], here)

    def reshape(self, sig: Signal, dims: list[Any], here: str) -> Signal:
        n = int(np.prod(sig.cur.shape))
        if not dims or not (isinstance(dims[0], _Batch) or dims[0] == -1):
            raise FrontendError(
                f"{here}: view/reshape must keep the batch dimension first "
                f"(x.view(x.size(0), -1)), got {dims}"
            )
        rest = list(dims[1:])
        if any(not isinstance(d, int) for d in rest):
            raise FrontendError(f"{here}: view/reshape sizes must be numbers, got {dims}")
        if rest.count(-1) == 1:
            known = int(np.prod([d for d in rest if d != -1]))
            rest[rest.index(-1)] = n // known if known and n % known == 0 else -2
        if not rest or int(np.prod(rest)) != n or min(rest) < 1:
            raise FrontendError(f"{here}: cannot view {sig.cur.shape} per sample as {dims}")
        if tuple(rest) != (n,):
            raise FrontendError(f"{here}: only flattening views are supported, got {dims}")
        return self.module_op(nn.Flatten(), sig, here)

    def call_function(self, node: fx.Node) -> Any:
        fn = node.target
        name = getattr(fn, "__name__", str(fn))
        here = self.where(node, name)
        args = self.arg(node.args, here)
        kwargs = self.arg(node.kwargs, here)
        if fn in (operator.add, torch.add) and len(args) == 2 and not kwargs:
            terms = []
            for a in args:
                terms.extend(a.terms if isinstance(a, Sum) else [self.signal(a, here)])
            return Sum(terms)
        if fn is operator.getitem:
            base, index = args
            if isinstance(base, NeuronTuple):
                if index == 0:
                    return base.spikes
                return _State(base.where)
            if isinstance(base, LeakyTuple):
                return base.out if index == 0 else _State(base.out.where)
            if isinstance(base, _Shape):
                if not isinstance(index, int):
                    raise FrontendError(
                        f"{here}: indexes a tensor's shape with {index!r}; only single dimensions "
                        f"(x.shape[0] for the batch) can be mapped"
                    )
                return _Batch() if index == 0 else base.shape[index - 1]
        if fn is torch.flatten:
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            if start != 1 or end != -1:
                raise FrontendError(f"{here}: only torch.flatten(x, 1) is supported")
            return self.module_op(nn.Flatten(), self.signal(args[0], here), here)
        if fn in PASS_FUNCTIONS:
            return self.signal(args[0], here)
        if fn in AVG_POOL_1D:
            names = ("input", "kernel_size", "stride", "padding")
            given = {**dict(zip(names, args)), **kwargs}
            stride = given.get("stride") or None  # None or []: the kernel size
            return self.avg_pool1d(
                given["input"],
                _first(given["kernel_size"]),
                None if stride is None else _first(stride),
                _first(given.get("padding", 0)),
                here,
            )
        if name == "_assert_is_none" and args and args[0] is None:  # fx's guard of a None arg
            return None
        if fn is getattr and args[1] == "shape":
            return _Shape(self.signal(args[0], here).cur.shape)
        if fn in POOL_FUNCTIONS:
            return self.pool_function(fn, args, kwargs, here)
        raise FrontendError(
            f"{here} in forward() cannot be mapped; use layer modules "
            f"(nn.Linear, nn.Conv2d, ...) or register the module as a neuron"
        )

    def call_method(self, node: fx.Node) -> Any:
        method = str(node.target)
        here = self.where(node, f"Tensor.{method}")
        args = self.arg(node.args, here)
        if method == "size":
            if len(args) == 2 and args[1] == 0:
                return _Batch()
            return _Shape(self.signal(args[0], here).cur.shape)
        if method == "unsqueeze" and list(args[1:]) == [1] and not isinstance(args[0], _Channel):
            return _Channel(self.signal(args[0], here))
        if method == "squeeze" and list(args[1:]) == [1] and isinstance(args[0], _Channel):
            return args[0].sig
        if method == "repeat" and isinstance(args[0], _NewAxis):
            return self.repeat_over_time(args[0], list(args[1:]), here)
        if method == "mean" and self.time_repeat and isinstance(args[0], Signal):
            dims = list(args[1:]) or [node.kwargs.get("dim")]
            if dims not in ([0], [(0,)]):
                raise FrontendError(f"{here}: only the mean over time, x_seq.mean(0), is supported")
            return _TimeMean(args[0])
        sig = self.signal(args[0], here)
        if method == "unsqueeze" and list(args[1:]) == [0] and sig.cur.node == "input":
            return _NewAxis(sig)
        if method == "contiguous":
            return sig
        if method in ("view", "reshape"):
            dims = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
            return self.reshape(sig, dims, here)
        if method == "flatten":
            if list(args[1:]) not in ([1], [1, -1]) or node.kwargs:
                raise FrontendError(f"{here}: only x.flatten(1) is supported")
            return self.module_op(nn.Flatten(), sig, here)
        raise FrontendError(f"{here} in forward() cannot be mapped")

    def repeat_over_time(self, value: _NewAxis, repeats: list[Any], here: str) -> Signal:
        """``x.unsqueeze(0).repeat(T, 1, ...)``: SpikingJelly's multi-step input, the same
        frame at every step, which is what the deployed network presents."""
        if len(repeats) == 1 and isinstance(repeats[0], (list, tuple)):
            repeats = list(repeats[0])
        if not repeats or not isinstance(repeats[0], int) or any(r != 1 for r in repeats[1:]):
            raise FrontendError(
                f"{here}: only x.unsqueeze(0).repeat(T, 1, ...) over a new time axis is supported"
            )
        self.time_repeat = int(repeats[0])
        return value.sig

    def output(self, node: fx.Node) -> None:
        value = self.arg(node.args[0], "output")
        if isinstance(value, _TimeMean):  # the deployed logits are the mean over the steps
            value = value.sig
        if isinstance(value, LeakyTuple):
            value, self.output_index = value.out, 0
        if (
            isinstance(value, (tuple, list))
            and value
            and isinstance(value[0], (Signal, LeakyOut))
            and all(isinstance(v, _State) for v in value[1:])
        ):
            value, self.output_index = value[0], 0  # (spikes, mem) of the last neuron
        elif (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], (Signal, LeakyOut))
            and isinstance(value[1], list)
            and all(v is None or isinstance(v, _State) for v in value[1])
        ):
            value, self.output_index = value[0], 0  # (output, state list): norse SequentialState
        elif isinstance(value, NeuronTuple):
            value, self.output_index = value.spikes, 0
        leaky = value.leaky if isinstance(value, LeakyOut) else np.zeros(0)
        sig = self.signal(value.sig if isinstance(value, LeakyOut) else value, "model output")
        if sig.neuron:  # spikes out: logits = firing rates (times the spike amplitude)
            n = int(np.prod(sig.cur.shape))
            sig = Signal(
                self.ex.synapse(sig.cur, "dense", Dense(weight=np.eye(n) * sig.gain), (n,), weight=True)
            )
        if (
            sig.cur.weight_node is None
            or self.g.node(sig.cur.node).kind != "dense"
            or len(sig.cur.shape) != 1
        ):
            raise FrontendError(
                "model output: must be a Linear layer (the readout) or the spikes of a neuron layer"
            )
        self.g.add("readout", Readout(bias=sig.cur.bias.ravel().copy(), leaky=leaky), (sig.cur.node,))

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.env and node.args == (None,):  # an optional state traced as None
                    self.env[node.name] = None
                    continue
                if self.env:
                    raise FrontendError(
                        f"forward() takes a second input {node.name!r}; only "
                        f"forward(x) (one time step) is supported"
                    )
                shape = self.input_shape
                self.env[node.name] = Signal(Cursor("input", shape, np.zeros(shape)))
            elif node.op == "get_attr":
                raise FrontendError(
                    f"{node.target}: forward() uses a parameter or buffer "
                    f"directly; only layer modules can be mapped"
                )
            elif node.op == "output":
                self.output(node)
            else:
                self.env[node.name] = getattr(self, node.op)(node)


@dataclass
class _NewAxis:
    """``x.unsqueeze(0)`` of the input: a time axis about to be repeated."""

    sig: Signal


@dataclass
class _TimeMean:
    """``x_seq.mean(0)``: the mean over a multi-step forward's time axis (the output)."""

    sig: Signal


@dataclass
class _State:
    """A neuron's state output (mem, syn): not deployed."""

    where: str


def module_to_graph(
    module: nn.Module,
    *,
    input_shape: tuple[int, ...],
    timesteps: int,
    x_max: float = 1.0,
    meta: dict[str, Any] | None = None,
) -> Graph:
    """Trace ``module`` (eval mode) and map it to a validated float IR graph.

    ``graph.meta["source_neurons"]`` maps each LM-H node to the module path of its neuron;
    ``graph.meta["source_max_pools"]`` (if any) maps each ``MaxPool`` node to the module path of
    its MaxPool2d; ``graph.meta["source_output_index"]`` is 0 when the module returns (spikes, state);
    ``graph.meta["source_time_loop"]`` is the step count of a forward() that loops over time
    itself (:mod:`lmh_deploy.frontends.time_loop`; one call then returns all steps' records);
    ``graph.meta["source_time_batched"]`` is ``T`` for a module that runs all steps in one
    ``(T*N, ...)`` call (the paper's TEBN mode, traced as its per-step equivalent), else None;
    ``graph.meta["source_batch_time"]`` is True for a rockpool network, which runs all steps of
    a ``(B, T, ...)`` input in one call (traced as its per-step view, :mod:`.rockpool`).
    Raises :class:`FrontendError` / :class:`NeuronError` (one line, module path and type).
    """
    module = module.eval()
    steps = time_batched_steps(module)
    rockpool = is_rockpool_network(module)
    module = per_step_copy(per_step_view(fold_norm_input(module)), timesteps)
    shape = tuple(int(d) for d in input_shape)
    check_per_step_containers(module)
    gm = trace(module)
    if rockpool:  # a rockpool module's call also reads its states (unused): not the network
        for node in [n for n in gm.graph.nodes if n.op == "get_attr" and not n.users]:
            gm.graph.erase_node(node)
    try:
        loop = first_step(gm, lambda m: find_adapter(m) is not None or unsupported_neuron(m) is not None)
    except IRError as exc:
        raise FrontendError(str(exc)) from None
    if loop is not None:
        gm = loop[0]
        if loop[1].steps != int(timesteps):
            raise FrontendError(
                f"{type(module).__name__}.forward() loops over {loop[1].steps} time steps "
                f"itself; compile it with --timesteps {loop[1].steps}"
            )
    graph = Graph(meta={"timesteps": int(timesteps), **(meta or {})})
    graph.add("input", Input(shape=shape, x_max=float(x_max)))
    walker = _Walker(gm, graph, shape)
    walker.run()
    if not walker.source_neurons:
        raise FrontendError(
            f"{type(module).__name__}: no spiking neuron found (recognised: "
            f"{', '.join(registered_names())}); register yours with "
            f"lmh_deploy.frontends.neurons.register_neuron"
        )
    graph.meta["source_neurons"] = dict(walker.source_neurons)
    if walker.source_max_pools:
        graph.meta["source_max_pools"] = dict(walker.source_max_pools)
    graph.meta["source_output_index"] = walker.output_index
    if walker.readout_cell is not None:  # its state is kept between the per-step calls
        graph.meta["source_readout_cell"] = walker.readout_cell
    if loop is not None:  # the source runs all steps in one call and returns records
        graph.meta["source_time_loop"] = loop[1].steps
        graph.meta["source_output_index"] = loop[1].output_index
    graph.meta["source_time_batched"] = steps
    if rockpool:  # one call of (B, T, ...) returns (output, state, record)
        graph.meta["source_batch_time"] = True
        graph.meta["source_output_index"] = 0
    if walker.time_repeat is not None:  # multi-step: one call runs all steps, returns the mean
        if walker.time_repeat != int(timesteps):
            raise FrontendError(
                f"{type(module).__name__}.forward() repeats its input over {walker.time_repeat} "
                f"time steps itself; compile it with --timesteps {walker.time_repeat}"
            )
        graph.meta["source_time_repeat"] = walker.time_repeat
    validate(graph)
    return graph
