"""Deployed-model evaluation split over processes (``torchrun``), merged bit-exactly.

The samples of a run are independent: sample ``b`` of a batch run equals the same
sample run alone, on every integer backend (``sim/``, Lava ``fixed_pt``). So ``N``
samples can be cut into ``world_size`` contiguous shards (:func:`shard_bounds`, the
first ``N % world_size`` shards one sample longer), each rank runs its shard, and
the per-rank :class:`~lmh_deploy.backends.record.RunRecord` are merged in rank order
(:func:`merge_records`): per-sample arrays are concatenated along their sample axis
(``logits`` axis 0; ``spikes``, ``state_trace``, ``readout_trace`` axis 1 of
``(T, B, ...)``; ``final_state`` axis 0), per-layer counters (``synops``,
``saturation``, and the per-layer ``spike_stats`` counts of streaming runs) are
summed. For ``sim/`` the merged record equals the unsharded one exactly (integer
arithmetic; tested in ``tests/test_distributed.py``).

Lava records carry only the last sample's final state (``(1, n)``); merging
concatenates those rows, so row ``-1`` is still the last sample's state, which is
what :func:`lmh_deploy.pipeline.verify.compare_lava_sim` compares.

The exchange is ``torch.distributed.all_gather_object`` on the default group (gloo
is enough; with nccl it is routed through the current CUDA device), so every rank
ends with the whole record; typically only rank 0 then prints and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lmh_deploy.backends.record import RunRecord
from lmh_deploy.parallel import is_initialized, shard_bounds, split_sizes

__all__ = [
    "shard_bounds",
    "split_sizes",
    "shard_inputs",
    "merge_records",
    "gather_records",
    "run_sharded",
    "simulate_shard",
    "simulate_sharded",
    "dist_rank_world",
]


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if is_initialized():
        import torch.distributed as dist

        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_inputs(x: np.ndarray, rank: int, world_size: int, *, axis: int = 0) -> np.ndarray:
    """Rank ``rank``'s contiguous share of the samples of ``x`` along ``axis``.

    ``axis=0`` for static inputs ``(B, *shape)``, ``axis=1`` for time-major ``(T, B, ...)``.
    """
    start, stop = shard_bounds(x.shape[axis], rank, world_size)
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _cat(parts: list[np.ndarray], axis: int) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)


def _sum(values: list):
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def merge_records(records: Sequence[RunRecord | None]) -> RunRecord:
    """One record of all samples from per-shard records in shard order (``None``: empty shard)."""
    recs = [r for r in records if r is not None]
    if not recs:
        raise ValueError("merge_records: no non-empty shard to merge")
    first = recs[0]
    merged = RunRecord(logits=_cat([r.logits for r in recs], 0))
    for name in first.spikes:
        merged.spikes[name] = _cat([r.spikes[name] for r in recs], 1)
    for name in first.final_state:
        merged.final_state[name] = (
            _cat([r.final_state[name][0] for r in recs], 0),
            _cat([r.final_state[name][1] for r in recs], 0),
        )
    for name in first.state_trace:
        merged.state_trace[name] = (
            _cat([r.state_trace[name][0] for r in recs], 1),
            _cat([r.state_trace[name][1] for r in recs], 1),
        )
    for name in first.saturation:
        merged.saturation[name] = _sum([r.saturation[name] for r in recs])
    for name in first.synops:
        merged.synops[name] = _sum([r.synops[name] for r in recs])
    if first.readout_trace is not None:
        merged.readout_trace = _cat([r.readout_trace for r in recs if r.readout_trace is not None], 1)
    for name, stats in getattr(first, "spike_stats", {}).items():
        # counts over samples (per-step spike counts, active neurons, neuron-steps): sums
        merged.spike_stats[name] = {key: _sum([r.spike_stats[name][key] for r in recs]) for key in stats}
    return merged


def gather_records(rec: RunRecord | None) -> RunRecord:
    """All ranks' records (rank order), merged; every rank gets the result.

    Without a multi-process group this is ``rec`` itself.
    """
    rank, world = dist_rank_world()
    if world == 1:
        if rec is None:
            raise ValueError("gather_records: empty record and no other rank")
        return rec
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, rec)
    return merge_records(parts)


def run_shard(
    fn: Callable[[np.ndarray], RunRecord],
    x: np.ndarray,
    *,
    axis: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
) -> RunRecord | None:
    """Run ``fn`` on this rank's shard of ``x``: this rank's record (``None`` for an empty
    shard, where ``fn`` is not called).

    ``fn`` is any backend taking the samples of one shard, e.g.
    ``lambda xs: simulate(graph, xs, T)`` or ``lambda xs: run_lava(graph, xs, T)``.
    ``rank``/``world_size`` default to the default process group's (one process: all of ``x``).
    """
    g_rank, g_world = dist_rank_world()
    rank = g_rank if rank is None else rank
    world_size = g_world if world_size is None else world_size
    shard = shard_inputs(x, rank, world_size, axis=axis)
    return fn(shard) if shard.shape[axis] else None


def run_sharded(fn: Callable[[np.ndarray], RunRecord], x: np.ndarray, *, axis: int = 0) -> RunRecord:
    """:func:`run_shard` on every rank of the default group, all ranks' records merged."""
    return gather_records(run_shard(fn, x, axis=axis))


def _batch_axis(graph, x_int: np.ndarray) -> int:
    """Sample axis: 0 for static ``(B, *shape)``, 1 for time-major ``(T, B, *shape)`` inputs."""
    q_input = graph.node(graph.order()[0])
    return 0 if x_int.ndim == len(q_input.shape) + 1 else 1


def simulate_shard(
    graph, x_int: np.ndarray, timesteps: int, rank: int, world_size: int, **sim_kwargs
) -> RunRecord | None:
    """``sim.simulate`` on shard ``rank`` of ``world_size`` (``None`` if that shard is empty).

    ``sim_kwargs`` go to ``simulate`` (e.g. ``record_states=True``).
    """
    from lmh_deploy.sim import simulate

    return run_shard(
        lambda xs: simulate(graph, xs, timesteps, **sim_kwargs),
        x_int,
        axis=_batch_axis(graph, x_int),
        rank=rank,
        world_size=world_size,
    )


def simulate_sharded(graph, x_int: np.ndarray, timesteps: int, **sim_kwargs) -> RunRecord:
    """``sim.simulate`` split over the ranks of the default group, merged on every rank.

    Equals ``simulate(graph, x_int, timesteps, **sim_kwargs)`` exactly; single-process it
    is that call.
    """
    from lmh_deploy.sim import simulate

    return run_sharded(
        lambda xs: simulate(graph, xs, timesteps, **sim_kwargs), x_int, axis=_batch_axis(graph, x_int)
    )
