"""sim/'s layer-wise neuron kernel on the conv nets' real layer calls, alone.

Builds a row of :mod:`sim_vs_float` exactly as it does (``prepared``: vgg13 / resnet19 by
default, calibrated, T = 4, batch 16), runs it once through sim/ streaming, keeps every
neuron update's arguments (``run_neuron_chunk``: currents, fresh states), then replays those
calls alone, each on a fresh copy of its states: one thread (CPU time of this thread) and
``--threads`` threads (wall; the rows split as sim/ splits them), alternated over
``--rounds`` rounds. Reports ns per neuron-step (per layer and the row's total) and checks
the replayed spikes, states and counts equal the run's own. ``--ref REV``: the same calls
also through ``REV``'s sim/neuron.py and sim/fused.py (loaded as modules of their own from a
temporary directory; the rest of sim/ is this tree's), alternated with this tree's in
every round, and the per-round ratios (tree / ref).

    python bench/neuron_layers.py --rows vgg13 resnet19 --rounds 7 --ref HEAD~1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from lmh_deploy.sim import neuron, simulate, simulator
from sim_vs_float import ROWS, prepared
from timing import environment, save, set_threads, sim_modules_at


def captured_calls(name: str, args) -> list[dict[str, Any]]:
    """Every ``run_neuron_chunk`` call of one streaming run of row ``name``, with copies of
    its currents and of the states before it, and the spikes, states and totals after it."""
    calls: list[dict[str, Any]] = []
    original = simulator.run_neuron_chunk

    def keep(p, t0, currents, weight_exp, state, spikes, **kw):
        before = copy.deepcopy(state)
        totals = original(p, t0, currents, weight_exp, state, spikes, **kw)
        calls.append(
            {
                "args": (p, t0, np.array(currents), weight_exp),
                "kw": {k: kw.get(k) for k in ("steps", "peak")},
                "state": before,
                "spikes": (spikes.shape, spikes.dtype),
                "want": (spikes.copy(), state.v_d.copy(), state.v_s.copy(), np.array(totals)),
            }
        )
        return totals

    _, q, _, x_int, _ = prepared(name, args)
    simulator.run_neuron_chunk = keep
    try:
        simulate(q, x_int, ROWS[name]["steps"], record_spikes=False)
    finally:
        simulator.run_neuron_chunk = original
    return calls


def replay(module, call: dict[str, Any], threads: int, check: bool = False) -> tuple[float, float]:
    """One call through ``module`` (sim/neuron.py, this tree's or ``--ref``'s) on a fresh copy
    of its states at ``threads`` threads: (CPU s, wall s)."""
    state = copy.deepcopy(call["state"])
    spikes = np.empty(*call["spikes"])
    saved = module.sim_threads
    module.sim_threads = lambda: threads
    try:
        cpu, wall = time.thread_time(), time.perf_counter()
        totals = module.run_neuron_chunk(*call["args"], state, spikes, **call["kw"])
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    finally:
        module.sim_threads = saved
    if check:
        want = call["want"]
        got = (spikes, state.v_d, state.v_s, np.asarray(totals))
        if not all(np.array_equal(a, b) for a, b in zip(got, want, strict=True)):
            raise AssertionError("a replayed neuron call differs from the run's own")
    return cpu, wall


PACKAGE = "neuron_layers_ref"


def reference_neuron_module(ref: str, where: Path):
    """``ref``'s sim/neuron.py, using its own sim/fused.py, imported from ``where``."""
    return sim_modules_at(ref, where, PACKAGE, ("neuron", "fused"), "neuron")


def bench_row(name: str, args, sides: dict[str, Any]) -> dict[str, Any]:
    calls = captured_calls(name, args)
    sizes = [c["state"].v_d.size * (c["kw"]["steps"] or c["args"][2].shape[0]) for c in calls]
    counts = (1, args.threads)
    for module in sides.values():  # compile, and check the replay
        for c in calls:
            for threads in counts:
                replay(module, c, threads, check=True)
    # times[side, threads][call][round]: CPU s at one thread, wall s at more
    times = {(side, t): [[] for _ in calls] for side in sides for t in counts}
    for r in range(args.rounds):
        for side in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            for threads in counts:
                for i, c in enumerate(calls):
                    cpu, wall = replay(sides[side], c, threads)
                    times[side, threads][i].append(cpu if threads == 1 else wall)
    total = sum(sizes)

    def per_round(side: str, threads: int) -> list[float]:  # ns per neuron-step of the row
        return [sum(t[r] for t in times[side, threads]) / total * 1e9 for r in range(args.rounds)]

    def call_ns(side: str, threads: int, i: int) -> float:
        return statistics.median(times[side, threads][i]) / sizes[i] * 1e9

    label = {1: "1_thread_cpu", args.threads: f"{args.threads}_threads_wall"}
    row: dict[str, Any] = {"row": name, "calls": len(calls), "neuron_steps": total}
    for side in sides:
        for t in counts:
            row[f"{side}_ns_per_neuron_step_{label[t]}"] = statistics.median(per_round(side, t))
    if "ref" in sides:
        for t in counts:
            ratios = [a / b for a, b in zip(per_round("tree", t), per_round("ref", t), strict=True)]
            row[f"tree_over_ref_{label[t]}"] = {"median": statistics.median(ratios), "all": ratios}
    row["per_call"] = [
        {
            "neurons": int(c["state"].v_d.shape[1]),
            "rows": int(c["state"].v_d.shape[0]),
            "steps": int(sizes[i] // c["state"].v_d.size),
            "current_dtype": str(c["args"][2].dtype),
        }
        | {f"{side}_ns_{label[t]}": call_ns(side, t, i) for side in sides for t in counts}
        for i, c in enumerate(calls)
    ]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", default=["vgg13", "resnet19"], choices=["vgg13", "resnet19"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="the second thread count (wall)")
    parser.add_argument("--ref", default=None, help="git revision whose sim/neuron.py and fused.py run too")
    parser.add_argument("--rate", type=float, default=0.15)
    parser.add_argument("--calibration-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    env = environment(args.threads)
    set_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="neuron_layers_") as where:
        sides: dict[str, Any] = {"tree": neuron}
        if args.ref is not None:
            sides = {"ref": reference_neuron_module(args.ref, Path(where))} | sides
        for name in args.rows:
            row = bench_row(name, args, sides)
            rows.append(row)
            print(f"{name}: {row['neuron_steps']:,} neuron-steps in {row['calls']} calls")
            for key, value in row.items():
                if "_ns_per_neuron_step_" in key or key.startswith("tree_over_ref"):
                    shown = value["median"] if isinstance(value, dict) else value
                    print(f"  {key}: {shown:.3f}")
    save(args.json, {"rows": rows}, env)


if __name__ == "__main__":
    main()
