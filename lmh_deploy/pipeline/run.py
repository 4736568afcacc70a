"""The run stage: execute an artifact's integer graph on the simulator for reports.

Reports and plots only draw what this stage measured; they never run a network.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from lmh_deploy.reports.summary import summarize
from lmh_deploy.sim import simulate


def t_sweep(qgraph, x_int: np.ndarray, labels: np.ndarray | None,
            t_values: Iterable[int]) -> list[dict[str, Any]]:
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
        rec = simulate(qgraph, x_int, t)
        s = summarize(qgraph, rec, labels)
        rows.append({"timesteps": t, "accuracy": s.get("accuracy"),
                     "energy_joules": s["energy_joules"],
                     "synops_per_sample": s["totals"]["synops"] / s["samples"],
                     "spikes_per_sample": s["totals"]["spikes"] / s["samples"],
                     "ann_energy_joules": s["ann_energy_joules"]})
    return rows
