"""SpikingJelly ``neuron.IFNode`` / ``LIFNode`` / ``ParametricLIFNode`` (activation_based).

Read from spikingjelly 2.0.0's source (``neuron/lif.py``, ``plif.py``, ``integrate_and_fire.py``,
``functional/neuron.py``); per step, with ``H`` the charged membrane::

    IF                   H = V + X
    LIF, decay_input     H = V + (X - (V - V_reset)) / tau
    LIF, not decay_input H = V - (V - V_reset) / tau + X
    ParametricLIF        as LIF with 1 / tau = sigmoid(w) (w learned)
    spike  S = H >= V_threshold      (heaviside(H - V_threshold), 1 at 0)
    reset  hard (v_reset a number): V = V_reset where S;  soft (v_reset=None): V = H - S V_threshold

with ``V_reset`` read as 0 in the charge for a soft reset, ``V`` starting at ``V_reset`` (hard)
or 0 (soft), and a spike sending 1. LM-H form (``mu_d = mu_s = 0``): ``lam_s = 1 - 1/tau``;
with ``decay_input`` the membrane is taken in units of ``tau V`` so that the input enters
with gain 1 (threshold, reset value and initial value scale by tau); the leak toward
``V_reset`` is a constant drive per step (the neuron's bias). Same-step reset, ``>=`` test.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from lmh_deploy.frontends.neurons.base import NeuronAdapter, NeuronError, NeuronSpec, scalar

NEURON_MODULE = "spikingjelly.activation_based.neuron"
KINDS = ("IFNode", "LIFNode", "ParametricLIFNode")
SUPPORTED = (
    "neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode (the classes themselves; "
    "hard or soft reset, decay_input either way, single- or multi-step)"
)


def spikingjelly_class(name: str) -> type | None:
    """``spikingjelly.activation_based.neuron.<name>`` if SpikingJelly is already imported."""
    mod = sys.modules.get(NEURON_MODULE)
    return getattr(mod, name, None) if mod is not None else None


def inverse_tau(module: Any, where: str) -> float:
    """1 / tau of a LIF or ParametricLIF node (IF: 0, no leak)."""
    if type(module).__name__ == "IFNode" or not hasattr(module, "decay_input"):
        return 0.0
    if hasattr(module, "w") and not hasattr(module, "tau"):  # ParametricLIFNode
        return 1.0 / (1.0 + float(np.exp(-scalar(module.w, "w", where))))
    return 1.0 / scalar(module.tau, "tau", where)


def unsupported_spikingjelly(module: Any) -> str | None:
    """Why a SpikingJelly neuron that no adapter maps cannot be deployed (any class of its
    ``neuron`` package, or a subclass of its ``BaseNode``); None if ``module`` is not one."""
    mod = sys.modules.get(NEURON_MODULE)
    if mod is None:
        return None
    kind = type(module).__name__
    base = getattr(mod, "BaseNode", None)
    own = type(module).__module__.startswith(NEURON_MODULE + ".")
    if not (own or (base and isinstance(module, base))):
        return None
    label = f"neuron.{kind}" if own else kind
    mapped = tuple(c for c in map(spikingjelly_class, KINDS) if c is not None)
    if isinstance(module, mapped):  # a user's subclass: its forward may change the dynamics
        parent = next(c.__name__ for c in mapped if isinstance(module, c))
        why = f"a subclass of neuron.{parent}; only the class itself is mapped"
    else:
        why = "no adapter maps this neuron"
    return f"SpikingJelly {label} cannot be deployed: {why}; supported SpikingJelly neurons: {SUPPORTED}"


class SpikingJellyAdapter(NeuronAdapter):
    """SpikingJelly IFNode, LIFNode, ParametricLIFNode (exact classes, not subclasses)."""

    name = "spikingjelly-if-lif-plif"

    def matches(self, module: Any) -> bool:
        return any(type(module) is spikingjelly_class(kind) for kind in KINDS)

    def spec(self, module: Any, where: str) -> NeuronSpec:
        v_th = scalar(module.v_threshold, "v_threshold", where)
        if v_th <= 0:
            raise NeuronError(f"{where}: v_threshold must be > 0, got {v_th:g}")
        hard = module.v_reset is not None
        v_reset = scalar(module.v_reset, "v_reset", where) if hard else 0.0
        k = inverse_tau(module, where)
        decay_input = bool(getattr(module, "decay_input", False)) and k > 0
        scale = 1.0 / k if decay_input else 1.0  # membrane in units of tau V: input gain 1
        drive = v_reset if decay_input else k * v_reset  # the leak toward V_reset, per step
        zeros, ones = np.zeros((1, 1)), np.ones((1, 1))
        factors = {"mu_d": zeros, "mu_s": zeros, "lam_d": ones, "lam_s": np.full((1, 1), 1.0 - k)}
        rules: dict[str, Any] = (
            {"reset": "set", "reset_value": scale * v_reset} if hard else {"reset": "subtract"}
        )
        return NeuronSpec(
            theta=scale * v_th,
            amplitude=1.0,
            factors=factors,
            v_s_init=scale * v_reset,
            threshold_test=">=",
            reset_timing="same-step",
            bias=drive,
            **rules,
        )

    def reset(self, module: Any) -> None:
        module.reset()
