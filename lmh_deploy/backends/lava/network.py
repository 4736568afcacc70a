"""The compiled network as one Lava building block: a hierarchical Process with ports.

:class:`LMHNetwork` holds the network's neuron and synapse Processes (those of
:func:`~lmh_deploy.backends.lava.lower.build_layers`) behind two ports, as lava-dl's
``netx.hdf5.Network`` does:

* ``inp`` (``n_in`` values per step): one input frame per step. A spike-input network
  (binary event frames) takes 0/1 events; a graded-input one takes integers of its input
  width, ``QInput.bits`` (``fixed_pt``; see :func:`lmh_deploy.pipeline.inputs.quantize`).
* ``out`` (``classes`` values per step): the readout's synaptic current. A sample's logits
  are ``sum_t out[t] + T * readout_bias`` (:attr:`LMHNetwork.readout_bias`; a leaky
  readout filters ``out[t] + readout_bias`` first,
  :func:`~lmh_deploy.semantics.readout.readout_sum`), its prediction their argmax.

Timing: the frame a source sends at global step ``g`` (Lava counts from 1) is step
``(g - 1) % T`` of sample ``(g - 1) // T``; every layer resets at its own sample boundary, so
samples stream back to back. Its readout current leaves ``out`` at global step
``g + start_step['readout']`` (one step per synaptic hop, :attr:`LMHNetwork.out_delay`).
Layers are reachable as ``net.neurons[name]`` (Vars ``v_d``, ``v_s``; port ``s_out``).
"""

from __future__ import annotations

import numpy as np

import lmh_deploy  # noqa: F401  - installs the Python 3.11 Lava import fix first
from lava.magma.core.decorator import implements
from lava.magma.core.model.sub.model import AbstractSubProcessModel
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from lmh_deploy.backends.lava.lower import Precision, build_layers, feed
from lmh_deploy.backends.lava.plan import plan_lowering
from lmh_deploy.ir import Graph
from lmh_deploy.semantics.readout import readout_sum


class LMHNetwork(AbstractProcess):
    """A compiled LM-H network as one hierarchical Lava Process with ``inp`` and ``out``.

    Parameters
    ----------
    graph : the integer graph (``fixed_pt``) or the float graph (``floating_pt``).
    timesteps : steps per sample ``T``.
    precision : which LM-H ProcessModel the run configuration must select
        (``Loihi2SimCfg(select_tag=precision)``).
    samples : freeze every layer after this many samples (0: run as long as the input).
    lava_conv : ``fixed_pt``: which convolutions run on Lava's own Conv (``auto``, ``always``,
        ``never``; :func:`~lmh_deploy.backends.lava.plan.plan_lowering`).
    """

    def __init__(
        self,
        *,
        graph: Graph,
        timesteps: int,
        precision: Precision = "fixed_pt",
        samples: int = 0,
        lava_conv: str = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(timesteps=timesteps, precision=precision, name=name)
        plan = plan_lowering(graph, lava_conv) if precision == "fixed_pt" else None
        layers = build_layers(graph, timesteps, precision, samples=samples, plan=plan)
        if len(layers.readout_ports) != 1:
            raise ValueError(
                f"LMHNetwork: the readout has {len(layers.readout_ports)} "
                "synapse paths; a single one is supported as the out port"
            )
        self.layers = layers
        self.neurons = layers.neurons
        self.timesteps = int(timesteps)
        self.precision = precision
        self.input_graded = layers.input_graded
        self.out_delay = int(layers.start_step["readout"])
        readout = graph.node(graph.order()[-1])
        self.readout_bias = np.asarray(readout.bias)
        self.readout_leaky = np.asarray(readout.leaky)
        self.inp = InPort(shape=(layers.input_size,))
        self.out = OutPort(shape=(layers.readout_size,))
        for conn in layers.input_connections:
            feed(self.inp, conn)
        layers.readout_ports[0].connect(self.out)

    def logits(self, out_trace: np.ndarray, samples: int) -> np.ndarray:
        """Logits ``(samples, classes)`` from the ``out`` values a sink recorded.

        ``out_trace`` is ``(classes, steps)`` as Lava's sink ``RingBuffer`` holds it, column
        ``g - 1`` for global step ``g``.
        """
        t = self.timesteps
        cols = out_trace[:, self.out_delay : self.out_delay + samples * t]
        per_step = cols.reshape(cols.shape[0], samples, t)
        return readout_sum(per_step.transpose(2, 1, 0), self.readout_bias, self.readout_leaky)


@implements(proc=LMHNetwork, protocol=LoihiProtocol)
class LMHNetworkModel(AbstractSubProcessModel):
    """The sub-Processes built (and connected) by :class:`LMHNetwork`."""

    def __init__(self, proc: LMHNetwork) -> None:
        # Registered as attributes so that Lava's compiler finds them as this model's
        # sub-Processes (AbstractSubProcessModel.find_sub_procs).
        pools = {f"{name}.pool": pool for name, pool in proc.layers.pools.items()}
        for name, sub in {**proc.layers.neurons, **proc.layers.connections, **pools}.items():
            setattr(self, f"sub_{name.replace('.', '_')}", sub)
