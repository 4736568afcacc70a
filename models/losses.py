"""Losses over per-step outputs ``(T, B, classes)``."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rate_ce(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the time-averaged output (firing-rate readout)."""
    return F.cross_entropy(outputs.mean(0), target)


def tet_loss(outputs: torch.Tensor, target: torch.Tensor, *, lam: float = 0.0,
             phi: float = 1.0) -> torch.Tensor:
    """TET (Deng et al., 2022): ``(1-lam) * mean_t CE(O_t, y) + lam * mean_t MSE(O_t, phi)``."""
    steps = outputs.shape[0]
    ce = sum(F.cross_entropy(outputs[t], target) for t in range(steps)) / steps
    if lam == 0.0:
        return ce
    return (1 - lam) * ce + lam * F.mse_loss(outputs, torch.full_like(outputs, phi))


LOSSES = {"ce": rate_ce, "tet": tet_loss}
