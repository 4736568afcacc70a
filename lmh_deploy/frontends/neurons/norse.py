"""norse ``LIFBoxCell`` and ``LIFCell`` (checked against norse 1.1.0's source,
``functional/lif_box.py`` and ``functional/lif.py``).

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

``LIFCell`` (current-based, ``lif_feed_forward_step``), with ``b = dt * tau_syn_inv``::

    i = i + x                          (this step's input enters at once)
    v = v + a (v_leak - v + i)         spike, reset as LIFBoxCell (reset to v_reset)
    i = (1 - b) i

LM-H form: the dendrite is ``i + v_leak`` (``mu_d = 1 - b``, a constant drive ``v_leak b``,
initial ``v_leak``), ``lam_d = 1``, ``lam_s = 1 - a``, the membrane in units of ``v / a``.
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


def euler_decay(module: Any, rate: str, where: str) -> float:
    """``dt * p.<rate>`` of a norse cell: the fraction that decays per step, in (0, 1]."""
    a = float(module.dt) * scalar(getattr(module.p, rate), f"p.{rate}", where)
    if not 0 < a <= 1:
        raise NeuronError(f"{where}: dt * {rate} = {a:g} must be in (0, 1] (a decaying state)")
    return a


class NorseStateKeeper(NeuronAdapter):
    """A norse cell called once per step without its state: the state is kept here."""

    def __init__(self) -> None:
        self.states: dict[int, Any] = {}

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


class NorseLIFBoxAdapter(NorseStateKeeper):
    """norse.torch.LIFBoxCell."""

    name = "norse-lif-box"
    cell = ("lif_box", "LIFBoxCell")
    #: the dendrite's decay rate (None: no synaptic current)
    syn_rate: str | None = None

    def matches(self, module: Any) -> bool:
        cls = norse_class(*self.cell)
        return cls is not None and type(module) is cls

    def spec(self, module: Any, where: str) -> NeuronSpec:
        p = module.p
        a = euler_decay(module, "tau_mem_inv", where)
        v_th = scalar(p.v_th, "p.v_th", where)
        if v_th <= 0:
            raise NeuronError(f"{where}: v_th must be > 0, got {v_th:g}")
        method = getattr(p, "reset_method", None)  # LIFCell: always to v_reset
        kind = "reset_value" if method is None else getattr(method, "__name__", str(method))
        if kind == "reset_value":
            rules: dict[str, Any] = {"reset": "set", "reset_value": scalar(p.v_reset, "p.v_reset", where) / a}
        elif kind == "reset_subtract":
            rules = {"reset": "subtract"}
        else:
            raise NeuronError(f"{where}: reset_method {kind} is not supported (reset_value, reset_subtract)")
        v_leak = scalar(p.v_leak, "p.v_leak", where)
        # the dendrite holds i + v_leak: decaying by mu_d, it needs v_leak (1 - mu_d) per step
        b = 1.0 if self.syn_rate is None else euler_decay(module, self.syn_rate, where)
        zeros, ones = np.zeros((1, 1)), np.ones((1, 1))
        return NeuronSpec(
            theta=v_th / a,
            amplitude=1.0,
            factors={
                "mu_d": np.full((1, 1), 1.0 - b),
                "mu_s": zeros,
                "lam_d": ones,
                "lam_s": np.full((1, 1), 1.0 - a),
            },
            v_s_init=v_leak / a,
            v_d_init=0.0 if self.syn_rate is None else v_leak,
            threshold_test=">",
            reset_timing="same-step",
            bias=v_leak * b,
            tuple_output=True,
            **rules,
        )


class NorseLIFAdapter(NorseLIFBoxAdapter):
    """norse.torch.LIFCell (current-based: the synaptic current is the dendrite)."""

    name = "norse-lif"
    cell = ("lif", "LIFCell")
    syn_rate = "tau_syn_inv"

    def spec(self, module: Any, where: str) -> NeuronSpec:
        if getattr(module.p, "method", "super") == "adjoint":
            raise NeuronError(f"{where}: LIFParameters(method='adjoint') is not supported; use 'super'")
        return super().spec(module, where)


class NorseLeakyReadout(NorseStateKeeper):
    """norse.torch.LICell / LIBoxCell as the network's readout: a leaky integrator of the
    readout current (no spikes). ``LICell``: ``i = i + x; v = v + a (v_leak - v + i); i = (1 -
    b) i``; ``LIBoxCell``: ``v = v + a (v_leak - v + x)``. Its voltage per step is the model
    output; the logits are its mean over the steps."""

    name = "norse-leaky-readout"
    cells = (("leaky_integrator", "LICell"), ("leaky_integrator_box", "LIBoxCell"))

    def matches(self, module: Any) -> bool:
        return any(type(module) is norse_class(*cell) for cell in self.cells)

    def leaky(self, module: Any, where: str) -> np.ndarray:
        """``(mu, lam, gain)``: ``i = mu i + x``, ``v = lam v + gain i`` (v_leak must be 0)."""
        a = euler_decay(module, "tau_mem_inv", where)
        syn = type(module).__name__ == "LICell"
        b = euler_decay(module, "tau_syn_inv", where) if syn else 1.0
        v_leak = scalar(module.p.v_leak, "p.v_leak", where)
        if v_leak != 0:
            raise NeuronError(
                f"{where}: a leaky-integrator readout with v_leak = {v_leak:g}; only v_leak = 0 "
                f"is supported (it adds the same constant to every class)"
            )
        return np.array([1.0 - b, 1.0 - a, a])


#: the one instance whose hooks keep the readout cells' states during a source run
LEAKY_READOUT = NorseLeakyReadout()
