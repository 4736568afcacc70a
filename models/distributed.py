"""torch.distributed plumbing for training and evaluation (issue 8), launched by ``torchrun``.

Nothing here starts processes: ``torchrun`` (or any launcher that sets the same
environment) does. :func:`init_from_env` reads ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and initialises the default
process group with ``gloo`` on CPU or ``nccl`` on CUDA (one GPU per process:
``cuda:LOCAL_RANK``). Without those variables everything runs single-process
and every helper below is the identity / a no-op.

Semantics used by :func:`models.training_job.run_training_job` (see
``docs/distributed.md``):

* ``batch_size`` is the **global** batch: each optimiser step sees the same
  ``batch_size`` samples as a single-process run, split into ``world_size``
  contiguous parts (sizes differ by at most one), one per rank
  (:class:`ShardedBatchSampler`). The learning rate therefore keeps its
  single-process meaning and a run on ``N`` processes is the same optimisation
  as on one, up to float summation order.
* every rank's loss is weighted by ``n_rank * world_size / n_global``
  (:func:`loss_weight`), so that DDP's gradient average equals the gradient of
  the mean loss over the global batch even when the parts are unequal (the last
  batch of an epoch) or empty.
* batch-norm statistics are reduced over all ranks (:mod:`models.norm`).
* only rank 0 writes files, logs or reports progress.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, Sampler

# re-exported: models.distributed keeps the names it had before they moved to lmh_deploy.parallel
from lmh_deploy.parallel import (
    TORCHRUN_ENV,  # noqa: F401
    DistContext,  # noqa: F401
    barrier,  # noqa: F401
    distributed_context,  # noqa: F401
    init_from_env,  # noqa: F401
    is_initialized,
    is_main_process,  # noqa: F401
    rank,  # noqa: F401
    shard_bounds,
    shutdown,  # noqa: F401
    split_sizes,  # noqa: F401
    torchrun_env_present,  # noqa: F401
    env_rank,  # noqa: F401
    world_size,
)


def all_reduce_sum(values: Sequence[float] | torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """Sum a small vector over ranks (float64; returned on the CPU)."""
    t = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if is_initialized() and dist.get_world_size() > 1:
        # nccl reduces only CUDA tensors; gloo takes CPU tensors
        on = t.to(device) if dist.get_backend() == "nccl" else t
        dist.all_reduce(on, op=dist.ReduceOp.SUM)
        t = on.cpu()
    return t


def all_reduce_max(value: float, device: str = "cpu") -> float:
    """Largest ``value`` over ranks."""
    t = torch.tensor([float(value)], dtype=torch.float64)
    if is_initialized() and dist.get_world_size() > 1:
        on = t.to(device) if dist.get_backend() == "nccl" else t
        dist.all_reduce(on, op=dist.ReduceOp.MAX)
        t = on.cpu()
    return float(t.item())


class _DifferentiableAllReduce(torch.autograd.Function):
    """``sum over ranks`` whose backward is the sum of the incoming gradients over ranks.

    Every rank's output is the same sum, and each rank back-propagates its own loss
    through it, so ``d(sum_r L_r)/d x_local = sum_r dL_r/d(sum)``: an all-reduce of the
    gradient (what :class:`torch.nn.SyncBatchNorm` does in its backward).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def differentiable_all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Autograd-aware sum over ranks (identity without a multi-process group)."""
    if not (is_initialized() and dist.get_world_size() > 1):
        return x
    return _DifferentiableAllReduce.apply(x)


def sync_batchnorm_active() -> bool:
    """Batch-norm statistics are reduced over ranks: a group of more than one process."""
    return is_initialized() and dist.get_world_size() > 1


# --------------------------------------------------------------------------- data


class ShardedBatchSampler(Sampler[list[int]]):
    """Each global batch of ``batch_sampler``, cut into ``world_size`` contiguous parts.

    Rank ``r`` gets part ``r`` of every global batch, so all ranks take the same number
    of steps per epoch (no DDP hang on uneven data, no duplicated padding samples as
    :class:`~torch.utils.data.DistributedSampler` adds) and the union of the parts of
    step ``i`` is exactly the ``i``-th batch of the single-process loader. Every rank
    builds ``batch_sampler`` from the same seed, so all ranks draw the same shuffle.
    A part may be empty when a global batch is smaller than ``world_size``.

    ``set_epoch`` exists for the usual ``DistributedSampler`` loop; the order already
    advances per epoch exactly as in the single-process loader (a seeded generator
    shared by all epochs), so it only records the epoch.
    """

    def __init__(
        self,
        batch_sampler: BatchSampler | Sampler[list[int]],
        rank: int,  # noqa: F811 - the rank this sampler serves, not the function
        world_size: int,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.batch_sampler = batch_sampler
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Record the epoch (the shuffle is driven by the shared seeded generator)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            start, stop = shard_bounds(len(batch), self.rank, self.world_size)
            yield list(batch[start:stop])

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def global_batch_sizes(self) -> list[int] | None:
        """Size of every global batch of an epoch (``None`` if not known up front).

        Lets the training loop weight the losses (:func:`loss_weight`) without an
        all-reduce of the batch sizes at every step.
        """
        bs = self.batch_sampler
        if not isinstance(bs, BatchSampler):
            return None
        n, size = len(bs.sampler), bs.batch_size  # type: ignore[arg-type]
        full, rest = divmod(n, size)
        return [size] * full + ([rest] if rest and not bs.drop_last else [])


class EmptySafeCollate:
    """``default_collate``, except that an empty part (see :class:`ShardedBatchSampler`)
    becomes tensors with 0 rows shaped like the dataset's samples."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __call__(self, batch: list):
        from torch.utils.data import default_collate

        if batch:
            return default_collate(batch)
        sample = self.dataset[0]
        return tuple(torch.as_tensor(v).new_empty((0, *torch.as_tensor(v).shape)) for v in sample)


class ShardSampler(Sampler[int]):
    """The contiguous share ``rank`` of ``range(n)`` (evaluation: no padding, no duplicates)."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:  # noqa: F811
        self.start, self.stop = shard_bounds(n, rank, world_size)
        self.num_replicas = world_size
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def loss_weight(local_n: int, device: str = "cpu", n_global: int | None = None) -> tuple[float, int]:
    """``(n_local * world_size / n_global, n_global)`` for one step (1.0 single-process).

    DDP averages gradients over ranks; weighting each rank's batch-mean loss by this
    factor makes that average the gradient of the mean over the global batch.
    ``n_global``: the global batch size when known (else all-reduced from the ranks).
    """
    ws = world_size()
    if ws == 1:
        return 1.0, local_n
    if n_global is None:
        n_global = int(all_reduce_sum([float(local_n)], device).item())
    return (local_n * ws / n_global if n_global else 0.0), n_global


# --------------------------------------------------------------------------- model


def wrap_ddp(model: nn.Module, device: str) -> nn.Module:
    """``DistributedDataParallel(model)`` when a group exists, else ``model``.

    No buffer sync in forward (``forward_sync_buffers=False``; ``broadcast_buffers=False``
    before torch 2.13): the only buffers that change in training are the
    batch-norm running statistics, and those are computed from statistics reduced over
    all ranks (:mod:`models.norm`), hence identical everywhere; re-broadcasting them at
    every forward would only cost time (and would need every rank to run every forward).
    """
    if not is_initialized():
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    # torch >= 2.13 renames the flag (the old name still works but warns)
    params = inspect.signature(DDP.__init__).parameters
    kwargs: dict[str, Any] = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )
    if device.startswith("cuda"):
        idx = torch.device(device).index
        kwargs.update(device_ids=[idx], output_device=idx)
    return DDP(model, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model.module if isinstance(model, DDP) else model
