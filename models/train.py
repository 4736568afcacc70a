"""Training loops: full STBP (BPTT with surrogate gradients) and time-slicing online training.

Paper defaults (Tab. S1): SGD (momentum 0.9), lr 0.025 with cosine decay, weight decay
5e-4, batch 64.

Time-slicing (Sec. 4.4, Algorithm 2): the ``T`` steps of a batch are cut into slices
of ``k`` steps. Each slice runs forward with the neuron state carried over from the
previous slice but detached (``vD``, ``vS`` keep their values, not their graph), its
loss (TET or rate CE over the slice's outputs) is back-propagated and the optimiser
steps, so the autograd graph (and the activation memory) holds ``k`` steps, not ``T``.

Peak memory (``peak_memory_bytes``): :class:`SavedTensorMeter` counts the bytes of
the distinct storages that autograd saves for backward (``saved_tensors_hooks``),
parameters and buffers excluded, from the start of a forward pass to its backward;
the peak over every forward/backward of training is reported. This is the
activation memory of training: it is what BPTT keeps alive for ``T`` steps and
time-slicing for ``k``; it is measured the same way for every mode and device, and
unlike ``tracemalloc`` it sees tensor memory (allocator overhead, the weights,
gradients and optimiser state are not included).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from models.losses import LOSSES


@dataclass
class TrainConfig:
    """Paper defaults (Tab. S1): SGD, lr 0.025 with cosine decay, weight decay 5e-4, batch 64.

    ``time_slice``: ``k`` steps per slice (``None`` or 0: full BPTT over ``T`` steps).
    ``timesteps``: ``T`` of training (``None``: the model's own ``timesteps``; time-major
    data always uses its own number of frames).
    """

    epochs: int = 10
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: str = "ce"
    seed: int = 0
    device: str = "cpu"
    time_slice: int | None = None
    timesteps: int | None = None
    log: Callable[[str], None] | None = None
    history: list = field(default_factory=list)


class SavedTensorMeter:
    """Peak bytes of distinct tensor storages saved for backward (see the module docstring).

    Use as a context manager around a forward pass (and the loss), then call
    :meth:`release` after the matching ``backward()``; ``peak`` is the largest total
    seen between releases. ``exclude``: tensors not to count (parameters, buffers).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.held: dict[int, int] = {}
        self.total = 0
        self.peak = 0
        self._ctx = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.exclude and ptr not in self.held:
            self.held[ptr] = storage.nbytes()
            self.total += self.held[ptr]
            self.peak = max(self.peak, self.total)
        return t

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def release(self) -> None:
        """The graph was consumed by ``backward()``: its saved tensors are gone."""
        self.held.clear()
        self.total = 0

    def __enter__(self) -> "SavedTensorMeter":
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)
        self._ctx = None

    @classmethod
    def for_model(cls, model: nn.Module) -> "SavedTensorMeter":
        """A meter that ignores ``model``'s parameters and buffers."""
        return cls(list(model.parameters()) + list(model.buffers()))


def time_major(x: torch.Tensor) -> torch.Tensor:
    """Frame-sequence batches ``(B, T, C, H, W)`` -> ``(T, B, C, H, W)``; images as they are."""
    return x.transpose(0, 1) if x.dim() == 5 else x


def _set_stateful(model: nn.Module, stateful: bool) -> None:
    if hasattr(model, "set_stateful"):
        model.set_stateful(stateful)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, *, timesteps: int | None = None,
             device: str = "cpu") -> float:
    """Top-1 accuracy of the time-averaged output."""
    model.eval()
    _set_stateful(model, False)
    correct = total = 0
    for x, y in loader:
        x = time_major(x.to(device))
        out = model(x, timesteps) if timesteps else model(x)
        correct += int((out.mean(0).argmax(1).cpu() == y).sum())
        total += len(y)
    return correct / max(total, 1)


@torch.no_grad()
def evaluate_per_timestep(model: nn.Module, loader: DataLoader, *, timesteps: int,
                          device: str = "cpu") -> list[float]:
    """Accuracy of the output averaged over the first ``t`` steps, for ``t = 1..timesteps``.

    One run of ``timesteps`` steps: the network is causal, so its first ``t`` outputs are
    those of a run of ``t`` steps (radical factors beyond the trained ``T`` reuse the last
    trained row, in both cases). A network with one output (an ANN) repeats its accuracy.
    """
    model.eval()
    _set_stateful(model, False)
    correct = torch.zeros(timesteps)
    total = 0
    for x, y in loader:
        out = model(time_major(x.to(device)), timesteps)
        csum = out.cumsum(0) / torch.arange(1, out.shape[0] + 1, device=out.device).reshape(
            -1, *([1] * (out.dim() - 1)))
        pred = csum.argmax(-1).cpu()  # (T', B)
        hits = (pred == y).sum(1).float()
        if hits.shape[0] < timesteps:
            hits = torch.cat([hits, hits[-1:].expand(timesteps - hits.shape[0])])
        correct += hits
        total += len(y)
    return (correct / max(total, 1)).tolist()


def train_step(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable, x: torch.Tensor,
               y: torch.Tensor, *, timesteps: int | None, time_slice: int | None,
               meter: SavedTensorMeter | None = None) -> tuple[float, int]:
    """One batch: full BPTT, or ``ceil(T/k)`` slice updates; returns ``(mean loss, steps)``."""
    x = time_major(x)
    static = x.dim() in (2, 4)
    steps = (timesteps or getattr(model, "timesteps", 1)) if static else x.shape[0]
    meter = meter or SavedTensorMeter()
    if not time_slice or time_slice >= steps:
        opt.zero_grad(set_to_none=True)
        with meter:
            loss = loss_fn(model(x, steps), y)
        loss.backward()
        meter.release()
        opt.step()
        return float(loss.detach()), 1
    if getattr(model, "is_ann", False):
        raise ValueError("time-slicing trains spiking networks; a QCFS ANN has no time steps")
    model.set_stateful(True)
    losses = []
    try:
        for start in range(0, steps, time_slice):
            k = min(time_slice, steps - start)
            opt.zero_grad(set_to_none=True)
            with meter:
                out = model(x if static else x[start:start + k], k)
                loss = loss_fn(out, y)
            loss.backward()
            meter.release()
            opt.step()
            model.detach_state()
            losses.append(float(loss.detach()))
    finally:
        model.set_stateful(False)
    return sum(losses) / len(losses), len(losses)


def train(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
          cfg: TrainConfig, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train; returns ``{"accuracy", "epochs", "seconds_per_epoch", "peak_memory_bytes",
    "optimizer_steps", "history"}`` (accuracy of the last epoch, at the training ``T``)."""
    torch.manual_seed(cfg.seed)
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; supported: {', '.join(LOSSES)}")
    if cfg.time_slice is not None and cfg.time_slice < 0:
        raise ValueError(f"time_slice must be >= 1 (or 0/None for full BPTT), got {cfg.time_slice}")
    if cfg.time_slice and getattr(model, "is_ann", False):
        raise ValueError("time-slicing trains spiking networks; a QCFS ANN has no time steps")
    loss_fn = LOSSES[cfg.loss]
    model.to(cfg.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    meter = SavedTensorMeter.for_model(model)
    seconds = []
    acc = 0.0
    opt_steps = 0
    for epoch in range(cfg.epochs):
        model.train()
        start = time.perf_counter()
        total_loss, batches = 0.0, 0
        for x, y in train_loader:
            loss, n = train_step(model, opt, loss_fn, x.to(cfg.device), y.to(cfg.device),
                                 timesteps=cfg.timesteps, time_slice=cfg.time_slice, meter=meter)
            total_loss += loss
            batches += 1
            opt_steps += n
        sched.step()
        seconds.append(time.perf_counter() - start)
        acc = evaluate(model, test_loader, timesteps=cfg.timesteps, device=cfg.device)
        cfg.history.append({"epoch": epoch + 1, "loss": total_loss / max(batches, 1),
                            "accuracy": acc, "seconds": seconds[-1]})
        if cfg.log:
            cfg.log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total_loss / max(batches, 1):.4f} "
                    f"acc {acc:.4f} ({seconds[-1]:.1f} s)")
        if progress:
            progress(epoch + 1, cfg.epochs, acc)
    return {"accuracy": acc, "epochs": cfg.epochs,
            "seconds_per_epoch": sum(seconds) / max(len(seconds), 1),
            "peak_memory_bytes": int(meter.peak), "optimizer_steps": opt_steps,
            "history": cfg.history}
