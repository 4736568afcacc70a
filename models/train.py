"""Training loop (STBP with surrogate gradients) with the paper's optimiser defaults."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from models.losses import LOSSES


@dataclass
class TrainConfig:
    """Paper defaults (Tab. S1): SGD, lr 0.025 with cosine decay, weight decay 5e-4, batch 64."""

    epochs: int = 10
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: str = "ce"
    seed: int = 0
    device: str = "cpu"
    log: Callable[[str], None] | None = None
    history: list = field(default_factory=list)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, timesteps: int | None = None,
             device: str = "cpu") -> float:
    """Top-1 accuracy of the time-averaged output."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        out = model(x.to(device), timesteps) if timesteps else model(x.to(device))
        correct += int((out.mean(0).argmax(1).cpu() == y).sum())
        total += len(y)
    return correct / max(total, 1)


def train(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
          cfg: TrainConfig, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train with full BPTT; returns ``{"accuracy", "epochs", "seconds_per_epoch", "history"}``."""
    torch.manual_seed(cfg.seed)
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; supported: {', '.join(LOSSES)}")
    loss_fn = LOSSES[cfg.loss]
    model.to(cfg.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    seconds = []
    acc = 0.0
    for epoch in range(cfg.epochs):
        model.train()
        start = time.perf_counter()
        total_loss, batches = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(cfg.device), y.to(cfg.device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            total_loss += float(loss)
            batches += 1
        sched.step()
        seconds.append(time.perf_counter() - start)
        acc = evaluate(model, test_loader, device=cfg.device)
        cfg.history.append({"epoch": epoch + 1, "loss": total_loss / max(batches, 1),
                            "accuracy": acc})
        if progress:
            progress(epoch + 1, cfg.epochs, acc)
    return {"accuracy": acc, "epochs": cfg.epochs,
            "seconds_per_epoch": sum(seconds) / max(len(seconds), 1), "history": cfg.history}
