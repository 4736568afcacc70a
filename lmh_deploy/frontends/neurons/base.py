"""Base types of the neuron adapters (see :mod:`lmh_deploy.frontends.neurons`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from lmh_deploy.errors import UserError

FACTOR_NAMES = ("mu_d", "mu_s", "lam_d", "lam_s")


class NeuronError(UserError, ValueError):
    """A neuron module whose behaviour the IR cannot represent (one line: module path, cause)."""


@dataclass(frozen=True)
class NeuronSpec:
    """One neuron layer, in the source model's own terms.

    ``factors`` maps mu_d, mu_s, lam_d, lam_s to arrays of shape (K, *b): K time rows
    (1 unless factors change per step) and ``b`` broadcastable to one sample's feature
    shape (a scalar per layer: ``b = (1,)``). ``amplitude`` is what one spike sends to the
    next layer in the source (LM-H: theta; snnTorch: graded_spikes_factor, 1.0).
    """

    theta: float
    amplitude: float
    factors: dict[str, np.ndarray]
    v_s_init: float
    #: the initial dendrite: a number, or one value per neuron (rockpool's per-neuron bias)
    v_d_init: float | np.ndarray = 0.0
    reset: str = "subtract"  # subtract theta | set to reset_value
    reset_value: float = 0.0
    threshold_test: str = ">="  # ">=" | ">"
    reset_timing: str = "same-step"  # "same-step" | "next-step" (see TEAM design / docs)
    #: up to this many spikes a step (graded spikes: sinabs MultiSpike, rockpool LIFTorch)
    max_spikes: int = 1
    #: a floor the membrane is clipped to after the reset (sinabs min_v_mem; None: none)
    v_s_min: float | None = None
    #: constant input per step added to the dendrite (e.g. a leak toward a nonzero rest); a
    #: number or one value per neuron
    bias: float | np.ndarray = 0.0
    #: the module returns a tuple (spikes, state...) instead of spikes alone
    tuple_output: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rules(self) -> dict[str, Any]:
        """The rule fields as the IR's LM-H node names them."""
        return {
            "reset": self.reset,
            "reset_value": float(self.reset_value),
            "threshold_test": self.threshold_test,
            "reset_timing": self.reset_timing,
            "v_d_init": np.asarray(self.v_d_init, np.float64)
            if np.ndim(self.v_d_init)
            else float(self.v_d_init),
            "v_s_init": float(self.v_s_init),
            "max_spikes": int(self.max_spikes),
            "v_s_min": None if self.v_s_min is None else float(self.v_s_min),
        }


class NeuronAdapter:
    """Base class: override :attr:`name`, :meth:`matches`, :meth:`spec`, :meth:`reset`."""

    name = "abstract"
    #: the module is called once per time step on a (B, ...) tensor (False: time-major input)
    per_step = True
    #: its output may count several spikes a step (the source run records counts, not 0/1)
    graded_spikes = False

    def matches(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def spec(self, module: nn.Module, where: str) -> NeuronSpec:
        raise NotImplementedError

    def reset(self, module: nn.Module) -> None:
        """Forget the state, so that the next call starts a new sample batch."""
        raise NotImplementedError

    def step_hooks(self, module: nn.Module) -> list[Any]:
        """Hooks that make a time-major neuron callable per step (removed after the run)."""
        return []

    def state_buffers(self, module: nn.Module) -> list[str]:
        """Buffers of ``module`` that hold its run state, not weights: a saved state_dict may
        carry them (sized for the last batch it ran); loading the weights skips them."""
        return []


def own_tensor(module: nn.Module, name: str) -> Any:
    """A parameter, buffer or tensor attribute of ``module`` itself, looked up without
    ``getattr`` (torch.fx replaces parameter reads by proxies while tracing), or None."""
    for table in (module._parameters, module._buffers, module.__dict__):
        value = table.get(name)
        if value is not None:
            return value
    return None


def scalar(value: Any, what: str, where: str) -> float:
    """A tensor/number that must be one value per layer (e.g. a threshold)."""
    arr = np.asarray(value.detach().cpu().double() if hasattr(value, "detach") else value, dtype=np.float64)
    if arr.size != 1 or not np.all(np.isfinite(arr)):
        raise NeuronError(f"{where}: {what} must be one finite value per layer, got shape {arr.shape}")
    return float(arr.reshape(()))


def as_factor(value: Any) -> np.ndarray:
    """A per-layer scalar or per-neuron tensor as a (1, *b) factor array."""
    arr = np.asarray(value.detach().cpu().double() if hasattr(value, "detach") else value, dtype=np.float64)
    return arr.reshape((1,) + (arr.shape or (1,)))
