"""Stage 3: graph IR -> a network of Lava Processes.

Every Lava ``Dense`` delivers its output one step late (``a(t) = W s(t-1)``),
so the neuron layer behind the ``i``-th Dense of the chain starts at global
step ``start_step = i + 1`` (0-based ``i``): its local step ``t`` then sees
exactly what :mod:`sim` computes at step ``t``. Samples are presented one
after another, ``T`` steps each, and every layer resets its state at its own
sample boundary, so one Lava run evaluates a whole batch. The readout Dense
feeds a sink; spikes of each layer feed a sink too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

import lmh_deploy  # noqa: F401  - installs the Python 3.11 Lava import fix first
from lava.proc.dense.process import Dense as LavaDense
from lava.proc.io.sink import RingBuffer as SinkBuffer
from lava.proc.io.source import RingBuffer as SourceBuffer

from lmh_deploy import fixedpoint as fx
from lmh_deploy.ir import LMH, Dense, Graph, Input, IRError, QDense, QInput, QLMH, QReadout, Readout
from lmh_deploy.lava_procs.lmh.process import LMHNeuron

Precision = Literal["fixed_pt", "floating_pt"]


@dataclass
class LavaNetwork:
    """Handles of a lowered network plus the timing needed to read it back."""

    source: SourceBuffer
    dense: dict[str, LavaDense] = field(default_factory=dict)
    neurons: dict[str, LMHNeuron] = field(default_factory=dict)
    spike_sinks: dict[str, SinkBuffer] = field(default_factory=dict)
    readout_sink: SinkBuffer | None = None
    start_step: dict[str, int] = field(default_factory=dict)  # per neuron layer and 'readout'
    samples: int = 0
    timesteps: int = 0
    total_steps: int = 0

    def processes(self) -> list:
        """Every process of the network."""
        sinks = list(self.spike_sinks.values()) + ([self.readout_sink] if self.readout_sink else [])
        return [self.source, *self.dense.values(), *self.neurons.values(), *sinks]


def _chain(graph: Graph) -> list[str]:
    order = graph.order()
    for prev, name in zip(order, order[1:]):
        if graph.inputs_of(name) != [prev]:
            raise IRError(f"{name}: the Lava lowering handles sequential graphs; "
                          f"{name} is fed by {graph.inputs_of(name)}")
    return order


def lower(graph: Graph, inputs: np.ndarray, timesteps: int,
          precision: Precision = "fixed_pt") -> LavaNetwork:
    """Build the Lava network for ``inputs`` (B, *shape), quantised ints for ``fixed_pt``.

    ``fixed_pt`` takes an integer graph (from :func:`~lmh_deploy.quantize.quantize_graph`) and
    quantised inputs; ``floating_pt`` takes a float graph and inputs in input units
    ``x * 255 / x_max`` (not rounded): ``x_max / 255`` is folded into the first weights. Processes are created and connected, not run.
    """
    order = _chain(graph)
    samples = inputs.shape[0]
    n_dense = sum(isinstance(graph.node(n), (Dense, QDense)) for n in order)
    total = samples * timesteps + n_dense  # the last sample drains through every delay
    first = graph.node(order[0])
    if precision == "fixed_pt" and not isinstance(first, QInput):
        raise IRError("fixed_pt lowering needs a quantised graph (run quantize first)")
    if precision == "floating_pt" and not isinstance(first, Input):
        raise IRError("floating_pt lowering needs a float graph")
    dtype = np.int32 if precision == "fixed_pt" else np.float64
    frames = inputs.reshape(samples, -1).T.astype(dtype)  # (n_in, samples)
    data = np.zeros((frames.shape[0], total), dtype)
    data[:, :samples * timesteps] = np.repeat(frames, timesteps, axis=1)
    net = LavaNetwork(source=SourceBuffer(data=data), samples=samples, timesteps=timesteps,
                      total_steps=total)
    port = net.source.s_out
    delay = 0
    prev_amplitude = first.x_max / fx.INPUT_MAX if isinstance(first, Input) else 1.0
    for name in order[1:]:
        node = graph.node(name)
        if isinstance(node, (QDense, Dense)):
            graded = delay == 0
            if isinstance(node, QDense):
                weights, exp = fx.WEIGHT_LAVA_SCALE * node.weight_mant, node.weight_exp
                kwargs = {"weight_exp": exp, "num_weight_bits": 8}
            else:  # float: the presynaptic amplitude (theta or input unit) folds into W
                weights, kwargs = node.weight * prev_amplitude, {}
            dense = LavaDense(weights=weights, num_message_bits=fx.INPUT_BITS if graded else 0,
                              name=name, **kwargs)
            port.connect(dense.s_in)
            port = dense.a_out
            net.dense[name] = dense
            delay += 1
        elif isinstance(node, (QLMH, LMH)):
            if isinstance(node, QLMH):
                args = dict(theta=int(node.theta), mu_d=node.mu_d, mu_s=node.mu_s,
                            lam_d=node.lam_d_off, lam_s=node.lam_s_off, bias=node.bias)
            else:
                args = dict(theta=float(node.theta), mu_d=node.mu_d, mu_s=node.mu_s,
                            lam_d=node.lam_d, lam_s=node.lam_s, bias=node.bias)
                prev_amplitude = node.theta
            neuron = LMHNeuron(shape=(node.size,), start_step=delay, reset_interval=timesteps,
                               end_step=delay + samples * timesteps, name=name, **args)
            port.connect(neuron.a_in)
            sink = SinkBuffer(shape=(node.size,), buffer=total)
            neuron.s_out.connect(sink.a_in)
            port = neuron.s_out
            net.neurons[name], net.spike_sinks[name], net.start_step[name] = neuron, sink, delay
        elif isinstance(node, (QReadout, Readout)):
            net.readout_sink = SinkBuffer(shape=(node.output_size(),), buffer=total)
            port.connect(net.readout_sink.a_in)
            net.start_step["readout"] = delay
        else:
            raise IRError(f"{name}: no Lava lowering for node kind {node.kind!r}")
    return net
