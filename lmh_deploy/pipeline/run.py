"""The run stage: execute an artifact's integer graph on the simulator for reports.

Reports and plots only draw what this stage measured; they never run a network.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lmh_deploy.files import atomic_write
from lmh_deploy.reports.record import RunRecord
from lmh_deploy.reports.summary import summarize
from lmh_deploy.sim import default_batch_size, run_in_batches, simulate_batched


def run_backend(qgraph, x_int: np.ndarray, timesteps: int, backend: str = "sim", *,
                batch_size: int | None = None, record_spikes: bool = True,
                device: str | None = None) -> RunRecord:
    """All samples of ``x_int`` on ``backend`` ("sim" or "lava"), in mini-batches.

    Under torchrun each rank runs its contiguous shard of the samples and the records are
    merged (every rank gets the whole record). ``batch_size`` defaults to what fits a share
    of the free memory (:func:`lmh_deploy.sim.default_batch_size`); memory then no longer
    grows with the number of samples beyond the record itself.
    """
    from lmh_deploy.backends.sharding import run_sharded

    if batch_size is None:
        batch_size = default_batch_size(qgraph, timesteps, record_spikes=record_spikes)
    if backend == "sim":
        return run_sharded(lambda xs: simulate_batched(
            qgraph, xs, timesteps, batch_size=batch_size, record_spikes=record_spikes,
            device=device), x_int)
    if backend == "lava":
        from lmh_deploy.backends.lava.run import run_lava

        return run_sharded(lambda xs: run_in_batches(
            lambda b: run_lava(qgraph, b, timesteps, "fixed_pt"), xs, batch_size), x_int)
    raise ValueError(f"unknown backend {backend!r}; supported: sim, lava")


def t_sweep(qgraph, x_int: np.ndarray, labels: np.ndarray | None,
            t_values: Iterable[int], *, batch_size: int | None = None) -> list[dict[str, Any]]:
    """Run the integer simulator once per ``T`` in ``t_values``; one summary row per ``T``.

    Rows: ``timesteps``, ``accuracy`` (None without labels), ``energy_joules`` (Loihi estimate
    per sample), ``synops_per_sample``, ``spikes_per_sample``, ``ann_energy_joules``.
    Steps beyond the trained ``T`` reuse the last factor row, as the simulator does.
    """
    values = [int(t) for t in t_values]
    if not values:
        raise ValueError("t_sweep needs at least one value of T")
    bad = [t for t in values if t < 1]
    if bad:
        raise ValueError(f"inference steps must be >= 1, got {bad}")
    input_shape = tuple(qgraph.node(qgraph.order()[0]).shape)
    if x_int.ndim != len(input_shape) + 1 and max(values) > x_int.shape[0]:
        raise ValueError(f"time-major input has {x_int.shape[0]} frames; cannot run "
                         f"T = {max(values)} steps")
    rows = []
    for t in values:
        rec = simulate_batched(qgraph, x_int, t, batch_size=batch_size, record_spikes=False)
        s = summarize(qgraph, rec, labels)
        rows.append({"timesteps": t, "accuracy": s.get("accuracy"),
                     "energy_joules": s["energy_joules"],
                     "synops_per_sample": s["totals"]["synops"] / s["samples"],
                     "spikes_per_sample": s["totals"]["spikes"] / s["samples"],
                     "ann_energy_joules": s["ann_energy_joules"]})
    return rows


def save_spike_rasters(path: str | Path, x_int: np.ndarray, rec: RunRecord,
                       input_shape: tuple[int, ...]) -> Path:
    """Write ``input`` (the integer input: (N, features) static or (T, N, features)) and one
    (T, N, neurons) bool raster per spiking layer, keyed by IR layer name, to ``path`` (.npz).

    Anyone can then check a run outside the project. Refuses a streamed run (no rasters) and
    layer names that would collide with ``input``."""
    if not rec.spikes:
        raise ValueError("--save-spikes needs the spike rasters; drop --stream")
    if "input" in rec.spikes:
        raise ValueError("a spiking layer is named 'input'; it would overwrite the input array")
    x = np.asarray(x_int)
    static = x.ndim == len(input_shape) + 1  # else time-major frames (T, N, *shape)
    flat = x.reshape(x.shape[0], -1) if static else x.reshape(x.shape[0], x.shape[1], -1)
    arrays = {"input": flat.astype(np.int64)}
    arrays.update({name: np.asarray(s, bool) for name, s in rec.spikes.items()})
    path = Path(path)
    with atomic_write(path) as f:
        np.savez_compressed(f, **arrays)
    return path
