"""sinabs ``layers.IAF``, ``IAFSqueeze``, ``LIF``, ``LIFSqueeze`` (read from sinabs 3.1.3's
source: ``layers/lif.py``, ``layers/iaf.py``, ``layers/functional/lif.py``,
``activation/spike_generation.py``, ``activation/reset_mechanism.py``).

Per step, with ``alpha = exp(-1 / tau_mem)`` (``alpha_mem`` itself with ``train_alphas``;
IAF: ``tau_mem = inf``, ``alpha = 1``)::

    norm_input (LIF default):  v = alpha v + (1 - alpha) x      IAF (norm_input=False): v = alpha v + x
    MultiSpike (default):      s = (v > 0) * trunc(v / thr)     (= clip(floor(v / thr), 0, inf))
    MaxSpike(n):               the same, capped at n;   SingleSpike: s = v - thr >= 0
    MembraneSubtract (default): v = v - s thr;   MembraneReset(r): v = r where s > 0
    min_v_mem (if set):         v = max(v, min_v_mem)

``v`` starts at 0; a spike sends 1 (several spikes send their count). LM-H form
(``mu_d = mu_s = 0``, ``lam_d = 1``): ``lam_s = alpha``, the membrane in units of
``v / (1 - alpha)`` under ``norm_input`` (the input then enters with gain 1; threshold and
reset value scale alike), ``>=`` test, same-step reset, and graded spikes
(:attr:`~lmh_deploy.ir.LMH.max_spikes`): ``MaxSpike(n)`` caps at n, ``MultiSpike`` (no cap in
sinabs) at :data:`MULTI_SPIKE_CAP`, the most one 8-bit graded message holds; ``min_v_mem``
is the soma floor ``v_s_min``. A per-neuron ``tau_mem`` under ``norm_input`` has no one unit:
:func:`lmh_deploy.frontends.sinabs.fold_norm_input` folds its gains into the layer before (the
adapter then sees ``norm_input=False``), and the adapter refuses the layers it cannot fold.

sinabs layers run all steps of a ``(batch, time, ...)`` input in one call (``IAF``, ``LIF``),
or of a ``(batch * time, ...)`` one (the ``Squeeze`` variants, reshaped by their
``batch_size`` / ``num_timesteps``); their state persists between calls until
``reset_states()``. :meth:`SinabsAdapter.step_hooks` calls them once per step on a
``(batch, ...)`` input, as one time step of that layout.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from lmh_deploy.frontends.neurons.base import NeuronAdapter, NeuronError, NeuronSpec, as_factor, scalar
from lmh_deploy.semantics.integer import MAX_SPIKES

LAYERS_MODULE = "sinabs.layers"
KINDS = ("IAF", "IAFSqueeze", "LIF", "LIFSqueeze")
#: Graded spikes of an uncapped ``MultiSpike`` layer: the largest count one message holds.
MULTI_SPIKE_CAP = MAX_SPIKES
SUPPORTED = (
    "sinabs.layers.IAF/IAFSqueeze/LIF/LIFSqueeze with tau_syn=None, spike_fn "
    "MultiSpike, MaxSpike(n) or SingleSpike, reset_fn MembraneSubtract() or MembraneReset()"
)


def sinabs_class(name: str) -> type | None:
    """``sinabs.layers.<name>`` if sinabs is already imported."""
    mod = sys.modules.get(LAYERS_MODULE)
    return getattr(mod, name, None) if mod is not None else None


def _max_spikes(module: Any, where: str) -> int:
    """K of the layer's spike function (1 for SingleSpike)."""
    fn = module.spike_fn
    kind = fn.__name__ if isinstance(fn, type) else type(fn).__name__
    if kind == "SingleSpike":
        return 1
    if kind == "MultiSpike":
        return MULTI_SPIKE_CAP
    if kind == "MaxSpike":
        cap = fn.max_num_spikes_per_bin
        if cap is None:
            return MULTI_SPIKE_CAP
        if not 1 <= int(cap) <= MAX_SPIKES:
            raise NeuronError(
                f"{where}: MaxSpike(max_num_spikes_per_bin={cap}) outside [1, {MAX_SPIKES}] "
                f"(one graded spike message); supported: {SUPPORTED}"
            )
        return int(cap)
    raise NeuronError(f"{where}: spike_fn {kind} is not supported; supported: {SUPPORTED}")


def _alpha(module: Any, where: str) -> np.ndarray:
    """The membrane decay per step (``alpha_mem_calculated``, what sinabs's forward uses: IAF
    1), per layer or per neuron, as a (1, *b) factor array."""
    alpha = np.asarray(module.alpha_mem_calculated.detach().cpu().double(), dtype=np.float64)
    if not np.all((alpha > 0) & (alpha <= 1)):
        raise NeuronError(f"{where}: membrane decay exp(-1/tau_mem) must lie in (0, 1]")
    return as_factor(alpha)


def per_neuron_input_gain(module: Any) -> np.ndarray | None:
    """``1 - alpha`` (the array, as the layer broadcasts it) of a sinabs ``LIF`` /
    ``LIFSqueeze`` with ``norm_input`` whose ``tau_mem`` differs between neurons, else None."""
    if not any(type(module) is sinabs_class(kind) for kind in ("LIF", "LIFSqueeze")):
        return None
    if not bool(getattr(module, "norm_input", False)):
        return None
    gain = 1.0 - np.asarray(module.alpha_mem_calculated.detach().cpu().double(), dtype=np.float64)
    return gain if gain.size > 1 and np.ptp(gain) > 0 else None


class SinabsAdapter(NeuronAdapter):
    """sinabs IAF, IAFSqueeze, LIF, LIFSqueeze (exact classes, not subclasses)."""

    name = "sinabs-iaf-lif"
    graded_spikes = True

    def matches(self, module: Any) -> bool:
        return any(type(module) is sinabs_class(kind) for kind in KINDS)

    def spec(self, module: Any, where: str) -> NeuronSpec:
        if module.tau_syn is not None:
            raise NeuronError(
                f"{where}: a synaptic current (tau_syn) is not supported; supported: {SUPPORTED}"
            )
        if module.spike_threshold is None:
            raise NeuronError(f"{where}: spike_threshold=None is not supported; supported: {SUPPORTED}")
        thr = scalar(module.spike_threshold, "spike_threshold", where)
        if thr <= 0:
            raise NeuronError(f"{where}: spike_threshold must be > 0, got {thr:g}")
        k = _max_spikes(module, where)
        alpha = _alpha(module, where)
        if bool(getattr(module, "norm_input", False)):
            gain = 1.0 - alpha  # input gain (1 - alpha): membrane in units of v / (1 - alpha)
            if np.ptp(gain) > 0:  # not folded into the layer before (frontends/sinabs.py)
                raise NeuronError(
                    f"{where}: norm_input with per-neuron tau_mem needs its per-neuron input gain "
                    f"1 - exp(-1/tau_mem) folded into the rows of the layer before: put an "
                    f"nn.Linear (or an nn.Conv2d with one tau_mem per output channel) right before "
                    f"it in an nn.Sequential, or use norm_input=False"
                )
            scale = 1.0 / float(gain.reshape(-1)[0])
        else:
            scale = 1.0
        reset = module.reset_fn
        kind = type(reset).__name__
        rules: dict[str, Any]
        if kind == "MembraneSubtract":
            value = reset.subtract_value
            if value is not None and not math.isclose(float(value), thr):
                raise NeuronError(
                    f"{where}: MembraneSubtract(subtract_value={value}) differs from the threshold; "
                    f"supported: {SUPPORTED} (subtract_value None)"
                )
            rules = {"reset": "subtract"}
        elif kind == "MembraneReset":
            rules = {"reset": "set", "reset_value": scale * float(reset.reset_value)}
        else:
            raise NeuronError(f"{where}: reset_fn {kind} is not supported; supported: {SUPPORTED}")
        zeros, ones = np.zeros((1, 1)), np.ones((1, 1))
        return NeuronSpec(
            theta=scale * thr,
            amplitude=1.0,
            factors={"mu_d": zeros, "mu_s": zeros, "lam_d": ones, "lam_s": alpha},
            v_s_init=0.0,
            threshold_test=">=",
            reset_timing="same-step",
            max_spikes=k,
            v_s_min=None
            if module.min_v_mem is None
            else scale * scalar(module.min_v_mem, "min_v_mem", where),
            **rules,
        )

    def reset(self, module: Any) -> None:
        module.reset_states()

    def state_buffers(self, module: Any) -> list[str]:
        return [name for name, _ in module.named_buffers(recurse=False)]  # v_mem (i_syn)

    def step_hooks(self, module: Any) -> list[Any]:
        """Call the layer on one step's ``(batch, ...)``: a time axis of length 1 added before
        and removed after (``IAF``, ``LIF``), or the squeeze layout ``(batch * 1, ...)``."""
        if hasattr(module, "squeeze_forward"):
            saved = (module.batch_size, module.num_timesteps)

            def one_step(mod: Any, args: tuple) -> None:
                mod.batch_size, mod.num_timesteps = -1, 1

            def restore(mod: Any, args: tuple, out: Any) -> None:
                mod.batch_size, mod.num_timesteps = saved

            return [module.register_forward_pre_hook(one_step), module.register_forward_hook(restore)]

        def add_time(mod: Any, args: tuple) -> tuple:
            return (args[0].unsqueeze(1),)

        def drop_time(mod: Any, args: tuple, out: Any) -> Any:
            return out.squeeze(1)

        return [module.register_forward_pre_hook(add_time), module.register_forward_hook(drop_time)]
