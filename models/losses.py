"""Losses over per-step outputs ``(T, B, classes)``.

``ce``  : rate cross-entropy, ``CE(mean_t O_t, y)`` (the paper's "vanilla loss", used with tdBN).
``tet`` : TET (Deng et al., ICLR 2022), ``L = (1 - lam) * (1/T) sum_t CE(O_t, y)
          + lam * (1/T) sum_t MSE(O_t, phi)``; the paper uses the CE term only (``lam = 0``).

With time-slicing (:func:`models.train.train`) both are applied to the outputs of one
slice, as Algorithm 2 of the paper does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rate_ce(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the time-averaged output (firing-rate readout)."""
    return F.cross_entropy(outputs.mean(0), target)


def tet_loss(
    outputs: torch.Tensor, target: torch.Tensor, *, lam: float = 0.0, phi: float = 1.0
) -> torch.Tensor:
    """TET: ``(1-lam) * mean_t CE(O_t, y) + lam * mean_t MSE(O_t, phi)``.

    ``mean_t CE(O_t, y)`` with the batch-mean CE of each step equals the CE of all
    ``T*B`` rows at once (every step has the same ``B``), which is how it is computed.
    ``MSE(O_t, phi)`` is the mean over batch and classes, so its time mean is the mean
    over all elements.
    """
    steps = outputs.shape[0]
    ce = F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), target.repeat(steps))
    if lam == 0.0:
        return ce
    return (1 - lam) * ce + lam * F.mse_loss(outputs, torch.full_like(outputs, phi))


LOSSES = {"ce": rate_ce, "tet": tet_loss}
