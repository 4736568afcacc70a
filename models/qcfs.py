"""QCFS activation (Bu et al., ICLR 2022): the ANN side of the paper's hybrid training.

``a = theta / L * clip(floor(x * L / theta + 1/2), 0, L)`` (Eq. S3 of the LM-H paper)
with a learnable threshold ``theta`` per layer and a straight-through estimator for
``floor`` (its gradient is taken as 1). An IF neuron with reset by subtraction that
starts at ``v = theta / 2`` and is driven by a constant ``x`` for ``T = L`` steps fires
exactly ``clip(floor(x * L / theta + 1/2), 0, L)`` spikes of size ``theta``, which is
why :mod:`models.hybrid` copies ``theta`` into the LM-H neuron and runs ``T = L``.

A QCFS network is an ANN: it is stateless and ignores time (it is applied to each
frame; a static image gives outputs of shape ``(1, B, classes)``, see
:class:`~models.architectures.SpikingNet`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from lmh_deploy.errors import InputError


class _FloorSTE(torch.autograd.Function):
    """``floor`` forward, identity backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    """``floor(x)`` with the straight-through gradient 1."""
    return _FloorSTE.apply(x)


def qcfs(x: torch.Tensor, theta: torch.Tensor, levels: int) -> torch.Tensor:
    """``theta / L * clip(floor(x * L / theta + 1/2), 0, L)``, differentiable (STE floor)."""
    q = floor_ste(x * (levels / theta) + 0.5)
    return torch.clamp(q, 0, levels) * (theta / levels)


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation with a learnable threshold ``theta``.

    Parameters
    ----------
    levels : quantization level ``L`` (the converted SNN runs ``T = L`` steps).
    theta : initial threshold (learned; copied into the LM-H neuron on conversion).
    """

    def __init__(self, *, levels: int = 4, theta: float = 1.0) -> None:
        super().__init__()
        if levels < 1:
            raise InputError(f"QCFS: levels must be >= 1, got {levels}")
        if not (theta > 0 and math.isfinite(theta)):
            raise InputError(f"QCFS: theta must be finite and > 0, got {theta}")
        self.levels = int(levels)
        self.theta = nn.Parameter(torch.tensor(float(theta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return qcfs(x, self.theta, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, theta={self.theta.item():.4g}"
