"""rockpool ``LIFTorch`` (read from rockpool 3.1.0's source, ``nn/modules/torch/lif_torch.py``).

``LIFTorch.forward`` takes ``(batch, time, n_synapses)`` and runs all steps in one call; per
step, with ``alpha = exp(-dt / tau_mem)`` and ``beta = exp(-dt / tau_syn)`` (``leak_mode``
"taus"; "decays" gives alpha and beta themselves, "bitshifts" ``1 - 2**-dash``)::

    isyn = beta (isyn + x)                 (the input enters, then the current decays)
    vmem = alpha vmem + isyn + bias
    s    = (vmem >= thr) floor(vmem / thr), capped at max_spikes_per_dt   (StepPWL)
    vmem = vmem - s thr

states start at 0; a step sends its spike count. It keeps batch element 0's state between
calls (``self.vmem = vmem[0]``), so one call of a ``(B, T, N)`` batch from a fresh state is
the run that is deployed (:func:`lmh_deploy.frontends.rockpool.per_step_view`).

LM-H form, in units of the neuron's threshold (``thr``): the dendrite is the synaptic current
plus the bias, ``v_d = (isyn + bias) / thr``: ``mu_d = beta``, a constant drive ``bias (1 -
beta) / thr`` per step, initial ``bias / thr`` (the IR's ``v_d_init``, one value per neuron
where the bias is trained, rockpool's default); ``mu_s = 0``, ``lam_d = 1``, ``lam_s =
alpha``, theta 1, ``>=``, subtractive reset, graded spikes (``max_spikes``:
``max_spikes_per_dt``, the default 2**16 capped at
:data:`~lmh_deploy.semantics.integer.MAX_SPIKES`, the most one 8-bit message holds). The input
gain ``beta / thr`` is folded into the rows of the ``LinearTorch`` before the neuron by
``per_step_view``; the spec below assumes it. A current decay above 1/2 (0.95 at rockpool's
default 20 ms and dt = 1 ms) deploys under ``--profile cuba`` (docs/fixed-point.md §11).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from lmh_deploy.frontends.neurons.base import NeuronAdapter, NeuronError, NeuronSpec
from lmh_deploy.semantics.integer import MAX_SPIKES

LIF_MODULE = "rockpool.nn.modules.torch.lif_torch"
SUPPORTED = (
    "rockpool LinearTorch -> LIFTorch (has_rec=False, noise_std=0, one synapse per neuron, "
    "StepPWL or PeriodicExponential spikes) in a rockpool Sequential"
)


def lif_class(name: str = "LIFTorch") -> type | None:
    """``rockpool.nn.modules.torch.lif_torch.<name>`` if rockpool is already imported."""
    mod = sys.modules.get(LIF_MODULE)
    return getattr(mod, name, None) if mod is not None else None


def _values(tensor: Any, n: int) -> np.ndarray:
    """A rockpool parameter (a scalar, ``(n,)`` or ``(n, 1)``) as ``n`` float64 values."""
    arr = np.asarray(tensor.detach().cpu().double().numpy(), np.float64)
    return np.broadcast_to(arr.reshape(-1) if arr.size > 1 else arr.reshape(()), (n,)).copy()


def decays(module: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha, beta)`` per neuron, as the module's forward reads them (float32 values)."""
    n = int(module.size_out)
    alpha, beta = _values(module.alpha, n), _values(module.beta, n)
    for what, arr in (("membrane decay alpha", alpha), ("synaptic decay beta", beta)):
        if not np.all((arr > 0) & (arr < 1)):
            raise NeuronError(f"{where}: {what} must lie in (0, 1), got {arr.min():g}..{arr.max():g}")
    return alpha, beta


def thresholds(module: Any, where: str) -> np.ndarray:
    """The threshold of each neuron (> 0)."""
    thr = _values(module.threshold, int(module.size_out))
    if not np.all(thr > 0):
        raise NeuronError(f"{where}: threshold must be > 0, got {thr.min():g}")
    return thr


def input_gain(module: Any, where: str) -> np.ndarray:
    """``beta / thr`` per neuron: what ``per_step_view`` multiplies the weight rows into the
    neuron by (the current decays before the membrane reads it; states in threshold units)."""
    return decays(module, where)[1] / thresholds(module, where)


class RockpoolLIFAdapter(NeuronAdapter):
    """rockpool LIFTorch (the exact class; LIFBitshiftTorch, aLIFTorch, ... are refused)."""

    name = "rockpool-lif"
    graded_spikes = True

    def matches(self, module: Any) -> bool:
        cls = lif_class()
        return cls is not None and type(module) is cls

    def spec(self, module: Any, where: str) -> NeuronSpec:
        if bool(module._has_rec):
            raise NeuronError(
                f"{where}: recurrent weights (has_rec=True) have no IR synapse; supported: {SUPPORTED}"
            )
        if float(module.noise_std) != 0.0:
            raise NeuronError(
                f"{where}: membrane noise (noise_std={float(module.noise_std):g}) is not deployable; "
                f"set noise_std=0"
            )
        if int(module.n_synapses) != 1:
            raise NeuronError(
                f"{where}: {int(module.n_synapses)} synapses per neuron (shape {tuple(module.shape)}); "
                f"supported: {SUPPORTED}"
            )
        fn = getattr(module.spike_generation_fn, "__self__", None)
        if fn not in (lif_class("StepPWL"), lif_class("PeriodicExponential")):
            raise NeuronError(
                f"{where}: spike_generation_fn {getattr(fn, '__name__', fn)} is not supported; "
                f"supported: {SUPPORTED}"
            )
        alpha, beta = decays(module, where)
        n = int(module.size_out)
        offset = _values(module.bias, n) / thresholds(module, where)  # the bias in thresholds
        cap = float(module.max_spikes_per_dt)
        if cap < 1:
            raise NeuronError(f"{where}: max_spikes_per_dt={cap:g} must be >= 1")
        zeros, ones = np.zeros((1, 1)), np.ones((1, 1))
        return NeuronSpec(
            theta=1.0,
            amplitude=1.0,
            factors={"mu_d": beta[None], "mu_s": zeros, "lam_d": ones, "lam_s": alpha[None]},
            v_s_init=0.0,
            v_d_init=offset,  # per neuron (a trained bias); one number where all are equal
            bias=offset * (1.0 - beta),
            threshold_test=">=",
            reset="subtract",
            reset_timing="same-step",
            max_spikes=int(min(cap, MAX_SPIKES)),
        )

    def reset(self, module: Any) -> None:
        module.reset_state()

    def state_buffers(self, module: Any) -> list[str]:
        return ["vmem", "isyn", "spikes"]
