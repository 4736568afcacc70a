"""Train a per-step spiking module briefly on digits, as its own framework's users would."""

from __future__ import annotations

import torch
from lmh_deploy.models.data import load_dataset


def reset_neurons(model: torch.nn.Module) -> None:
    """Reset every stateful neuron the way its own library does."""
    for m in model.modules():
        if callable(getattr(m, "reset_mem", None)):
            m.reset_mem()
        elif "Neuron" in type(m).__name__ and callable(getattr(m, "reset", None)):
            m.reset()


def run_steps(model: torch.nn.Module, x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Mean output over ``timesteps`` calls with the same input (direct encoding)."""
    reset_neurons(model)
    out = sum(model(x) for _ in range(timesteps)) / timesteps
    reset_neurons(model)
    return out


def train_digits(
    model: torch.nn.Module,
    *,
    timesteps: int = 4,
    epochs: int = 2,
    lr: float = 3e-3,
    seed: int = 0,
    batches: int | None = None,
) -> float:
    """BPTT with Adam on digits; returns the test accuracy of the trained model."""
    train, test, _ = load_dataset("digits")
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    x_all, y_all = train.tensors
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x_all))
        for i, start in enumerate(range(0, len(perm), 64)):
            if batches is not None and i >= batches:
                break
            idx = perm[start : start + 64]
            loss = torch.nn.functional.cross_entropy(run_steps(model, x_all[idx], timesteps), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = run_steps(model, test.tensors[0], timesteps).argmax(1)
    return float((pred == test.tensors[1]).float().mean())
