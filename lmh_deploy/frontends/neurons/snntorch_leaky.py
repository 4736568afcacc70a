"""snnTorch ``snn.Leaky`` (checked against snntorch 1.0.0's source; docs/interop.md).

``U[t] = clamp(beta, 0, 1) U[t-1] + I[t]``, spike ``S = U > threshold`` (strict), states
start at 0, a spike sends ``graded_spikes_factor``. LM-H form: ``mu_d = mu_s = 0``,
``lam_d = 1``, ``lam_s = beta``. Reset rules by ``reset_mechanism`` / ``reset_delay``:

* ``subtract``, ``reset_delay=True`` (default): ``U[t] -= threshold * S[t-1]`` (next-step);
* ``zero`` (either delay): snnTorch zeroes the stored U before the decay and keeps the new
  input, which is the same spike train as setting U to 0 at the spike (same-step set 0);
* ``subtract``, ``reset_delay=False``: refused ("avoid double reset" makes a reset that
  leaves U > threshold raise the next test to 2 threshold; no IR rule expresses it);
* ``none``, ``inhibition``, ``state_quant``: refused.
"""

from __future__ import annotations

from typing import Any

import sys

import numpy as np

from lmh_deploy.frontends.neurons.base import (
    NeuronAdapter,
    NeuronError,
    NeuronSpec,
    as_factor,
    scalar,
)

RESETS = {0: "subtract", 1: "zero", 2: "none"}


def snntorch_class(name: str) -> type | None:
    """``snntorch.<name>`` if snntorch is already imported (a module using it imported it)."""
    snn = sys.modules.get("snntorch")
    return getattr(snn, name, None) if snn is not None else None


def common_spec(module: Any, where: str, kind: str) -> dict:
    """Threshold, amplitude, reset rules and tuple-ness shared by Leaky and Synaptic."""
    for flag, why in (
        ("inhibition", "winner-take-all inhibition couples the neurons of a layer"),
        ("state_quant", "state quantisation in the forward pass"),
    ):
        if getattr(module, flag, False):
            raise NeuronError(f"{where}: snn.{kind}({flag}=...) cannot be deployed: {why}")
    mechanism = RESETS.get(int(module.reset_mechanism_val), "?")
    delay = bool(getattr(module, "reset_delay", True))
    if mechanism == "none":
        raise NeuronError(
            f"{where}: snn.{kind}(reset_mechanism='none') never resets; the "
            f"deployed neuron needs a reset (subtract or zero)"
        )
    if mechanism == "subtract" and not delay:
        raise NeuronError(
            f"{where}: snn.{kind}(reset_mechanism='subtract', reset_delay=False) "
            f"skips the spike after a reset that leaves mem > threshold (snnTorch's "
            f"'avoid double reset'); no deployable rule matches: use reset_delay=True "
            f"(the default) or reset_mechanism='zero'"
        )
    theta = scalar(module.threshold, "threshold", where)
    if theta <= 0:
        raise NeuronError(f"{where}: threshold must be > 0, got {theta:g}")
    amplitude = scalar(getattr(module, "graded_spikes_factor", 1.0), "graded_spikes_factor", where)
    if amplitude == 0:
        raise NeuronError(f"{where}: graded_spikes_factor = 0 sends nothing")
    if mechanism == "subtract":
        rules: dict[str, Any] = {"reset": "subtract", "reset_timing": "next-step"}
    else:
        rules = {"reset": "set", "reset_value": 0.0, "reset_timing": "same-step"}
    return {
        "theta": theta,
        "amplitude": amplitude,
        "threshold_test": ">",
        "v_s_init": 0.0,
        "tuple_output": bool(getattr(module, "output", False) or not getattr(module, "init_hidden", False)),
        **rules,
    }


def decay(value, name: str) -> np.ndarray:
    """snnTorch clamps its decays to [0, 1] in every forward pass."""
    return np.clip(as_factor(value), 0.0, 1.0)


class LeakyAdapter(NeuronAdapter):
    """snntorch.Leaky."""

    name = "snntorch-leaky"

    def matches(self, module: Any) -> bool:
        cls = snntorch_class("Leaky")
        return cls is not None and isinstance(module, cls)

    def spec(self, module: Any, where: str) -> NeuronSpec:
        common = common_spec(module, where, "Leaky")
        zeros = np.zeros((1, 1))
        factors = {
            "mu_d": zeros,
            "mu_s": zeros,
            "lam_d": np.ones((1, 1)),
            "lam_s": decay(module.beta, "beta"),
        }
        return NeuronSpec(factors=factors, **common)

    def reset(self, module: Any) -> None:
        module.reset_mem()
