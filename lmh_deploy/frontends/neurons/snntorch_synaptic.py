"""snnTorch ``snn.Synaptic`` (checked against snntorch 1.0.0's source; docs/interop.md).

``syn[t] = alpha syn[t-1] + I[t]``, ``U[t] = beta U[t-1] + syn[t]`` (decays clamped to
[0, 1]), spike ``U > threshold``, states from 0. LM-H form: the dendrite is the synaptic
current: ``mu_d = alpha``, ``mu_s = 0``, ``lam_d = 1``, ``lam_s = beta``. Resets:

* ``subtract``, ``reset_delay=True``: ``U[t] -= threshold * S[t-1]`` (next-step subtract);
* ``zero``, ``reset_delay=True``: ``U[t] = 0`` where ``S[t-1]`` (next-step set 0: unlike
  Leaky, Synaptic also discards that step's input, so no spike can follow a spike);
* ``zero``, ``reset_delay=False``: U set to 0 at the spike (same-step set 0);
* ``subtract`` with ``reset_delay=False``, ``none``, ``inhibition``: refused (see Leaky).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmh_deploy.frontends.neurons.base import NeuronAdapter, NeuronSpec
from lmh_deploy.frontends.neurons.snntorch_leaky import (
    common_spec,
    decay,
    snntorch_class,
)


class SynapticAdapter(NeuronAdapter):
    """snntorch.Synaptic."""

    name = "snntorch-synaptic"

    def matches(self, module: Any) -> bool:
        cls = snntorch_class("Synaptic")
        return cls is not None and isinstance(module, cls)

    def spec(self, module: Any, where: str) -> NeuronSpec:
        common = common_spec(module, where, "Synaptic")
        if common["reset"] == "set" and getattr(module, "reset_delay", True):
            common["reset_timing"] = "next-step"
        factors = {
            "mu_d": decay(module.alpha, "alpha"),
            "mu_s": np.zeros((1, 1)),
            "lam_d": np.ones((1, 1)),
            "lam_s": decay(module.beta, "beta"),
        }
        return NeuronSpec(factors=factors, **common)

    def reset(self, module: Any) -> None:
        module.reset_mem()
