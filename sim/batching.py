"""Runs in mini-batches under a memory budget, so that a whole test set fits.

Samples are independent on every backend, so a run over ``N`` samples equals the runs over
consecutive mini-batches merged in order (:func:`lmh_deploy.backends.sharding.merge_records`:
concatenated per-sample arrays, summed counters), bit for bit. The default mini-batch is
sized from the memory one sample needs (states, chunk buffers, recorded rasters and traces)
and a budget of a quarter of the memory available now, at most 1 GiB.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from lmh_deploy.sim.simulator import CHUNK_SAMPLE_STEPS

from lmh_deploy.ir import QLMH, Graph, QDense
from lmh_deploy.backends.record import RunRecord
from lmh_deploy.errors import InputError

#: Fraction of the currently available memory a run may plan to use.
MEMORY_FRACTION = 0.25
#: Never plan with less than this, even on a machine that reports little free memory.
MIN_BUDGET_BYTES = 256 << 20
#: Nor with more: beyond a few hundred MB per mini-batch the products are as efficient, and
#: a paper-scale network (ResNet-19 at 32 x 32: ~120 MB per sample) would otherwise take
#: gigabytes on a machine that happens to have them free.
MAX_BUDGET_BYTES = 1 << 30
MAX_BATCH = 4096
#: Fraction of the available memory a whole run's merged record may take.
RECORD_FRACTION = 0.6


def available_memory_bytes() -> int:
    """Memory available to new allocations (Linux ``MemAvailable``; else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def bytes_per_sample(
    graph: Graph,
    timesteps: int,
    *,
    record_spikes: bool = True,
    record_states: bool = False,
    chunk_steps: int | None = None,
) -> int:
    """Peak bytes one sample adds to a simulation of ``timesteps`` steps (an upper estimate).

    Per neuron: states and flags (8 + 8 + 1 + 1 bytes), per chunk step a spike buffer, its
    float copy for the synaptic product and the current (1 + 8 + 8 bytes); per recorded step
    a spike (1 byte) and, with ``record_states``, two int64 states. Synapse outputs: 8 bytes
    per chunk step.
    """
    chunk = chunk_steps or CHUNK_SAMPLE_STEPS
    chunk = min(chunk, timesteps)
    total = 0
    for name in graph.order():
        node = graph.node(name)
        if isinstance(node, QLMH):
            n = int(node.size)
            total += n * (18 + 17 * chunk)
            total += n * timesteps * ((1 if record_spikes else 0) + (16 if record_states else 0))
        elif isinstance(node, QDense):
            total += 8 * chunk * int(node.output_size())
        else:
            total += 8 * chunk * int(node.output_size()) + 8 * timesteps * int(node.output_size())
    return max(total, 1)


def kept_bytes_per_sample(graph: Graph, timesteps: int, *, record_spikes: bool = True) -> int:
    """Bytes one sample keeps in a whole run's merged record (an estimate from the graph's
    sizes alone): the spike rasters (1 byte per neuron and step of each LM-H layer, when
    recorded), the final states (16 bytes per neuron), the readout trace (8 bytes per class
    and step), the logits and the integer input."""
    total = 0
    for name in graph.order():
        node = graph.node(name)
        if isinstance(node, QLMH):
            total += int(node.size) * ((timesteps if record_spikes else 0) + 16)
        elif name == graph.order()[-1]:
            total += 8 * int(node.output_size()) * (timesteps + 1)
        elif name == graph.order()[0]:
            total += 8 * int(node.output_size())
    return max(total, 1)


def check_run_fits(
    graph: Graph,
    samples: int,
    timesteps: int,
    *,
    record_spikes: bool = True,
    records: int = 1,
    stream_hint: bool = True,
    available: int | None = None,
) -> None:
    """Refuse, before anything is allocated, a run whose merged records cannot fit the memory
    available now (:func:`kept_bytes_per_sample` per sample and record; ``verify`` keeps two,
    the source's and sim/'s), naming the options that make it fit (``--stream`` only where
    the command has it: ``stream_hint``)."""
    per_sample = records * kept_bytes_per_sample(graph, timesteps, record_spikes=record_spikes)
    need = samples * per_sample
    free = available if available is not None else available_memory_bytes()
    if need <= RECORD_FRACTION * free:
        return
    fits = max(0, int(RECORD_FRACTION * free) // per_sample)
    fixes = f"run at most --samples {fits}" + (
        ", or pass --stream (spike counts only)" if record_spikes and stream_hint else ""
    )
    raise InputError(
        f"--samples {samples}: this run would keep about {need / 2**30:.1f} GiB ({per_sample} bytes per "
        f"sample over {timesteps} steps), more than the {free / 2**30:.1f} GiB of memory available; {fixes}"
    )


def default_batch_size(graph: Graph, timesteps: int, *, budget_bytes: int | None = None, **record) -> int:
    """Samples per mini-batch that fit ``budget_bytes`` (default: a share of free memory)."""
    budget = budget_bytes or min(
        MAX_BUDGET_BYTES, max(MIN_BUDGET_BYTES, int(MEMORY_FRACTION * available_memory_bytes()))
    )
    per_sample = bytes_per_sample(graph, timesteps, **record)
    return int(min(MAX_BATCH, max(1, budget // per_sample)))


def run_in_batches(
    fn: Callable[[np.ndarray], RunRecord], x: np.ndarray, batch_size: int, *, axis: int = 0
) -> RunRecord:
    """``fn`` over consecutive mini-batches of ``x`` (samples on ``axis``), records merged.

    Equals :func:`lmh_deploy.backends.sharding.merge_records` of the per-batch records, but
    each batch is copied into the whole run's arrays as soon as it is done, so the peak
    memory is the record plus one mini-batch, not twice the record.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    n = x.shape[axis]
    if n <= batch_size:
        return fn(x)
    index = [slice(None)] * x.ndim
    merged = None
    for start in range(0, n, batch_size):
        index[axis] = slice(start, start + batch_size)
        rec = fn(x[tuple(index)])
        if merged is None:
            merged = _allocate(rec, n)
        _add_batch(merged, rec, start)
    return merged


def merged_records(records: list[RunRecord], starts: list[int], n: int) -> RunRecord:
    """One record of ``n`` samples from the records of consecutive batches starting at
    ``starts`` (per-sample arrays placed, counters summed): what one run gives."""
    merged = _allocate(records[0], n)
    for rec, start in zip(records, starts, strict=True):
        _add_batch(merged, rec, start)
    return merged


def _whole(part: np.ndarray, n: int, axis: int) -> np.ndarray:
    shape = list(part.shape)
    shape[axis] = n
    return np.empty(shape, part.dtype)


def _allocate(first: RunRecord, n: int) -> RunRecord:
    """An empty record for ``n`` samples shaped like ``first`` (counters start at zero)."""
    rec = RunRecord(logits=_whole(first.logits, n, 0))
    rec.spikes = {k: _whole(v, n, 1) for k, v in first.spikes.items()}
    rec.final_state = {k: tuple(_whole(a, n, 0) for a in v) for k, v in first.final_state.items()}
    rec.state_trace = {k: tuple(_whole(a, n, 1) for a in v) for k, v in first.state_trace.items()}
    if first.readout_trace is not None:
        rec.readout_trace = _whole(first.readout_trace, n, 1)
    rec.saturation = dict.fromkeys(first.saturation, 0)
    rec.synops = dict.fromkeys(first.synops, 0)
    rec.spike_stats = {k: dict.fromkeys(v, 0) for k, v in first.spike_stats.items()}
    return rec


def _add_batch(merged: RunRecord, rec: RunRecord, start: int) -> None:
    """Copy one mini-batch's per-sample arrays in at ``start``; add its counters."""
    stop = start + rec.logits.shape[0]
    merged.logits[start:stop] = rec.logits
    for k, v in rec.spikes.items():
        merged.spikes[k][:, start:stop] = v
    for k, v in rec.final_state.items():
        for whole, part in zip(merged.final_state[k], v):
            whole[start:stop] = part
    for k, v in rec.state_trace.items():
        for whole, part in zip(merged.state_trace[k], v):
            whole[:, start:stop] = part
    if rec.readout_trace is not None:
        merged.readout_trace[:, start:stop] = rec.readout_trace
    for k, v in rec.saturation.items():
        merged.saturation[k] += v
    for k, v in rec.synops.items():
        merged.synops[k] += v
    for k, stats in rec.spike_stats.items():
        for key, value in stats.items():
            merged.spike_stats[k][key] = merged.spike_stats[k][key] + value


def simulate_batched(
    graph: Graph, x_int: np.ndarray, timesteps: int, *, batch_size: int | None = None, **kwargs
) -> RunRecord:
    """:func:`lmh_deploy.sim.simulate` in mini-batches of ``batch_size`` samples (default:
    :func:`default_batch_size`); the merged record equals the single run's exactly."""
    from lmh_deploy.sim.simulator import simulate

    static = x_int.ndim == len(graph.node(graph.order()[0]).shape) + 1
    if batch_size is None:
        batch_size = default_batch_size(
            graph,
            timesteps,
            record_spikes=kwargs.get("record_spikes", True),
            record_states=kwargs.get("record_states", False),
        )
    return run_in_batches(
        lambda xs: simulate(graph, xs, timesteps, **kwargs), x_int, batch_size, axis=0 if static else 1
    )
