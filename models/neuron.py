"""The LM-H two-compartment spiking neuron (Eq. 4 of the paper) and its LIF special case.

One implementation serves every configuration: ``progressive`` factors
(``a * sigmoid(x) + b`` per layer, Sec. 4.3), ``radical`` factors (a separate
set per time step, Eq. 7) and ``fixed`` factors (LIF: ``mu_d = mu_s = 0``,
``lam_d = 1``, ``lam_s = decay``). Tensors are time-major: ``(T, B, ...)``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from lmh_deploy.errors import InputError

FactorMode = Literal["progressive", "radical", "fixed"]
FACTOR_NAMES = ("mu_d", "mu_s", "lam_d", "lam_s")
#: ``h(x) = a * sigmoid(x) + b``: mu in (-0.5, 0.5), lam in (0.5, 1.5); x = 0 gives the IF neuron.
SIGMOID_SCALE = 1.0
SIGMOID_SHIFT = {"mu_d": -0.5, "mu_s": -0.5, "lam_d": 0.5, "lam_s": 0.5}


class TriangleSpike(torch.autograd.Function):
    """Heaviside forward, triangle surrogate ``max(0, g - |x|) / g**2`` backward (Eq. 3)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: float, strict: bool = False) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.gamma = gamma
        return ((x > 0) if strict else (x >= 0)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        g = ctx.gamma
        return grad_out * torch.clamp(g - x.abs(), min=0) / (g * g), None, None


def spike_fn(x: torch.Tensor, gamma: float = 1.0, strict: bool = False) -> torch.Tensor:
    """Spike where ``x >= 0`` (``x > 0`` if ``strict``), with the triangle surrogate of width ``gamma``."""
    return TriangleSpike.apply(x, gamma, strict)


class LMHNeuron(nn.Module):
    """Learnable Multi-hierarchical neuron; output is ``s * theta`` (the paper's I = W s theta).

    Parameters
    ----------
    theta : firing threshold (a frozen scalar, as in the paper; copied from QCFS in hybrid mode).
    factors : ``"progressive"``, ``"radical"`` or ``"fixed"`` (LIF).
    timesteps : number of per-step factor sets, required for ``"radical"``.
    gamma : surrogate width.
    lif_decay : ``lam_s`` of the fixed (LIF) configuration.
    per_channel : number of channels for per-channel factors (``None``: one per layer);
        factors broadcast over dimension 1 of ``(B, C, ...)`` inputs.
    reset : ``"subtract"`` (theta from vS on a spike, LM-H) or ``"set"`` (vS = ``reset_value``).
    threshold_test : ``">="`` (LM-H) or ``">"`` (Lava's LIF).
    v_s_init : initial soma as a fraction of theta (LM-H: 0.5; Lava's LIF: 0).
    Rules are exported to the IR (:class:`lmh_deploy.ir.LMH`) unchanged.
    """

    theta: torch.Tensor  # buffers and parameters registered in __init__
    x_mu_d: torch.Tensor

    def __init__(
        self,
        *,
        theta: float = 1.0,
        factors: FactorMode = "progressive",
        timesteps: int | None = None,
        gamma: float = 1.0,
        lif_decay: float = 0.5,
        per_channel: int | None = None,
        reset: str = "subtract",
        reset_value: float = 0.0,
        threshold_test: str = ">=",
        v_s_init: float = 0.5,
    ) -> None:
        super().__init__()
        if not (theta > 0 and math.isfinite(theta)):
            raise InputError(f"LMHNeuron: theta must be finite and > 0, got {theta}")
        if factors not in ("progressive", "radical", "fixed"):
            raise InputError(f"LMHNeuron: unknown factors mode {factors!r}")
        if factors == "radical" and not timesteps:
            raise InputError("LMHNeuron: radical factors need timesteps")
        if not 0.5 <= lif_decay < 1.5:
            raise InputError(f"LMHNeuron: lif_decay must lie in [0.5, 1.5), got {lif_decay}")
        if reset not in ("subtract", "set") or threshold_test not in (">=", ">"):
            raise InputError(f"LMHNeuron: unknown rules reset={reset!r}, threshold_test={threshold_test!r}")
        self.reset = reset
        self.reset_value = float(reset_value)
        self.threshold_test = threshold_test
        self.v_s_init = float(v_s_init)
        self.factor_mode = factors
        self.gamma = float(gamma)
        self.lif_decay = float(lif_decay)
        self.per_channel = per_channel
        self.register_buffer("theta", torch.tensor(float(theta)))
        steps = timesteps if factors == "radical" and timesteps else 1
        channels = per_channel or 1
        for name in FACTOR_NAMES:
            if factors == "fixed":
                self.register_buffer(f"x_{name}", torch.zeros(steps, channels))
            else:
                self.register_parameter(f"x_{name}", nn.Parameter(torch.zeros(steps, channels)))
        self.stateful = False  # keep state across forward() calls (time-slicing)
        self.v_d: torch.Tensor | None = None
        self.v_s: torch.Tensor | None = None
        self.step_offset = 0

    # ----------------------------------------------------------------- factors
    def factor_table(self) -> dict[str, torch.Tensor]:
        """The real factors, each ``(K, C)`` (K time rows, C channels or 1)."""
        if self.factor_mode == "fixed":
            zeros = torch.zeros_like(self.x_mu_d)
            return {"mu_d": zeros, "mu_s": zeros, "lam_d": zeros + 1.0, "lam_s": zeros + self.lif_decay}
        return {
            n: SIGMOID_SCALE * torch.sigmoid(getattr(self, f"x_{n}")) + SIGMOID_SHIFT[n] for n in FACTOR_NAMES
        }

    def set_factors(self, **values: float) -> None:
        """Set real factor values (inverse sigmoid); e.g. hybrid conversion's mu_d = 0, lam_d = 1."""
        if self.factor_mode == "fixed":
            raise InputError("LMHNeuron: fixed (LIF) factors cannot be set")
        for name, value in values.items():
            p = (value - SIGMOID_SHIFT[name]) / SIGMOID_SCALE
            if not 0 < p < 1:
                raise InputError(f"LMHNeuron: {name}={value} outside its open range")
            with torch.no_grad():
                getattr(self, f"x_{name}").fill_(math.log(p / (1 - p)))

    def _broadcast(self, f: torch.Tensor, ndim: int) -> torch.Tensor:
        # (C,) -> (1, C, 1, ...) for (B, C, ...) inputs; (1,) broadcasts anyway.
        return f.reshape((1, -1) + (1,) * (ndim - 2)) if f.numel() > 1 else f.reshape(())

    # ----------------------------------------------------------------- state
    def reset_state(self) -> None:
        """Forget the state; the next call starts from vD = 0, vS = theta / 2 at step 0."""
        self.v_d = self.v_s = None
        self.step_offset = 0

    def detach_state(self) -> None:
        """Cut the graph between time slices (online training); values are kept."""
        if self.v_d is not None and self.v_s is not None:
            self.v_d = self.v_d.detach()
            self.v_s = self.v_s.detach()

    # ----------------------------------------------------------------- dynamics
    def forward(self, current: torch.Tensor) -> torch.Tensor:
        """Run Eq. 4 over ``current`` of shape ``(T, B, ...)``; returns ``s * theta``, same shape."""
        if not self.stateful or self.v_d is None or self.v_s is None:
            v_d = torch.zeros_like(current[0])
            v_s = torch.full_like(current[0], self.v_s_init) * self.theta
            self.step_offset = 0
        else:
            v_d, v_s = self.v_d, self.v_s
        table = self.factor_table()
        theta = self.theta
        out = []
        rows = table["mu_d"].shape[0]
        # unbind, not current[t]: indexing costs a full-size zero fill per step in backward.
        for t, current_t in enumerate(current.unbind(0)):
            k = min(self.step_offset + t, rows - 1)
            mu_d, mu_s, lam_d, lam_s = (self._broadcast(table[n][k], current.dim() - 1) for n in FACTOR_NAMES)
            v_d = mu_d * v_d + mu_s * v_s + current_t
            m_s = lam_s * v_s + lam_d * v_d
            spike = spike_fn(m_s - theta, self.gamma, self.threshold_test == ">")
            if self.reset == "subtract":  # reset detached in backward: dv_s/dm_s = 1 (Eq. 8-9)
                v_s = m_s - (spike * theta).detach()
            else:  # set: vS = reset_value where it spiked (the spike mask detached)
                held = spike.detach()
                v_s = m_s * (1 - held) + self.reset_value * held
            out.append(spike * theta)
        self.step_offset += current.shape[0]
        if self.stateful:
            self.v_d, self.v_s = v_d, v_s
        else:
            self.v_d = self.v_s = None
        return torch.stack(out)

    def rules(self) -> dict[str, Any]:
        """The neuron rules in the IR's terms (absolute reset value and initial states)."""
        theta = float(self.theta)
        return {
            "reset": self.reset,
            "reset_value": self.reset_value,
            "threshold_test": self.threshold_test,
            "reset_timing": "same-step",
            "v_d_init": 0.0,
            "v_s_init": self.v_s_init * theta,
        }

    def extra_repr(self) -> str:
        return (
            f"factors={self.factor_mode}, theta={float(self.theta):g}, gamma={self.gamma:g}, "
            f"reset={self.reset}, test='{self.threshold_test}', v_s_init={self.v_s_init:g}"
        )


#: The neuron Lava's LIF implements (PyLifModelBitAcc): v set to 0 on a spike, spike on
#: v > theta, states start at 0; ``--profile loihi-lif`` deploys it without changing a rule.
LAVA_LIF_RULES: dict[str, Any] = {"reset": "set", "reset_value": 0.0, "threshold_test": ">", "v_s_init": 0.0}


def lif_neuron(*, theta: float = 1.0, decay: float = 0.5, gamma: float = 1.0) -> LMHNeuron:
    """The LIF baseline: mu_d = mu_s = 0, lam_d = 1, lam_s = decay, with Lava LIF's rules."""
    return LMHNeuron(theta=theta, factors="fixed", lif_decay=decay, gamma=gamma, **LAVA_LIF_RULES)
