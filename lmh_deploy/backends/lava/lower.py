"""Stage 3: graph IR -> a network of Lava Processes.

Every Lava connection process (``Dense``, ``Sparse``) delivers its output one step
late (``a(t) = W s(t-1)``), so a neuron layer ``d`` synaptic hops from the input
starts at global step ``start_step = d``: its local step ``t`` then sees exactly
what :mod:`sim` computes at step ``t``. Where parallel paths of different length
meet (residual shortcuts), the shorter path is a ``DelaySparse`` with the extra
delay (``QDense.delay``). Samples are presented one after another, ``T`` steps
each, and every layer resets its state at its own sample boundary, so one Lava
run evaluates a whole batch. Readout and spikes of each layer feed sinks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

import lmh_deploy  # noqa: F401  - installs the Python 3.11 Lava import fix first
from lava.proc.dense.process import Dense as LavaDense
from lava.proc.io.sink import RingBuffer as SinkBuffer
from lava.proc.io.source import RingBuffer as SourceBuffer
from lava.proc.sparse.process import DelaySparse, Sparse

from lmh_deploy.semantics import integer as fx
from lmh_deploy.ir import (LMH, Graph, Input, IRError, QDense, QInput, QLMH, QReadout, Readout,
                           validate, validate_quantized)
from lmh_deploy.backends.lava.procs.lmh.process import LMHNeuron
from lmh_deploy.ir.synapses import qdense_matrix
from lmh_deploy.passes.compose import synapse_paths
from lmh_deploy.passes.delays import layer_depths, path_delays

Precision = Literal["fixed_pt", "floating_pt"]


@dataclass
class LavaNetwork:
    """Handles of a lowered network plus the timing needed to read it back."""

    source: SourceBuffer
    connections: dict[str, object] = field(default_factory=dict)
    neurons: dict[str, LMHNeuron] = field(default_factory=dict)
    spike_sinks: dict[str, SinkBuffer] = field(default_factory=dict)
    readout_sink: SinkBuffer | None = None
    start_step: dict[str, int] = field(default_factory=dict)  # per neuron layer and 'readout'
    samples: int = 0
    timesteps: int = 0
    total_steps: int = 0


@dataclass(frozen=True)
class Path:
    """One synaptic path into a layer: source layer, weights as Lava holds them, timing."""

    name: str
    source: str
    weights: object  # dense array or CSR
    weight_exp: int
    graded: bool
    delay: int


def _paths(graph: Graph, name: str, precision: Precision, delays: dict[str, int]) -> list[Path]:
    """The synaptic paths into neuron/readout ``name``, for either precision.

    An integer graph records each path's balancing delay (``QDense.delay``); a float graph's
    come from :func:`~lmh_deploy.passes.delays.path_delays` (``delays``).
    """
    if precision == "floating_pt":  # the presynaptic unit (theta, x_max / 255) folds into W
        return [Path(p.name, p.source, p.weights, 0, p.graded, delays[p.name])
                for p in synapse_paths(graph, name, keep_kernels=False)]
    paths = []
    for pred in graph.inputs_of(name):
        node = graph.node(pred)
        assert isinstance(node, QDense)
        (src,) = graph.inputs_of(pred)
        paths.append(Path(pred, src, qdense_matrix(node, fx.WEIGHT_LAVA_SCALE),
                          node.weight_exp, node.graded, node.delay))
    return paths


def _connection(path: Path, precision: Precision):
    """A Lava Dense, Sparse or DelaySparse for one path."""
    kwargs = {"num_message_bits": fx.INPUT_BITS if path.graded else 0, "name": path.name}
    if precision == "fixed_pt":
        kwargs.update(weight_exp=path.weight_exp, num_weight_bits=8)
    if path.delay > 0:
        w = sp.csr_matrix(path.weights)
        delays = w.copy()
        # Lava's DelaySparse delivers a delay-k synapse k + 1 steps later (Sparse: 1 step).
        delays.data = np.full(w.nnz, path.delay, dtype=int)
        return DelaySparse(weights=w, delays=delays.astype(int), max_delay=path.delay, **kwargs)
    if sp.issparse(path.weights):
        return Sparse(weights=sp.csr_matrix(path.weights), **kwargs)
    return LavaDense(weights=np.asarray(path.weights), **kwargs)


def lower(graph: Graph, inputs: np.ndarray, timesteps: int,
          precision: Precision = "fixed_pt") -> LavaNetwork:
    """Build the Lava network for ``inputs`` (B, *shape).

    ``fixed_pt`` takes an integer graph (from :func:`~lmh_deploy.passes.quantize.quantize_graph`) and
    quantised inputs; ``floating_pt`` takes a float graph and inputs in input units
    ``x * 255 / x_max`` (not rounded): ``x_max / 255`` is folded into the first weights.
    Processes are created and connected, not run.
    """
    order = graph.order()
    first = graph.node(order[0])
    if precision == "fixed_pt" and not isinstance(first, QInput):
        raise IRError("fixed_pt lowering needs a quantised graph (run quantize first)")
    if precision == "floating_pt" and not isinstance(first, Input):
        raise IRError("floating_pt lowering needs a float graph")
    (validate_quantized if precision == "fixed_pt" else validate)(graph)
    samples = inputs.shape[0]
    layers = [n for n in order if isinstance(graph.node(n), (QLMH, LMH, QReadout, Readout))]
    depth = layer_depths(graph)
    delays = path_delays(graph, depth) if precision == "floating_pt" else {}
    plans = {name: _paths(graph, name, precision, delays) for name in layers}
    total = samples * timesteps + max(depth.values())  # the last sample drains through
    dtype = np.int32 if precision == "fixed_pt" else np.float64
    frames = inputs.reshape(samples, -1).T.astype(dtype)  # (n_in, samples)
    data = np.zeros((frames.shape[0], total), dtype)
    data[:, :samples * timesteps] = np.repeat(frames, timesteps, axis=1)
    net = LavaNetwork(source=SourceBuffer(data=data), samples=samples, timesteps=timesteps,
                      total_steps=total)
    out_ports = {order[0]: net.source.s_out}
    for name in layers:
        node = graph.node(name)
        if isinstance(node, (QLMH, LMH)):
            number = int if isinstance(node, QLMH) else float
            args = dict(theta=number(node.theta), mu_d=node.mu_d, mu_s=node.mu_s,
                        lam_d=node.lam_d, lam_s=node.lam_s, bias=node.bias,
                        reset=node.reset, reset_value=number(node.reset_value),
                        threshold_test=node.threshold_test, reset_timing=node.reset_timing,
                        v_d_init=number(node.v_d_init),
                        v_s_init=None if node.v_s_init is None else number(node.v_s_init))
            if isinstance(node, QLMH):
                args["profile"] = node.profile
            proc = LMHNeuron(shape=(node.size,), start_step=depth[name], reset_interval=timesteps,
                             end_step=depth[name] + samples * timesteps, name=name, **args)
            in_port = proc.a_in
            sink = SinkBuffer(shape=(node.size,), buffer=total)
            proc.s_out.connect(sink.a_in)
            out_ports[name] = proc.s_out
            net.neurons[name], net.spike_sinks[name] = proc, sink
            net.start_step[name] = depth[name]
        else:
            net.readout_sink = SinkBuffer(shape=(node.output_size(),), buffer=total)
            in_port = net.readout_sink.a_in
            net.start_step["readout"] = depth[name]
        for path in plans[name]:
            conn = _connection(path, precision)
            out_ports[path.source].connect(conn.s_in)
            conn.a_out.connect(in_port)
            net.connections[path.name] = conn
    return net
