"""The paper's own neurons (hzc1208/STBP_LMH ``modules.LearnableNeuron`` and
``OnlineNeuron``, whose eval dynamics and state_dict are the same), per-step mode (the
time-batched ``use_TEBN`` mode is rewritten to it by :mod:`lmh_deploy.frontends.time_batched`).

Recognised by its parameters ``v_threshold, alpha_1, beta_1, alpha_2, beta_2`` (each of
shape [1]), not by its class name. The official forward is, per call (one time step)::

    v_d = (sig(alpha_1) - 0.5) v_d + (sig(beta_1) - 0.5) v_s + x
    v_s = (sig(alpha_2) + 0.5) v_s + (sig(beta_2) + 0.5) v_d
    out = (v_s >= v_threshold) * v_threshold;  v_s -= out

with ``v_d = 0``, ``v_s = v_threshold / 2`` on the first call after ``reset()``. Hence
``alpha_1 -> mu_d``, ``beta_1 -> mu_s``, ``alpha_2 -> lam_s``, ``beta_2 -> lam_d``,
``v_threshold -> theta`` (also the spike amplitude): exactly LM-H's default rules.
"""

from __future__ import annotations

from typing import Any

import torch

from lmh_deploy.frontends.neurons.base import (
    NeuronAdapter,
    NeuronError,
    NeuronSpec,
    own_tensor,
    scalar,
)

#: parameter -> (LM-H factor, shift added to its sigmoid)
PARAMETERS = {
    "alpha_1": ("mu_d", -0.5),
    "beta_1": ("mu_s", -0.5),
    "alpha_2": ("lam_s", 0.5),
    "beta_2": ("lam_d", 0.5),
}


class LearnableNeuronAdapter(NeuronAdapter):
    """STBP_LMH LearnableNeuron (and look-alikes with the same parameters)."""

    name = "stbp-lmh-learnable"

    def matches(self, module: Any) -> bool:
        return all(isinstance(own_tensor(module, p), torch.Tensor) for p in ("v_threshold", *PARAMETERS))

    def spec(self, module: Any, where: str) -> NeuronSpec:
        if getattr(module, "use_SEW", False):
            raise NeuronError(
                f"{where}: use_SEW=True (SEW ResNet's multi-step mode on spikingjelly containers) "
                f"is not supported; build the network per step or with use_TEBN=True"
            )
        if getattr(module, "use_TEBN", False):
            raise NeuronError(
                f"{where}: use_TEBN=True runs all time steps in one call; trace the whole "
                f"network (module_to_graph rewrites it to its per-step equivalent)"
            )
        theta = scalar(module.v_threshold, "v_threshold", where)
        if theta <= 0:
            raise NeuronError(f"{where}: v_threshold must be > 0, got {theta:g}")
        factors = {}
        for param, (factor, shift) in PARAMETERS.items():
            value = scalar(getattr(module, param), param, where)
            factors[factor] = (
                torch.sigmoid(torch.tensor(value, dtype=torch.float64)).numpy().reshape(1, 1) + shift
            )
        return NeuronSpec(theta=theta, amplitude=theta, factors=factors, v_s_init=theta / 2)

    def reset(self, module: Any) -> None:
        """The official ``reset()`` (t = 0: the next call re-initialises the state)."""
        if callable(getattr(module, "reset", None)):
            module.reset()
        else:
            module.t = 0
