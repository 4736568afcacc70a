"""Network architectures built from time-distributed layers and LM-H neurons.

Every network maps a static ``(B, C, H, W)`` batch (repeated over ``T`` steps:
direct encoding) or a time-major ``(T, B, C, H, W)`` batch to per-step outputs
``(T, B, classes)``. Stateless layers run on ``(T*B, ...)``; neurons run over time.
The structure is a flat ``nn.Sequential`` in ``model.layers`` so that the exporter
can walk it in order.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from models.neuron import LMHNeuron


def make_neuron(kind: str, *, timesteps: int, theta: float = 1.0, factors: str = "progressive",
                gamma: float = 1.0, lif_decay: float = 0.5) -> LMHNeuron:
    """Neuron factory for the ``--neuron`` choices that are spiking (``lmh``, ``lif``)."""
    if kind == "lmh":
        return LMHNeuron(theta=theta, factors=factors, timesteps=timesteps, gamma=gamma)
    if kind == "lif":
        return LMHNeuron(theta=theta, factors="fixed", lif_decay=lif_decay, gamma=gamma)
    raise ValueError(f"unknown neuron kind {kind!r}; expected 'lmh' or 'lif'")


class SpikingNet(nn.Module):
    """A sequence of layers run time-major; neurons see ``(T, B, ...)``, the rest ``(T*B, ...)``."""

    def __init__(self, layers: list[nn.Module], *, timesteps: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.timesteps = timesteps

    def neurons(self) -> list[LMHNeuron]:
        """All LM-H neurons in order."""
        return [m for m in self.modules() if isinstance(m, LMHNeuron)]

    def set_stateful(self, stateful: bool) -> None:
        """Carry neuron state across calls (time-slicing) or not."""
        for n in self.neurons():
            n.stateful = stateful
            n.reset_state()

    def forward(self, x: torch.Tensor, timesteps: int | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` or ``(T, B, C, H, W)`` -> per-step outputs ``(T, B, classes)``."""
        steps = timesteps or self.timesteps
        if x.dim() in (2, 4):  # static input: direct encoding, same frame every step
            x = x.unsqueeze(0).expand(steps, *x.shape)
        t, b = x.shape[:2]
        for layer in self.layers:
            if isinstance(layer, LMHNeuron):
                x = layer(x.reshape(t, b, *x.shape[1:]) if x.shape[0] == t * b else x)
                x = x.reshape(t * b, *x.shape[2:])
            else:
                x = layer(x.reshape(t * b, *x.shape[2:]) if x.shape[:2] == (t, b) else x)
        return x.reshape(t, b, *x.shape[1:])


def mlp(input_shape: tuple[int, ...], num_classes: int, *, neuron: str = "lmh", timesteps: int = 4,
        hidden: tuple[int, ...] = (128, 128), theta: float = 1.0, factors: str = "progressive",
        gamma: float = 1.0, lif_decay: float = 0.5, width_mult: float = 1.0) -> SpikingNet:
    """Flatten -> [Linear -> neuron] x len(hidden) -> Linear readout (averaged over time)."""
    n_in = 1
    for d in input_shape:
        n_in *= d
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        h = max(1, int(round(h * width_mult)))
        layers += [nn.Linear(n_in, h),
                   make_neuron(neuron, timesteps=timesteps, theta=theta, factors=factors,
                               gamma=gamma, lif_decay=lif_decay)]
        n_in = h
    layers.append(nn.Linear(n_in, num_classes))
    return SpikingNet(layers, timesteps=timesteps)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"mlp": mlp}


def build(arch: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a named architecture; unknown names list the supported ones."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](tuple(input_shape), num_classes, **kwargs)
