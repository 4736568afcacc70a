"""norse ``LIFBoxCell`` (checked against norse 1.1.0's source, ``functional/lif_box.py``).

Per step, with ``a = dt * tau_mem_inv``::

    v = v + a (x + v_leak - v)        spike z = v - v_th > 0 (heaviside: 0 at 0)
    reset_value (default): v = v_reset where z;   reset_subtract: v = v - v_th where z

states start at ``v_leak``; a spike sends 1. LM-H form (``mu_d = mu_s = 0``, ``lam_d = 1``):
``lam_s = 1 - a``, with the membrane in units of ``v / a`` so that the input enters with gain
1 (threshold, reset value and initial value divide by ``a``) and ``v_leak`` a constant drive
per step (the neuron's bias); ``>`` test, same-step reset. norse cells take and return their
state explicitly (``z, s = cell(x, s)``); :meth:`NorseLIFBoxAdapter.step_hooks` keeps it in
the adapter so that ``SequentialState`` called once per step without a state list runs as
``out, state = model(x, state)`` does.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from lmh_deploy.frontends.neurons.base import NeuronAdapter, NeuronError, NeuronSpec, scalar


def norse_class(module: str, name: str) -> type | None:
    """``norse.torch.module.<module>.<name>`` if norse is already imported."""
    mod = sys.modules.get(f"norse.torch.module.{module}")
    return getattr(mod, name, None) if mod is not None else None


class NorseLIFBoxAdapter(NeuronAdapter):
    """norse.torch.LIFBoxCell."""

    name = "norse-lif-box"

    def __init__(self) -> None:
        self.states: dict[int, Any] = {}

    def matches(self, module: Any) -> bool:
        cls = norse_class("lif_box", "LIFBoxCell")
        return cls is not None and type(module) is cls

    def spec(self, module: Any, where: str) -> NeuronSpec:
        p = module.p
        a = float(module.dt) * scalar(p.tau_mem_inv, "p.tau_mem_inv", where)
        if not 0 < a <= 1:
            raise NeuronError(f"{where}: dt * tau_mem_inv = {a:g} must be in (0, 1] (a decaying membrane)")
        v_th = scalar(p.v_th, "p.v_th", where)
        if v_th <= 0:
            raise NeuronError(f"{where}: v_th must be > 0, got {v_th:g}")
        kind = getattr(p.reset_method, "__name__", str(p.reset_method))
        if kind == "reset_value":
            rules: dict[str, Any] = {"reset": "set", "reset_value": scalar(p.v_reset, "p.v_reset", where) / a}
        elif kind == "reset_subtract":
            rules = {"reset": "subtract"}
        else:
            raise NeuronError(f"{where}: reset_method {kind} is not supported (reset_value, reset_subtract)")
        v_leak = scalar(p.v_leak, "p.v_leak", where)
        zeros, ones = np.zeros((1, 1)), np.ones((1, 1))
        return NeuronSpec(
            theta=v_th / a,
            amplitude=1.0,
            factors={"mu_d": zeros, "mu_s": zeros, "lam_d": ones, "lam_s": np.full((1, 1), 1.0 - a)},
            v_s_init=v_leak / a,
            threshold_test=">",
            reset_timing="same-step",
            bias=v_leak,
            tuple_output=True,
            **rules,
        )

    def reset(self, module: Any) -> None:
        self.states.pop(id(module), None)

    def step_hooks(self, module: Any) -> list[Any]:
        def give_state(mod: Any, args: tuple) -> tuple | None:
            if len(args) < 2 or args[1] is None:
                return (args[0], self.states.get(id(mod)))
            return None

        def keep_state(mod: Any, args: tuple, out: Any) -> None:
            self.states[id(mod)] = out[1]

        return [module.register_forward_pre_hook(give_state), module.register_forward_hook(keep_state)]
