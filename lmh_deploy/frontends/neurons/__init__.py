"""Neuron adapters: how a framework's spiking neuron module maps onto the IR's LM-H node.

One small file per neuron kind; all are registered here, in one place, in the order they are
tried. An adapter recognises a module (by its parameters and attributes, not its class name
alone), describes it as a :class:`NeuronSpec` (factors, threshold, spike amplitude and the
source's RULES: reset, threshold test, reset timing, initial states) and knows how to reset
its state before a new batch. Users add their own with :func:`register_neuron`::

    from lmh_deploy.frontends.neurons import NeuronAdapter, NeuronSpec, register_neuron

    class MyLIFAdapter(NeuronAdapter):
        name = "my-lif"
        def matches(self, module): return isinstance(module, MyLIF)
        def spec(self, module, where):
            return NeuronSpec(theta=module.vth, amplitude=1.0, factors=lif_factors(module.decay),
                              reset="set", threshold_test=">", v_s_init=0.0)
        def reset(self, module): module.v = None

    register_neuron(MyLIFAdapter())

docs/interop.md lists every adapter's mapping.
"""

from __future__ import annotations

import sys

from torch import nn

from lmh_deploy.frontends.neurons.base import (
    NeuronAdapter,
    NeuronError,
    NeuronSpec,
    as_factor,
    scalar,
)
from lmh_deploy.frontends.neurons.learnable import LearnableNeuronAdapter
from lmh_deploy.frontends.neurons.lmh import LMHNeuronAdapter
from lmh_deploy.frontends.neurons.norse import LEAKY_READOUT, NorseLIFAdapter, NorseLIFBoxAdapter
from lmh_deploy.frontends.neurons.rockpool import SUPPORTED as ROCKPOOL_SUPPORTED
from lmh_deploy.frontends.neurons.rockpool import RockpoolLIFAdapter, lif_class
from lmh_deploy.frontends.neurons.snntorch_leaky import LeakyAdapter, snntorch_class
from lmh_deploy.frontends.neurons.snntorch_synaptic import SynapticAdapter
from lmh_deploy.frontends.neurons.sinabs import SUPPORTED as SINABS_SUPPORTED
from lmh_deploy.frontends.neurons.sinabs import SinabsAdapter, sinabs_class
from lmh_deploy.frontends.neurons.spikingjelly import SpikingJellyAdapter, unsupported_spikingjelly

#: tried in this order; register_neuron puts user adapters first
ADAPTERS: list[NeuronAdapter] = [
    LMHNeuronAdapter(),
    LearnableNeuronAdapter(),
    SynapticAdapter(),
    LeakyAdapter(),
    SpikingJellyAdapter(),
    NorseLIFBoxAdapter(),
    NorseLIFAdapter(),
    SinabsAdapter(),
    RockpoolLIFAdapter(),
]


def register_neuron(adapter: NeuronAdapter, *, first: bool = True) -> NeuronAdapter:
    """Register ``adapter``; by default it is tried before the built-in ones."""
    if not isinstance(adapter, NeuronAdapter):
        raise TypeError(f"register_neuron needs a NeuronAdapter, got {type(adapter).__name__}")
    ADAPTERS.insert(0 if first else len(ADAPTERS), adapter)
    return adapter


def find_adapter(module: nn.Module) -> NeuronAdapter | None:
    """The first registered adapter that recognises ``module``, or None."""
    return next((a for a in ADAPTERS if a.matches(module)), None)


def adapter_for(module: nn.Module, where: str) -> NeuronAdapter:
    """The adapter of a module known to be a neuron; one line naming it if none (any more)."""
    adapter = find_adapter(module)
    if adapter is None:
        raise NeuronError(
            f"{where} ({type(module).__name__}): no registered neuron adapter "
            f"recognises it (registered: {', '.join(registered_names())})"
        )
    return adapter


#: spiking neurons of known libraries that no adapter maps, and why
UNSUPPORTED_NEURONS: dict[str, str] = {
    "RLeaky": "recurrent feedback of the layer's own spikes (all-to-all or one-to-one) has no IR "
    "synapse; use snn.Leaky (feed-forward)",
    "RSynaptic": "recurrent feedback of the layer's own spikes (all-to-all or one-to-one) has no IR "
    "synapse; use snn.Synaptic (feed-forward)",
}


#: norse cells that no adapter maps, and why
UNSUPPORTED_NORSE = {
    "LIF": "it runs all time steps in one call (time-major input); use norse.torch.LIFCell in "
    "SequentialState called once per step",
    "LIFRecurrentCell": "recurrent feedback of the layer's own spikes has no IR synapse; use "
    "norse.torch.LIFCell",
    "LILinearCell": "a leaky integrator with its own weights; use torch.nn.Linear followed by "
    "norse.torch.LICell",
}


def unsupported_neuron(module: nn.Module) -> str | None:
    """Why a known library's spiking neuron without an adapter cannot be deployed; None if
    ``module`` is not such a neuron."""
    if find_adapter(module) is not None:
        return None
    kind = type(module).__name__
    supported = f"(supported neurons: {', '.join(registered_names())})"
    base = snntorch_class("SpikingNeuron")
    if base is not None and isinstance(module, base):
        why = UNSUPPORTED_NEURONS.get(kind, "no adapter maps this neuron")
        return f"snn.{kind} cannot be deployed: {why} {supported}"
    if LEAKY_READOUT.matches(module):
        return None  # a readout (the frontend maps it there)
    spikingjelly = unsupported_spikingjelly(module)
    if spikingjelly is not None:
        return spikingjelly
    snn = sys.modules.get("norse.torch.module.snn")
    cells = (
        tuple(getattr(snn, c) for c in ("SNNCell", "SNNRecurrentCell", "SNN", "SNNRecurrent")) if snn else ()
    )
    rockpool_neurons = tuple(c for c in (lif_class("LIFBaseTorch"), *_rockpool_others()) if c is not None)
    if rockpool_neurons and isinstance(module, rockpool_neurons):
        return f"rockpool {kind} cannot be deployed: no adapter maps it; supported: {ROCKPOOL_SUPPORTED}"
    stateful = sinabs_class("StatefulLayer")
    if stateful is not None and isinstance(module, stateful):
        return f"sinabs {kind} cannot be deployed: no adapter maps this layer; supported: {SINABS_SUPPORTED}"
    if kind in UNSUPPORTED_NORSE or (cells and isinstance(module, cells)):
        why = UNSUPPORTED_NORSE.get(kind, "no adapter maps this cell")
        return f"norse {kind} cannot be deployed: {why} {supported}"
    return None


def _rockpool_others() -> list[type | None]:
    """rockpool's other torch neurons and synapses (LIFNeuronTorch, ExpSynTorch, ...)."""
    found: list[type | None] = []
    for module, name in (
        ("lif_neuron_torch", "LIFNeuronTorch"),
        ("exp_syn_torch", "ExpSynTorch"),
        ("rate_torch", "RateTorch"),
        ("updown_torch", "UpDownTorch"),
        ("lowpass", "LowPass"),
    ):
        mod = sys.modules.get(f"rockpool.nn.modules.torch.{module}")
        found.append(getattr(mod, name, None) if mod is not None else None)
    return found


def registered_names() -> list[str]:
    """Adapter names, in the order they are tried."""
    return [a.name for a in ADAPTERS]


__all__ = [
    "ADAPTERS",
    "LEAKY_READOUT",
    "NeuronAdapter",
    "NeuronError",
    "NeuronSpec",
    "adapter_for",
    "as_factor",
    "find_adapter",
    "register_neuron",
    "registered_names",
    "scalar",
    "unsupported_neuron",
]
