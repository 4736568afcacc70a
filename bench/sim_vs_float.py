"""sim/ against float PyTorch at its best, for every shape the project reports (one harness).

Rows (``--rows``; all by default):

* ``mlp``: random LM-H MLP 64-400-400-400-10 (digits 8x8 input), T = 100, batch 256;
* ``mlp-b1``: the same net, 20 samples run one at a time (batch 1);
* ``cnn``: the mnist5k ``cnn`` (width 0.5, 28x28), T = 8, batch 256;
* ``resnet19``, ``vgg13``: width 1, 3x32x32, T = 4, batch 16, BN-calibrated so that every
  layer fires ``--rate`` of its neuron-steps in float (:mod:`calibrate`; the rates sim/ then
  has are measured and reported per layer).

Every net has non-trivial LM-H factors. Float PyTorch is the fastest of the variants in
:mod:`float_baselines` (the model as built, a lean in-place loop, channels-last; one thread and
all threads), picked by its median over the later half of its warm-up runs
(:func:`timing.fastest`); sim/ runs streaming (``record_spikes=False``), at its
best too: at ``--threads`` threads and at all threads (torch, BLAS and numba alike; at
more than one thread with and without batch shards, :func:`sim_variants`), picked the same
way; a third side, ``sim dense``, is the same sim/ with its event-driven
ways switched off (float BLAS / convolution only), picked the same way. The three sides
alternate over ``--rounds`` rounds (:func:`timing.alternate`); every ratio is the median of
the per-round ratios, with its spread. Spikes of ``--check-samples`` samples are compared
with the slow reference run (:mod:`lmh_deploy.sim.reference`) in every variant sim/
tried, and the two sim/ sides' logits with each other. Each row
records its own run (command, date, commit, load); ``--update`` re-measures only ``--rows``
in an existing JSON.

    python bench/sim_vs_float.py --json bench/sim_vs_float.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lmh_deploy  # noqa: F401  - Lava import fix
from calibrate import calibrate
from float_baselines import best_float
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.models.architectures import build
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate
from lmh_deploy.sim.reference import simulate_reference
from lmh_deploy.sim import simulator
from lmh_deploy.sim.simulator import plan_for
from lmh_deploy.sim.way_costs import EARLY_RETIMES
from timing import alternate, environment, fastest, save, set_threads, threaded

MLP = {"arch": "mlp", "shape": (1, 8, 8), "kw": {"hidden": (400, 400, 400)}, "steps": 100, "lam_s": 0.8}
ROWS = {
    "mlp": MLP | {"batch": 256},
    "mlp-b1": MLP | {"batch": 1, "samples": 20},
    "cnn": {
        "arch": "cnn",
        "shape": (1, 28, 28),
        "kw": {"width_mult": 0.5},
        "steps": 8,
        "batch": 256,
        "lam_s": 0.8,
    },
    "resnet19": {
        "arch": "resnet19",
        "shape": (3, 32, 32),
        "kw": {},
        "steps": 4,
        "batch": 16,
        "calibrated": True,
    },
    "vgg13": {"arch": "vgg13", "shape": (3, 32, 32), "kw": {}, "steps": 4, "batch": 16, "calibrated": True},
}


def dense_only(q):
    """A copy of graph ``q`` whose sim/ plan uses float BLAS / convolution only (no events)."""
    twin = copy.copy(q)  # a different graph object: its own cached plan, same nodes
    plan = plan_for(twin, None)
    plan.chain = None  # the whole-run MLP kernel sums by events
    for path in plan.paths.values():
        path.ways = ["gemm"]
    return twin


def warm_runs(q) -> int:
    """Runs after which every synapse path of ``q`` has used each of its ways twice (the
    first use of a way is not timed: it may compile), even with one call per run, and has
    had its early re-timings (:data:`lmh_deploy.sim.way_costs.EARLY_RETIMES` up to call 16;
    a run's first calls are slow): the plan a long run reaches and keeps."""
    ways = max((len(p.ways) for p in plan_for(q, None).paths.values()), default=1)
    return max(2 * ways + 1, EARLY_RETIMES[1])


def prepared(name: str, args) -> tuple:
    """The float model (calibrated where the row says), its quantised graph, and the row's
    inputs as floats and as quantised integers; the float rates of calibration, or None."""
    spec = ROWS[name]
    steps, shape = spec["steps"], spec["shape"]
    torch.manual_seed(args.seed)
    model = build(spec["arch"], shape, 10, timesteps=steps, **spec["kw"]).eval()
    for neuron in model.neurons():
        neuron.set_factors(mu_d=-0.2, mu_s=0.1, lam_d=1.2, lam_s=spec.get("lam_s", 0.9))
    rng = np.random.default_rng(args.seed)
    float_rates = None
    if spec.get("calibrated"):
        calib = torch.as_tensor(rng.random((args.calibration_batch, *shape)), dtype=torch.float32)
        float_rates = calibrate(model, calib, steps, args.rate)
    q, _ = quantize_graph(export_model(model, input_shape=shape, timesteps=steps))
    x = rng.random((spec.get("samples", spec["batch"]), *shape))
    return model, q, x, fx.quantize_input(x, q.node("input").scale), float_rates


def thread_counts(threads: int) -> list[int]:
    """The thread counts each side tries: ``threads`` and every CPU this process may use."""
    return sorted({threads, len(os.sched_getaffinity(0))})


def sim_variants(counts: list[int]) -> dict[str, tuple[int, bool]]:
    """sim/'s variants: label -> (threads, batch shards). At more than one thread, sim/ splits
    the work inside each layer (its neuron kernel's batch rows, torch's intra-op threads)
    or, with batch shards, runs each shard of the batch whole in its own thread."""
    variants = {}
    for n in counts:
        variants[f"{n} thread{'s' if n > 1 else ''}"] = (n, False)
        if n > 1:
            variants[f"{n} threads, batch shards"] = (n, True)
    return variants


def best_sim(
    twin: Callable[[], Any], run: Callable[[Any, bool], Any], counts: list[int], warm: int
) -> tuple[str, Callable[[], Any], dict[str, float]]:
    """sim/ at its best, as float's variants are picked: ``run(graph, shards)`` in each of
    :func:`sim_variants`, each on its own graph ``twin()`` (a copy: its own plan and measured
    way costs), warmed up ``warm`` times in turns; the fastest by its median over the later
    half of the warm-up (:func:`timing.fastest`; the first calls compile and time every
    synapse way). Returns its name, the run, and every variant's median warm-up seconds."""
    graphs = {label: (n, shards, twin()) for label, (n, shards) in sim_variants(counts).items()}
    runs = {label: threaded(partial(run, graph, shards), n) for label, (n, shards, graph) in graphs.items()}
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(warm):
        for label, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    pick, medians = fastest(times)
    for label, (_, _, graph) in graphs.items():  # the other variants' plans: memory not needed
        if label != pick:
            simulator._PLANS.pop((id(graph), None), None)
    return pick, runs[pick], medians


def bench_row(name: str, args) -> dict:
    spec = ROWS[name]
    steps, shape, batch = spec["steps"], spec["shape"], spec["batch"]
    model, q, x, x_int, float_rates = prepared(name, args)
    samples = len(x)
    xt = torch.as_tensor(x, dtype=torch.float32)
    conv = spec["arch"] != "mlp"
    counts = thread_counts(args.threads)

    chunks = [slice(i, i + batch) for i in range(0, samples, batch)]
    first = chunks[0]
    variant, float_fn, float_warm, float_checks = best_float(
        model, xt[first], steps, conv=conv, threads=args.threads
    )
    records: dict[str, list] = {}

    def sim_run(key: str, graph, shards: bool) -> None:
        records[key] = [
            simulate(graph, x_int[c], steps, record_spikes=False, batch_shards=shards) for c in chunks
        ]

    # warm-up beyond the harness's: compiles, plans, and lets every synapse path time each of
    # its ways twice and re-time the runner-up, as the plan a long run reuses for all its
    # mini-batches would have
    warm = warm_runs(q)
    sim_variant, sim_fn, sim_warm = best_sim(partial(copy.copy, q), partial(sim_run, "sim"), counts, warm)
    dense_variant, dense_fn, dense_warm = best_sim(
        partial(dense_only, q), partial(sim_run, "sim dense"), counts, warm
    )
    sides = {"float": lambda: [float_fn(xt[c]) for c in chunks], "sim": sim_fn, "sim dense": dense_fn}
    timed = alternate(
        sides,
        rounds=args.rounds,
        warmup=1,
        ratios={"sim_over_float": ("float", "sim"), "sim_dense_over_float": ("float", "sim dense")},
        settle=args.settle,
    )

    k = min(args.check_samples, samples)
    ref = simulate_reference(q, x_int[:k], steps)
    identical = all(
        np.array_equal(a.logits, b.logits) for a, b in zip(records["sim"], records["sim dense"], strict=True)
    )
    for n, shards in sim_variants(counts).values():  # the reference's spikes in every variant
        fast = threaded(partial(simulate, q, x_int[:k], steps, batch_shards=shards), n)()
        identical &= bool(
            np.array_equal(ref["logits"], fast.logits)
            and all(np.array_equal(s, fast.spikes[layer]) for layer, s in ref["spikes"].items())
        )
    per_layer = {}
    for layer in q.of_kind("q_lmh"):
        fired = sum(int(r.spike_stats[layer]["spikes_per_step"].sum()) for r in records["sim"])
        total = sum(r.spike_stats[layer]["neuron_steps"] for r in records["sim"])
        per_layer[layer] = fired / total
    neurons = {n: q.node(n).size for n in q.of_kind("q_lmh")}
    overall = sum(per_layer[n] * neurons[n] for n in neurons) / sum(neurons.values())
    per_sample = {side: {k: v / samples for k, v in s.items()} for side, s in timed["seconds"].items()}
    return {
        "row": name,
        "arch": spec["arch"],
        "arch_kwargs": spec["kw"],
        "input_shape": list(shape),
        "T": steps,
        "batch": batch,
        "samples": samples,
        "neurons": int(sum(neurons.values())),
        "calibrated_rate": args.rate if spec.get("calibrated") else None,
        "float_rate_per_layer": float_rates,
        "firing_rate": overall,
        "firing_rate_per_layer": per_layer,
        "float_variant": variant,
        "float_warmup_s": float_warm,
        "float_variant_outputs_differing": float_checks,
        "sim_variant": sim_variant,
        "sim_warmup_s": sim_warm,
        "sim_dense_variant": dense_variant,
        "sim_dense_warmup_s": dense_warm,
        "seconds_per_sample": per_sample,
        "sim_over_float": timed["ratios"]["sim_over_float"],
        "sim_dense_over_float": timed["ratios"]["sim_dense_over_float"],
        "cpu_seconds_per_sample": {
            side: {k: v / samples for k, v in s.items()} for side, s in timed["cpu_seconds"].items()
        },
        # CPU time sums all threads: compare it only where both sides ran one thread
        "cpu_sim_over_float": timed["cpu_ratios"]["sim_over_float"],
        "cpu_sim_dense_over_float": timed["cpu_ratios"]["sim_dense_over_float"],
        "timing": {
            k: timed[k]
            for k in ("rounds", "warmup", "order", "settle_s", "per_round", "cpu_per_round", "load_per_round")
        },
        "spikes_identical": identical,
        "checked_samples": k,
        "checked_threads": counts,
        "checked_variants": list(sim_variants(counts)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=0.15, help="calibrated firing rate of the conv nets")
    parser.add_argument("--calibration-batch", type=int, default=4)
    parser.add_argument("--check-samples", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="threads each side tries besides all threads (at its best)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--settle",
        type=float,
        default=0.2,
        help="untimed seconds before every timed call (the sim dense side left an OpenMP team "
        "spinning ~0.1 s on this 2-core machine, which doubled the time of the side after it)",
    )
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only these rows in the existing --json file (each row keeps its own run's record)",
    )
    args = parser.parse_args()
    set_threads(args.threads)
    env = environment(args.threads)
    rows = []
    for name in args.rows:
        row_env = environment(args.threads)
        rows.append(bench_row(name, args) | {"run": save(None, {}, row_env)})
        row = rows[-1]
        print(
            f"{name}: sim/float {row['sim_over_float']['median']:.2f}x "
            f"[{row['sim_over_float']['min']:.2f}-{row['sim_over_float']['max']:.2f}], dense-only "
            f"{row['sim_dense_over_float']['median']:.2f}x; CPU time: "
            f"{row['cpu_sim_over_float']['median']:.2f}x, "
            f"dense-only {row['cpu_sim_dense_over_float']['median']:.2f}x; float {row['float_variant']}, "
            f"sim {row['sim_variant']}, dense-only {row['sim_dense_variant']}, "
            f"firing {row['firing_rate']:.3f}, identical {row['spikes_identical']}",
            flush=True,
        )
    if args.update and args.json and Path(args.json).exists():
        old = json.loads(Path(args.json).read_text())
        run = {"command": old["command"], "environment": old["environment"]}
        kept = {row["row"]: {"run": run} | row for row in old["rows"]}
        kept |= {row["row"]: row for row in rows}
        rows = [kept[name] for name in ROWS if name in kept]
    unit = "seconds per sample; ratios = float time / sim time within a round, median over rounds"
    save(args.json, {"unit": unit, "rows": rows}, env)


if __name__ == "__main__":
    main()
