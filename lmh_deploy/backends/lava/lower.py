"""Stage 3: graph IR -> a network of Lava Processes.

Every Lava connection process (``Dense``, ``Sparse``, ``Conv``) delivers its output one step late
(``a(t) = W s(t-1)``), so a neuron layer ``d`` synaptic hops from the input starts at global
step ``start_step = d``: its local step ``t`` then sees exactly what :mod:`sim` computes at
step ``t``. Where parallel paths of different length meet (residual shortcuts), the shorter
path is a ``DelaySparse`` with the extra delay (``QDense.delay``); a path that max-pools its
currents (``QDense.max_pool``) feeds its neuron through a ``MaxPoolCurrents`` Process, which
adds no step. A ``fixed_pt`` convolution that the lowering plan puts on Lava's own ``Conv``
process (:func:`~lmh_deploy.backends.lava.plan.plan_lowering`: only where that computes our
sums exactly) holds its kernel only, in Lava's (W, H, C) layout, reached from our flat
(C, H, W) ports through Lava's virtual ``reshape``/``transpose`` ports; other paths hold their
synapses as a ``Sparse`` or ``Dense`` matrix (``floating_pt``: every path). Samples are
presented one after another, ``T`` steps each, and every layer resets its state at its own
sample boundary, so one Lava run evaluates a whole batch.
:func:`lower` has every neuron layer send its spikes and final state to the host through
channels (``LMHNeuron(record=True)``) and the readout currents reach the host through Lava's
``io.extractor.Extractor``: whole arrays per message, where a ``Var.get()`` of a sink buffer
moves one element per message (lava-nc issue 52). :func:`build_layers` gives the network
without source and recording, which :mod:`lmh_deploy.backends.lava.network` wraps as one
hierarchical Process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

import lmh_deploy  # noqa: F401  - installs the Python 3.11 Lava import fix first
from lava.proc.conv.process import Conv
from lava.proc.dense.process import Dense as LavaDense
from lava.proc.io.extractor import Extractor
from lava.proc.io.source import RingBuffer as SourceBuffer
from lava.proc.sparse.process import DelaySparse, Sparse

from lmh_deploy.semantics import integer as fx
from lmh_deploy.ir import (
    LMH,
    Graph,
    Input,
    IRError,
    QDense,
    QInput,
    QLMH,
    QReadout,
    Readout,
    validate,
    validate_quantized,
)
from lmh_deploy.backends.lava.procs.lmh.process import LMHNeuron, neuron_process
from lmh_deploy.backends.lava.memory import accumulator_dtype
from lmh_deploy.backends.lava.plan import (
    LavaPlan,
    delay_lines,
    lava_conv_kernel,
    plan_lowering,
    qdense_delays,
)
from lmh_deploy.backends.lava.procs.maxpool.process import MaxPoolCurrents
from lmh_deploy.ir.synapses import largest_presynaptic, qdense_matrix
from lmh_deploy.passes.compose import synapse_paths
from lmh_deploy.passes.delays import layer_depths, path_delays

Precision = Literal["fixed_pt", "floating_pt"]


@dataclass
class LavaNetwork:
    """Handles of a lowered network plus the timing needed to read it back."""

    source: SourceBuffer
    readout: Extractor  # the readout currents of every global step
    connections: dict[str, object] = field(default_factory=dict)
    neurons: dict[str, LMHNeuron] = field(default_factory=dict)  # recording spikes and state
    start_step: dict[str, int] = field(default_factory=dict)  # per neuron layer and 'readout'
    samples: int = 0
    timesteps: int = 0
    total_steps: int = 0


@dataclass(frozen=True)
class Path:
    """One synaptic path into a layer: source layer, weights as Lava holds them, timing."""

    name: str
    source: str
    weights: Any  # dense array or CSR; a kernel in Lava's layout where ``conv`` is set
    weight_exp: int
    graded: bool
    delay: int
    pool_windows: np.ndarray | None = None  # the max pool of the currents, if any
    conv: QDense | None = None  # the convolution Lava's Conv runs (weights: its kernel)


def _paths(
    graph: Graph, name: str, precision: Precision, delays: dict[str, int], conv: frozenset[str]
) -> list[Path]:
    """The synaptic paths into neuron/readout ``name``, for either precision.

    An integer graph records each path's balancing delay (``QDense.delay``); a float graph's
    come from :func:`~lmh_deploy.passes.delays.path_delays` (``delays``). ``conv``: the
    integer paths on Lava's Conv (:class:`~lmh_deploy.backends.lava.plan.LavaPlan`).
    """
    if precision == "floating_pt":  # the presynaptic unit (theta, x_max / 255) folds into W
        return [
            Path(
                p.name,
                p.source,
                p.weights,
                0,
                p.graded,
                delays[p.name],
                None if p.pool is None else p.pool.windows(),
            )
            for p in synapse_paths(graph, name, keep_kernels=False)
        ]
    paths = []
    for pred in graph.inputs_of(name):
        node = graph.node(pred)
        assert isinstance(node, QDense)
        (src,) = graph.inputs_of(pred)
        if pred in conv:  # the exponent is folded into the kernel
            paths.append(Path(pred, src, lava_conv_kernel(node), 0, node.graded, node.delay, conv=node))
            continue
        dtype = accumulator_dtype(node, largest_presynaptic(graph, pred))
        weights = qdense_matrix(node, fx.WEIGHT_LAVA_SCALE, conv_dtype=dtype)
        pool = node.max_pool
        windows = None if pool is None else pool.windows()
        paths.append(Path(pred, src, weights, node.weight_exp, node.graded, node.delay, windows))
    return paths


def _connection(path: Path, precision: Precision, delayed_source: bool, message_bits: int):
    """A Lava Conv, Dense, Sparse or DelaySparse for one path (``delayed_source``: the path's
    spikes come already delayed from its source's ``s_out_delayed``; ``message_bits``: the
    width of its source's graded messages, 0 for binary spikes)."""
    kwargs = {"num_message_bits": message_bits, "name": path.name}
    if path.conv is not None:
        assert path.conv.conv_input_shape is not None
        c, h, w = path.conv.conv_input_shape
        sy, sx = path.conv.conv_stride
        py, px = path.conv.conv_padding
        # Lava's geometry is (X, Y) = (W, H); its model ignores num_weight_bits and weight_exp
        # (folded into the kernel): the width given is the kernel's true one.
        bits = int(np.abs(path.weights).max(initial=0)).bit_length() + 1
        return Conv(
            weight=path.weights,
            input_shape=(w, h, c),
            stride=(sx, sy),
            padding=(px, py),
            num_weight_bits=bits,
            **kwargs,
        )
    if precision == "fixed_pt":
        kwargs.update(weight_exp=path.weight_exp, num_weight_bits=8)
    if path.delay > 0 and not delayed_source:
        w = sp.csr_matrix(path.weights)
        delays = w.copy()
        # Lava's DelaySparse delivers a delay-k synapse k + 1 steps later (Sparse: 1 step).
        delays.data = np.full(w.nnz, path.delay, dtype=int)
        return DelaySparse(weights=w, delays=delays.astype(int), max_delay=path.delay, **kwargs)
    if sp.issparse(path.weights):
        return Sparse(weights=sp.csr_matrix(path.weights), **kwargs)
    return LavaDense(weights=np.asarray(path.weights), **kwargs)


def feed(port: Any, conn: Any) -> None:
    """Connect a flat (n,) port holding (C, H, W) values in C order to a connection's
    ``s_in``: through Lava's virtual ports to a ``Conv``'s (W, H, C) input."""
    if isinstance(conn, Conv):
        w, h, c = conn.input_shape
        port = port.reshape((c, h, w)).transpose((2, 1, 0))
    port.connect(conn.s_in)


def flat_output(conn: Any) -> Any:
    """A connection's output as a flat (n,) port of (C, H, W) values in C order: a ``Conv``'s
    (W', H', C') ``a_out`` through Lava's virtual ports, any other's ``a_out`` itself."""
    if not isinstance(conn, Conv):
        return conn.a_out
    w, h, c = (int(d) for d in conn.output_shape)
    return conn.a_out.transpose((2, 1, 0)).reshape((c * h * w,))


@dataclass
class LavaLayers:
    """The network's Lava Processes without source or sinks (a building block).

    ``input_connections`` take the input frames (connect a flat port with :func:`feed`);
    ``readout_ports`` (flat OutPorts) deliver the readout currents (``sum_t`` of them plus
    ``T * bias`` are the logits). ``start_step`` holds each neuron layer's and the readout's (key
    ``'readout'``) synaptic depth: the global step at which its sample-0 step 0 arrives is
    ``start_step + 1``.
    """

    connections: dict[str, object] = field(default_factory=dict)
    neurons: dict[str, LMHNeuron] = field(default_factory=dict)
    start_step: dict[str, int] = field(default_factory=dict)
    #: the max pools of currents, by the name of their path
    pools: dict[str, MaxPoolCurrents] = field(default_factory=dict)
    input_connections: list = field(default_factory=list)
    readout_ports: list = field(default_factory=list)
    input_size: int = 0
    readout_size: int = 0
    input_graded: bool = True


def build_layers(
    graph: Graph,
    timesteps: int,
    precision: Precision = "fixed_pt",
    *,
    samples: int = 0,
    record: bool = False,
    plan: LavaPlan | None = None,
) -> LavaLayers:
    """Create and connect the neuron and synapse Processes of ``graph``.

    Every neuron layer resets its state every ``timesteps`` active steps (one sample after
    another); with ``samples > 0`` it freezes after that many samples, so its final state is
    the last sample's (0: it runs as long as the input does). ``record`` (needs
    ``samples``): every neuron layer sends its spikes and final state to the host.
    ``plan`` (``fixed_pt``): which convolutions run on Lava's Conv (default:
    :func:`~lmh_deploy.backends.lava.plan.plan_lowering`'s ``auto`` now).
    """
    order = graph.order()
    first = graph.node(order[0])
    if precision == "fixed_pt" and not isinstance(first, QInput):
        raise IRError("fixed_pt lowering needs a quantised graph (run quantize first)")
    if precision == "floating_pt" and not isinstance(first, Input):
        raise IRError("floating_pt lowering needs a float graph")
    (validate_quantized if precision == "fixed_pt" else validate)(graph)
    layers = [n for n in order if isinstance(graph.node(n), (QLMH, LMH, QReadout, Readout))]
    depth = layer_depths(graph)
    delays = path_delays(graph, depth) if precision == "floating_pt" else qdense_delays(graph)
    # A neuron layer whose outgoing delayed paths all wait the same d steps sends them its
    # spikes d steps late (s_out_delayed); other delayed paths are Lava DelaySparse.
    output_delay = delay_lines(graph, delays)
    conv: frozenset[str] = frozenset()
    if precision == "fixed_pt":
        conv = (plan or plan_lowering(graph)).conv
    plans = {name: _paths(graph, name, precision, delays, conv) for name in layers}
    graded = (int(first.bits) > 1) if isinstance(first, QInput) else not first.spikes
    net = LavaLayers(input_size=first.output_size(), input_graded=graded)
    out_ports: dict[str, Any] = {}  # Lava OutPorts
    for name in layers:
        node = graph.node(name)
        if isinstance(node, (QLMH, LMH)):
            number = int if isinstance(node, QLMH) else float
            args: dict[str, Any] = dict(
                theta=number(node.theta),
                mu_d=node.mu_d,
                mu_s=node.mu_s,
                lam_d=node.lam_d,
                lam_s=node.lam_s,
                bias=node.bias,
                reset=node.reset,
                reset_value=number(node.reset_value),
                threshold_test=node.threshold_test,
                reset_timing=node.reset_timing,
                v_d_init=np.asarray(node.v_d_init, np.int64 if number is int else np.float64),
                v_s_init=None if node.v_s_init is None else number(node.v_s_init),
                max_spikes=int(node.max_spikes),
                v_s_min=None if node.v_s_min is None else number(node.v_s_min),
            )
            if isinstance(node, QLMH):
                args["profile"] = node.profile
            proc = neuron_process(
                shape=(node.size,),
                start_step=depth[name],
                reset_interval=timesteps,
                end_step=depth[name] + samples * timesteps if samples else 0,
                output_delay=output_delay.get(name, 0),
                record=record,
                name=name,
                **args,
            )
            out_ports[name] = proc.s_out
            net.neurons[name] = proc
            net.start_step[name] = depth[name]
        else:
            net.readout_size = node.output_size()
            net.start_step["readout"] = depth[name]
        for path in plans[name]:
            delayed_source = path.delay > 0 and path.source in output_delay
            # graded messages: the input's own width, or a graded-spike layer's counts
            bits = int(first.bits) if path.source == order[0] else fx.SPIKE_COUNT_BITS
            conn = _connection(path, precision, delayed_source, bits if path.graded else 0)
            if path.source == order[0]:
                net.input_connections.append(conn)
            elif delayed_source:
                feed(net.neurons[path.source].s_out_delayed, conn)
            else:
                feed(out_ports[path.source], conn)
            current = flat_output(conn)
            if path.pool_windows is not None:  # receives and sends in the same step
                pool = MaxPoolCurrents(
                    windows=path.pool_windows, in_size=path.weights.shape[0], name=f"{path.name}.pool"
                )
                current.connect(pool.a_in)
                current = pool.a_out
                net.pools[path.name] = pool
            if isinstance(node, (QLMH, LMH)):
                current.connect(net.neurons[name].a_in)
            else:
                net.readout_ports.append(current)
            net.connections[path.name] = conn
    return net


def lower(
    graph: Graph,
    inputs: np.ndarray,
    timesteps: int,
    precision: Precision = "fixed_pt",
    plan: LavaPlan | None = None,
) -> LavaNetwork:
    """Build the Lava network for ``inputs``: static (B, *shape) or frames (T', B, *shape).

    The source presents sample ``b``'s step ``t`` at global step ``b*T + t``: the same
    frame every step (static), or frame ``t`` (time-varying, T' >= T frames). Each layer's
    ``start_step`` offset aligns its local step ``t`` with that frame.

    ``fixed_pt`` takes an integer graph (from :func:`~lmh_deploy.passes.quantize.quantize_graph`) and
    quantised inputs; ``floating_pt`` takes a float graph and inputs in input units
    ``x / Input.unit`` (not rounded): the unit is folded into the first weights.
    ``plan``: as :func:`build_layers`. Processes are created and connected, not run.
    """
    first = graph.node(graph.order()[0])
    static = inputs.ndim == len(first.shape) + 1
    samples = inputs.shape[0] if static else inputs.shape[1]
    layers = build_layers(graph, timesteps, precision, samples=samples, record=True, plan=plan)
    total = samples * timesteps + max(layers.start_step.values())  # the last sample drains
    dtype = np.int32 if precision == "fixed_pt" else np.float64
    data = np.zeros((layers.input_size, total), dtype)
    if static:
        frames = inputs.reshape(samples, -1).T.astype(dtype)  # (n_in, samples)
        data[:, : samples * timesteps] = np.repeat(frames, timesteps, axis=1)
    else:
        if inputs.shape[0] < timesteps:
            raise ValueError(
                f"inputs have {inputs.shape[0]} frames per sample; the network runs {timesteps} steps"
            )
        # column b*T + t <- frame t of sample b
        seq = inputs[:timesteps].reshape(timesteps, samples, -1).astype(dtype)
        data[:, : samples * timesteps] = seq.transpose(2, 1, 0).reshape(seq.shape[2], -1)
    net = LavaNetwork(
        source=SourceBuffer(data=data),
        readout=Extractor(shape=(layers.readout_size,), buffer_size=total),
        connections=layers.connections,
        neurons=layers.neurons,
        start_step=layers.start_step,
        samples=samples,
        timesteps=timesteps,
        total_steps=total,
    )
    for conn in layers.input_connections:
        feed(net.source.s_out, conn)
    for port in layers.readout_ports:
        port.connect(net.readout.in_port)
    return net
