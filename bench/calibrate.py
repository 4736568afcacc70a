"""BN calibration of an untrained SpikingNet to a chosen firing rate per layer (bench use only).

Untrained nets fire a few per cent of neuron-steps; trained SNNs on CIFAR fire more, and an
event-driven simulator's cost follows the firing rate. Training ResNet-19 for a few epochs is
beyond a 2-core machine, so the benches calibrate instead, layer by layer in network order
on a calibration batch:

1. the batch norm before a neuron gets the running mean and variance of its actual input
   (what training's statistics would converge to), so its output is normalised;
2. the bias of the affine layer feeding the neuron (that batch norm's, or the Linear's) is
   shifted by one scalar, found by bisection, so that the layer fires ``target`` of its
   neuron-steps on the calibration batch.

Later layers see the calibrated earlier ones. The rates the quantised net then has in sim/
are measured by the bench itself and reported per layer.
"""

from __future__ import annotations

import torch
from torch import nn

from lmh_deploy.models.architectures import ResidualBlock, SpikingNet
from lmh_deploy.models.neuron import LMHNeuron


class _Stop(Exception):
    pass


def _capture(model: SpikingNet, module: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The input ``module`` receives when the model runs on ``x`` (the run stops there)."""
    seen: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple) -> None:
        seen.append(args[0].detach().clone())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        model(x, steps)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen[0]


def _feeders(model: SpikingNet) -> list[tuple[LMHNeuron, nn.Module | None, nn.Module]]:
    """(neuron, batch norm before it or None, the module whose bias shifts its input)."""
    found = []
    layers = list(model.layers)
    for i, layer in enumerate(layers):
        if isinstance(layer, LMHNeuron):
            prev = layers[i - 1]
            norm = prev if hasattr(prev, "running_mean") else None
            found.append((layer, norm, prev))
        elif isinstance(layer, ResidualBlock):
            found.append((layer.neuron1, layer.bn1, layer.bn1))
            found.append((layer.neuron2, layer.bn2, layer.bn2))
    return found


def _rate(neuron: LMHNeuron, current: torch.Tensor, steps: int) -> float:
    if current.shape[0] == 1:
        current = current.expand(steps, *current.shape[1:])
    return float((neuron(current) > 0).float().mean())


@torch.no_grad()
def calibrate(model: SpikingNet, x: torch.Tensor, steps: int, target: float) -> list[float]:
    """Calibrate ``model`` in place (see the module docstring); the float rate of each layer."""
    model.eval()
    rates = []
    for neuron, norm, shifted in _feeders(model):
        if norm is not None:
            pre = _capture(model, norm, x, steps)  # (T, B, C, ...)
            dims = [0, 1] + list(range(3, pre.dim()))
            norm.running_mean.copy_(pre.mean(dims))
            norm.running_var.copy_(pre.var(dims, unbiased=False) + 1e-6)
        if shifted.bias is None:
            raise ValueError(f"calibrate: {type(shifted).__name__} before a neuron has no bias")
        current = _capture(model, neuron, x, steps)
        lo, hi = -20.0, 20.0
        for _ in range(20):  # 40 / 2**20: far below any rate step
            mid = (lo + hi) / 2
            if _rate(neuron, current + mid, steps) < target:
                lo = mid
            else:
                hi = mid
        shifted.bias += (lo + hi) / 2
        rates.append(_rate(neuron, _capture(model, neuron, x, steps), steps))
    return rates
