"""sinabs nets as sinabs's own tutorials write and train them (a builder file for
``lmh-deploy compile --model sinabs_style.py:FACTORY``).

sinabs layers run a whole sequence per call: ``IAF`` / ``LIF`` take ``(batch, time, ...)``,
``IAFSqueeze`` takes ``(batch * time, C, H, W)`` (its ``num_timesteps`` unflattens it); the
state persists until ``sinabs.reset_states(model)``. Training is BPTT on the image repeated
over ``T`` steps, cross-entropy on the mean readout over time, as in sinabs's "training with
BPTT" tutorial (their ``out.unflatten(0, (batch, -1)).sum(1)`` has the same argmax).
"""

from __future__ import annotations

import sinabs
import sinabs.layers as sl
import torch
from torch import nn

T = 8


def iaf_mlp() -> nn.Sequential:
    """``Linear -> IAF -> Linear`` on flat 64-pixel frames: input ``(batch, T, 64)``."""
    return nn.Sequential(nn.Linear(64, 32), sl.IAF(), nn.Linear(32, 10))


def lif_mlp(tau_mem: float = 8.0) -> nn.Sequential:
    """``Linear -> LIF(tau_mem) -> Linear`` (sinabs's exp(-1/tau) decay, input scaled by
    1 - exp(-1/tau)): input ``(batch, T, 64)``."""
    return nn.Sequential(nn.Linear(64, 32), sl.LIF(tau_mem=tau_mem), nn.Linear(32, 10))


def lif_per_neuron_mlp() -> nn.Sequential:
    """``Linear -> LIF(tau_mem per neuron, 3 to 12) -> Linear`` with sinabs's default
    ``norm_input=True``: each neuron's input scaled by its own ``1 - exp(-1/tau)``."""
    lif = sl.LIF(tau_mem=torch.linspace(3.0, 12.0, 32), spike_threshold=0.5)
    return nn.Sequential(nn.Linear(64, 32), lif, nn.Linear(32, 10))


def lif_per_channel_conv() -> nn.Sequential:
    """``Conv2d -> LIFSqueeze(tau_mem one per channel, (C, 1, 1)) -> SumPool2d -> Flatten ->
    Linear``, ``norm_input=True``: input ``(batch * T, 1, 8, 8)``."""
    tau = torch.linspace(2.0, 10.0, 8).reshape(8, 1, 1)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        sl.LIFSqueeze(tau_mem=tau, num_timesteps=T, spike_threshold=0.5),
        sl.SumPool2d(4),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def conv_net() -> nn.Sequential:
    """``[Conv2d -> IAFSqueeze -> SumPool2d] x 2 -> Flatten -> Linear``: input
    ``(batch * T, 1, 8, 8)``."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        sl.IAFSqueeze(num_timesteps=T),
        sl.SumPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        sl.IAFSqueeze(num_timesteps=T),
        sl.SumPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """sinabs's own run of ``x`` (B, 1, 8, 8) repeated over ``T``: (B, T, 10) readouts."""
    sinabs.reset_states(model)
    b = x.shape[0]
    squeeze = (sl.IAFSqueeze, sl.LIFSqueeze)
    if any(isinstance(m, squeeze) for m in model.modules()):  # (B*T, C, H, W), batch-major
        return model(x.unsqueeze(1).repeat(1, T, 1, 1, 1).flatten(0, 1)).reshape(b, T, -1)
    return model(x.flatten(1).unsqueeze(1).repeat(1, T, 1))  # (B, T, 64)


def _fit(model: nn.Module, logits_of, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float) -> None:
    """Adam over shuffled mini-batches of 64 (seed 0), cross-entropy on ``logits_of(x_batch)``."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            loss = nn.functional.cross_entropy(logits_of(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 3, lr: float = 3e-3) -> None:
    """BPTT with Adam, cross-entropy on the mean readout over T."""
    _fit(model, lambda xb: run(model, xb).mean(1), x, y, epochs=epochs, lr=lr)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((run(model, x).mean(1).argmax(1) == y).float().mean())


def ann_conv() -> nn.Sequential:
    """The ANN sinabs's "from_model" tutorial converts: ReLUs where the spiking layers go."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10, bias=False),
    )


def converted(ann: nn.Module | None = None) -> nn.Sequential:
    """``sinabs.from_model(ann)``'s spiking model: each ReLU an ``IAFSqueeze`` (its default
    ``min_v_mem=-1``, ``MultiSpike``, ``MembraneSubtract``); input ``(batch * T, 1, 8, 8)``."""
    return sinabs.from_model(ann or ann_conv(), input_shape=(1, 8, 8), num_timesteps=T).spiking_model


def train_ann(ann: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 3, lr: float = 3e-3) -> None:
    """The ANN trained as any torch classifier (before conversion)."""
    _fit(ann, ann, x, y, epochs=epochs, lr=lr)
