"""This project's :class:`~lmh_deploy.models.neuron.LMHNeuron` (Eq. 4; time-major input).

Mapping: ``factor_table()`` gives mu_d, mu_s, lam_d, lam_s directly ((K, C): K time rows,
C channels or 1); theta is the threshold and the spike amplitude; the rules are the
module's own (``rules()``: LM-H's subtractive reset, ``>=``, ``v_s = theta / 2`` at the start,
or, for ``--neuron lif``, Lava LIF's set to 0, ``>``, start at 0).
"""

from __future__ import annotations

from typing import Any


from lmh_deploy.frontends.neurons.base import NeuronAdapter, NeuronSpec
from lmh_deploy.models.neuron import LMHNeuron


class LMHNeuronAdapter(NeuronAdapter):
    """lmh_deploy.models.neuron.LMHNeuron."""

    name = "lmh"

    def matches(self, module: Any) -> bool:
        return isinstance(module, LMHNeuron)

    def spec(self, module: Any, where: str) -> NeuronSpec:
        theta = float(module.theta)
        table = {k: v.detach().cpu().double().numpy() for k, v in module.factor_table().items()}
        return NeuronSpec(theta=theta, amplitude=theta, factors=table, **module.rules())

    def reset(self, module: Any) -> None:
        module.reset_state()

    def step_hooks(self, module: Any) -> list[Any]:
        """LMHNeuron integrates a (T, B, ...) tensor: feed it one step at a time, keeping state."""
        module.stateful = True
        return [
            module.register_forward_pre_hook(lambda mod, args: (args[0].unsqueeze(0),)),
            module.register_forward_hook(lambda mod, args, out: out.squeeze(0)),
        ]
