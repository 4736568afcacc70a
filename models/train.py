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
gradients and optimiser state are not included). Under DDP it is the largest over ranks.

Distributed data parallel (``torchrun``; see :mod:`models.distributed` and
``docs/distributed.md``): when a process group is initialised, :func:`train` wraps the
model in ``DistributedDataParallel``; the loaders must then come from
``make_loaders(..., rank=, world_size=)``, whose batches are the rank's part of the
global batch. Each rank's batch-mean loss is weighted by ``n_rank * world / n_global``
(:func:`models.distributed.loss_weight`) so that DDP's gradient average is the gradient
of the global-batch mean. Time-slicing takes ``ceil(T/k)`` optimiser steps per batch,
so every slice's backward must all-reduce its gradients before its step: ``no_sync``
(gradient accumulation without communication) does not apply, and a batch costs
``ceil(T/k)`` gradient all-reduces instead of one. :func:`evaluate` on a sharded test
loader all-reduces ``correct``/``total``, so every rank reports the full test set's
accuracy. Mixed precision (``amp=True``, CUDA only): ``torch.autocast`` (float16) for
forward and loss, ``torch.amp.GradScaler`` for backward and step.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lmh_deploy.errors import InputError
from lmh_deploy.models import distributed as D
from lmh_deploy.models.job import DEFAULT_JOB
from lmh_deploy.models.losses import LOSSES


@dataclass
class TrainConfig:
    """Paper defaults (Tab. S1): SGD, lr 0.025 with cosine decay, weight decay 5e-4, batch 64.

    ``time_slice``: ``k`` steps per slice (``None`` or 0: full BPTT over ``T`` steps).
    ``timesteps``: ``T`` of training (``None``: the model's own ``timesteps``; time-major
    data always uses its own number of frames).
    ``amp``: mixed precision (autocast float16 + GradScaler); CUDA devices only.
    ``log`` and ``progress`` are only called on rank 0 under DDP.
    """

    epochs: int = DEFAULT_JOB.epochs
    lr: float = DEFAULT_JOB.lr
    momentum: float = 0.9
    weight_decay: float = DEFAULT_JOB.weight_decay
    loss: str = DEFAULT_JOB.loss
    seed: int = DEFAULT_JOB.seed
    device: str = "cpu"
    time_slice: int | None = None
    timesteps: int | None = None
    amp: bool = False
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
        self._ctx: Any = None  # torch's saved_tensors_hooks while entered

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

    def __enter__(self) -> SavedTensorMeter:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)
        self._ctx = None

    @classmethod
    def for_model(cls, model: nn.Module) -> SavedTensorMeter:
        """A meter that ignores ``model``'s parameters and buffers."""
        return cls(list(model.parameters()) + list(model.buffers()))


def time_major(x: torch.Tensor) -> torch.Tensor:
    """Frame-sequence batches ``(B, T, C, H, W)`` -> ``(T, B, C, H, W)``; images as they are."""
    return x.transpose(0, 1) if x.dim() == 5 else x


def _set_stateful(model: nn.Module, stateful: bool) -> None:
    set_stateful = getattr(model, "set_stateful", None)
    if set_stateful is not None:
        set_stateful(stateful)


def _sharded(loader: DataLoader, distributed: bool | None) -> bool:
    """Reduce over ranks: asked to, or (``None``) the loader holds one rank's test shard."""
    if distributed is None:
        distributed = isinstance(getattr(loader, "sampler", None), D.ShardSampler)
    return bool(distributed) and D.world_size() > 1


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    timesteps: int | None = None,
    device: str = "cpu",
    distributed: bool | None = None,
) -> float:
    """Top-1 accuracy of the time-averaged output.

    ``distributed``: all-reduce ``correct``/``total`` over ranks (every rank gets the
    accuracy of the whole test set); ``None``: when ``loader`` is a rank's shard
    (:class:`models.distributed.ShardSampler`) and a multi-process group exists.
    """
    model = D.unwrap(model)
    model.eval()
    _set_stateful(model, False)
    correct = total = 0
    for x, y in loader:
        x = time_major(x.to(device))
        out = model(x, timesteps) if timesteps else model(x)
        correct += int((out.mean(0).argmax(1).cpu() == y).sum())
        total += len(y)
    if _sharded(loader, distributed):
        correct, total = (int(v) for v in D.all_reduce_sum([correct, total], device))
    return correct / max(total, 1)


@torch.no_grad()
def evaluate_per_timestep(
    model: nn.Module,
    loader: DataLoader,
    *,
    timesteps: int,
    device: str = "cpu",
    distributed: bool | None = None,
) -> list[float]:
    """Accuracy of the output averaged over the first ``t`` steps, for ``t = 1..timesteps``.

    One run of ``timesteps`` steps: the network is causal, so its first ``t`` outputs are
    those of a run of ``t`` steps (radical factors beyond the trained ``T`` reuse the last
    trained row, in both cases). A network with one output (an ANN) repeats its accuracy.
    ``distributed``: as in :func:`evaluate`.
    """
    model = D.unwrap(model)
    model.eval()
    _set_stateful(model, False)
    correct = torch.zeros(timesteps)
    total = 0
    for x, y in loader:
        out = model(time_major(x.to(device)), timesteps)
        csum = out.cumsum(0) / torch.arange(1, out.shape[0] + 1, device=out.device).reshape(
            -1, *([1] * (out.dim() - 1))
        )
        pred = csum.argmax(-1).cpu()  # (T', B)
        hits = (pred == y).sum(1).float()
        if hits.shape[0] < timesteps:
            hits = torch.cat([hits, hits[-1:].expand(timesteps - hits.shape[0])])
        correct += hits
        total += len(y)
    if _sharded(loader, distributed):
        reduced = D.all_reduce_sum(torch.cat([correct.double(), torch.tensor([float(total)])]), device)
        correct, total = reduced[:-1].to(correct.dtype), int(reduced[-1])
    return (correct / max(total, 1)).tolist()


def _autocast(device: str, amp: bool):
    if not amp:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.float16)


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    timesteps: int | None,
    time_slice: int | None,
    meter: SavedTensorMeter | None = None,
    scaler: torch.amp.GradScaler | None = None,
    global_n: int | None = None,
) -> tuple[float, int]:
    """One batch: full BPTT, or ``ceil(T/k)`` slice updates; returns ``(mean loss, steps)``.

    ``model`` may be wrapped in ``DistributedDataParallel``: the forward goes through the
    wrapper (its backward all-reduces the gradients, once per optimiser step, i.e. once
    per slice), the neuron-state methods go to the wrapped module. ``scaler``: mixed
    precision (forward under ``torch.autocast``, backward/step through the scaler).
    ``global_n``: samples of the global batch under DDP (``None``: all-reduced here). The
    returned loss is this rank's unweighted batch-mean loss.
    """
    base = D.unwrap(model)
    x = time_major(x)
    static = x.dim() in (2, 4)
    model_steps: Any = getattr(base, "timesteps", 1)  # the model's default T
    steps = int(timesteps or model_steps) if static else int(x.shape[0])
    meter = meter or SavedTensorMeter()
    amp = scaler is not None
    device = x.device.type
    weight, _ = D.loss_weight(len(y), str(x.device), global_n)

    def objective(out: torch.Tensor) -> tuple[torch.Tensor, float]:
        if len(y) == 0:  # an empty part of a small global batch: no loss, zero gradients
            return out.sum() * 0.0, 0.0
        loss = loss_fn(out, y)
        return (loss * weight if weight != 1.0 else loss), float(loss.detach())

    def update(loss: torch.Tensor) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
            meter.release()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            meter.release()
            opt.step()

    if not time_slice or time_slice >= steps:
        opt.zero_grad(set_to_none=True)
        with meter, _autocast(device, amp):
            loss, value = objective(model(x, steps))
        update(loss)
        return value, 1
    if getattr(base, "is_ann", False):
        raise InputError("time-slicing trains spiking networks; a QCFS ANN has no time steps")
    base.set_stateful(True)
    losses = []
    try:
        for start in range(0, steps, time_slice):
            k = min(time_slice, steps - start)
            opt.zero_grad(set_to_none=True)
            with meter, _autocast(device, amp):
                out = model(x if static else x[start : start + k], k)
                loss, value = objective(out)
            update(loss)  # under DDP: one gradient all-reduce per slice (no no_sync)
            base.detach_state()
            losses.append(value)
    finally:
        base.set_stateful(False)
    return sum(losses) / len(losses), len(losses)


def train(
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader,
    cfg: TrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train; returns ``{"accuracy", "epochs", "seconds_per_epoch", "peak_memory_bytes",
    "optimizer_steps", "history"}`` (accuracy of the last epoch, at the training ``T``)."""
    torch.manual_seed(cfg.seed)
    if cfg.loss not in LOSSES:
        raise InputError(f"unknown loss {cfg.loss!r}; supported: {', '.join(LOSSES)}")
    if cfg.time_slice is not None and cfg.time_slice < 0:
        raise InputError(f"time_slice must be >= 1 (or 0/None for full BPTT), got {cfg.time_slice}")
    if cfg.time_slice and getattr(model, "is_ann", False):
        raise InputError("time-slicing trains spiking networks; a QCFS ANN has no time steps")
    if cfg.amp and not str(cfg.device).startswith("cuda"):
        raise InputError(f"mixed precision (amp) needs a CUDA device; got device {cfg.device!r}")
    loss_fn = LOSSES[cfg.loss]
    model.to(cfg.device)
    net = D.wrap_ddp(model, cfg.device)  # the model itself without a process group
    main = D.rank() == 0
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    scaler = torch.amp.GradScaler("cuda") if cfg.amp else None
    meter = SavedTensorMeter.for_model(model)
    seconds = []
    acc = 0.0
    opt_steps = 0
    for epoch in range(cfg.epochs):
        for sampler in (getattr(train_loader, "batch_sampler", None), getattr(train_loader, "sampler", None)):
            set_epoch = getattr(sampler, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
        net.train()
        start = time.perf_counter()
        weighted, counts = [], []  # per batch: this rank's loss * samples, samples
        sizes = getattr(getattr(train_loader, "batch_sampler", None), "global_batch_sizes", lambda: None)()
        for i, (x, y) in enumerate(train_loader):
            loss, n = train_step(
                net,
                opt,
                loss_fn,
                x.to(cfg.device),
                y.to(cfg.device),
                timesteps=cfg.timesteps,
                time_slice=cfg.time_slice,
                meter=meter,
                scaler=scaler,
                global_n=sizes[i] if sizes else None,
            )
            weighted.append(loss * len(y))
            counts.append(float(len(y)))
            opt_steps += n
        sched.step()
        seconds.append(time.perf_counter() - start)
        if D.world_size() > 1:  # per-batch means over the global batches
            red = D.all_reduce_sum(weighted + counts, cfg.device)
            weighted, counts = red[: len(weighted)].tolist(), red[len(weighted) :].tolist()
        batch_means = [w / c for w, c in zip(weighted, counts) if c]
        epoch_loss = sum(batch_means) / max(len(batch_means), 1)
        acc = evaluate(model, test_loader, timesteps=cfg.timesteps, device=cfg.device)
        cfg.history.append({"epoch": epoch + 1, "loss": epoch_loss, "accuracy": acc, "seconds": seconds[-1]})
        if cfg.log and main:
            cfg.log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {epoch_loss:.4f} acc {acc:.4f} ({seconds[-1]:.1f} s)"
            )
        if progress and main:
            progress(epoch + 1, cfg.epochs, acc)
    return {
        "accuracy": acc,
        "epochs": cfg.epochs,
        "seconds_per_epoch": sum(seconds) / max(len(seconds), 1),
        "peak_memory_bytes": int(D.all_reduce_max(meter.peak, cfg.device)),
        "optimizer_steps": opt_steps,
        "history": cfg.history,
    }
