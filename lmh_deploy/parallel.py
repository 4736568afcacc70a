"""Process groups and sample shards shared by training and evaluation (torchrun).

Nothing here starts processes: ``torchrun`` (or any launcher that sets the same
environment) does. :func:`init_from_env` reads ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and initialises the default
process group with ``gloo`` on CPU or ``nccl`` on CUDA (one GPU per process:
``cuda:LOCAL_RANK``). Without those variables everything runs single-process and
every helper is the identity / a no-op. Training-only parts (samplers, DDP, loss
weights) live in :mod:`lmh_deploy.models.distributed`; sharded evaluation in
:mod:`lmh_deploy.backends.sharding`.
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any
from collections.abc import Iterator

from lmh_deploy.errors import InputError, UnavailableError

#: Variables torchrun sets for every worker; all must be present to go distributed.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, its device and backend.

    ``owns_group``: this context initialised the process group (and so destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """A process group is in use (possibly of one process)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes files, logs and reports progress."""
        return self.rank == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-simple summary stored in the training metrics."""
        return {"world_size": self.world_size, "backend": self.backend, "device": self.device}


def free_port() -> int:
    """A TCP port free on this host now (for a process group's ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """This process's environment as torchrun gives it to rank ``rank`` of ``world`` ranks on
    this host (no torchrun variable of our own kept): how benchmarks and tests start ranks
    without torchrun."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return env


def torchrun_env_present(env: dict[str, str] | None = None) -> bool:
    """True when every variable of :data:`TORCHRUN_ENV` is set (we run under torchrun)."""
    seen: Mapping[str, str] = os.environ if env is None else env
    return all(seen.get(k) not in (None, "") for k in TORCHRUN_ENV)


def env_rank() -> int:
    """This process's rank from torchrun's environment (0 when not under torchrun).

    Usable before the process group exists, e.g. to silence a progress bar on ranks > 0.
    """
    return int(os.environ.get("RANK", "0") or 0) if torchrun_env_present() else 0


def is_main_process() -> bool:
    """Rank 0 of the initialised group, else of torchrun's environment, else True."""
    if is_initialized():
        return _dist().get_rank() == 0
    return env_rank() == 0


def _dist() -> Any:
    """``torch.distributed``, imported on first use: a run outside torchrun (e.g. a Lava
    run, which needs no torch) does not pay torch's import for it."""
    import torch.distributed

    return torch.distributed


def is_initialized() -> bool:
    """A default process group exists (none can before torch.distributed is imported)."""
    if "torch.distributed" not in sys.modules:
        return False
    return _dist().is_available() and _dist().is_initialized()


def world_size() -> int:
    """Processes in the default group (1 when there is none)."""
    return _dist().get_world_size() if is_initialized() else 1


def rank() -> int:
    """Rank in the default group (0 when there is none)."""
    return _dist().get_rank() if is_initialized() else 0


def _device_for(device: str, local_rank: int) -> str:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UnavailableError("device 'cuda' requested but torch.cuda is not available")
        if ":" in device:  # an explicit index is only meaningful single-process
            return device
        return f"cuda:{local_rank}"
    if device != "cpu":
        raise InputError(f"unknown device {device!r}; supported: cpu, cuda")
    return device


def init_from_env(device: str = "cpu", *, timeout_s: float | None = None) -> DistContext:
    """Join torchrun's process group when its environment is present.

    * group already initialised (by the caller): use it, do not own it;
    * torchrun environment present: ``init_process_group("nccl" on CUDA, else "gloo")``
      with ``init_method="env://"``; on CUDA the process uses ``cuda:LOCAL_RANK``;
    * otherwise: single process on ``device``.
    """
    if is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0") or 0)
        return DistContext(
            rank=_dist().get_rank(),
            world_size=_dist().get_world_size(),
            local_rank=local,
            device=_device_for(device, local),
            backend=_dist().get_backend(),
            owns_group=False,
        )
    if not torchrun_env_present():
        return DistContext(device=_device_for(device, 0))
    if not _dist().is_available():
        raise UnavailableError("torchrun environment found but this torch has no torch.distributed")
    local = int(os.environ["LOCAL_RANK"])
    dev = _device_for(device, local)
    backend = "nccl" if dev.startswith("cuda") else "gloo"
    import torch

    if backend == "nccl":
        torch.cuda.set_device(torch.device(dev))
    kwargs: dict[str, Any] = {"backend": backend, "init_method": "env://"}
    if timeout_s is not None:
        from datetime import timedelta

        kwargs["timeout"] = timedelta(seconds=timeout_s)
    if backend == "nccl":
        kwargs["device_id"] = torch.device(dev)
    _dist().init_process_group(**kwargs)
    return DistContext(
        rank=_dist().get_rank(),
        world_size=_dist().get_world_size(),
        local_rank=local,
        device=dev,
        backend=backend,
        owns_group=True,
    )


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group if ``ctx`` created it."""
    if ctx.owns_group and is_initialized():
        import gc

        gc.collect()  # DDP wrappers left in reference cycles go before their group does
        _dist().destroy_process_group()


@contextmanager
def distributed_context(device: str = "cpu") -> Iterator[DistContext]:
    """``init_from_env`` on entry, :func:`shutdown` on exit (also after an exception)."""
    ctx = init_from_env(device)
    try:
        yield ctx
    finally:
        shutdown(ctx)


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if is_initialized() and _dist().get_world_size() > 1:
        _dist().barrier()


def split_sizes(n: int, parts: int) -> list[int]:
    """Sizes of ``parts`` contiguous pieces of ``n`` items; the first ``n % parts`` get one more."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    base, extra = divmod(int(n), parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def shard_bounds(n: int, rank: int, parts: int) -> tuple[int, int]:
    """``[start, stop)`` of piece ``rank`` in :func:`split_sizes` (contiguous, deterministic)."""
    if not 0 <= rank < parts:
        raise ValueError(f"rank {rank} outside 0..{parts - 1}")
    sizes = split_sizes(n, parts)
    start = sum(sizes[:rank])
    return start, start + sizes[rank]
