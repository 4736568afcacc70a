"""sim/ against float PyTorch of the same untrained net at the paper's scale (CIFAR size).

For ResNet-19 and VGG-13 (width 1, input 3x32x32, T = 4, non-trivial LM-H factors), runs
float PyTorch inference and sim/ on the quantised twin, both on ``--batch`` samples with
``--threads`` threads, ``--repeats`` times each, alternating (medians), and checks the spikes of
``--check-samples`` samples against the slow reference run (:mod:`lmh_deploy.sim.reference`).
``firing_rate`` is the fraction of neuron-steps that spiked on those samples: sim/'s
event-driven ways do work in proportion to it (untrained nets fire sparsely).

    python bench/sim_vs_float.py --json bench/sim_vs_float.json
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import torch

import lmh_deploy  # noqa: F401  - Lava import fix
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.models.architectures import build
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate
from timing import median_time
from lmh_deploy.sim.reference import simulate_reference

SHAPE = (3, 32, 32)


def bench_arch(arch: str, args) -> dict:
    torch.manual_seed(args.seed)
    model = build(arch, SHAPE, 10, timesteps=args.steps, width_mult=args.width).eval()
    for neuron in model.neurons():
        neuron.set_factors(mu_d=-0.2, mu_s=0.1, lam_d=1.2, lam_s=0.9)
    q, _ = quantize_graph(export_model(model, input_shape=SHAPE, timesteps=args.steps))
    x = np.random.default_rng(args.seed).random((args.batch, *SHAPE))
    x_int = fx.quantize_input(x, q.node("input").scale)
    xt = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        model(xt[:2], args.steps)  # warm-up
    # warm-up: compiles, plans, and lets every synapse path time each of its ways (gemm,
    # events) twice, as the plan a long run reuses for all its mini-batches would have
    for _ in range(2 * 2):
        simulate(q, x_int, args.steps, record_spikes=False)

    def float_run() -> None:
        with torch.no_grad():
            model(xt, args.steps)

    # float and sim/ alternate, so that both medians come from the same (shared) machine load
    float_times, sim_times = [], []
    for _ in range(args.repeats):
        float_times.append(median_time(float_run, 1))
        sim_times.append(median_time(lambda: simulate(q, x_int, args.steps, record_spikes=False), 1))
    float_s, sim_s = statistics.median(float_times), statistics.median(sim_times)
    k = args.check_samples
    fast = simulate(q, x_int[:k], args.steps)
    ref = simulate_reference(q, x_int[:k], args.steps)
    identical = bool(
        np.array_equal(ref["logits"], fast.logits)
        and all(np.array_equal(s, fast.spikes[name]) for name, s in ref["spikes"].items())
    )
    neurons = sum(q.node(n).size for n in q.of_kind("q_lmh"))
    firing = sum(int(s.sum()) for s in fast.spikes.values()) / (k * args.steps * neurons)
    return {
        "arch": arch,
        "width_mult": args.width,
        "input_shape": list(SHAPE),
        "T": args.steps,
        "batch": args.batch,
        "neurons": int(neurons),
        "sim_s_per_sample": sim_s / args.batch,
        "float_s_per_sample": float_s / args.batch,
        "sim_over_float": float_s / sim_s,
        "spikes_identical": identical,
        "checked_samples": k,
        "firing_rate": firing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet19", "vgg13"])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check-samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    rows = []
    for arch in args.archs:
        rows.append(bench_arch(arch, args))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "rows": rows,
        "threads": args.threads,
        "repeats": args.repeats,
        "unit": "seconds per sample (median of repeats); sim_over_float = float / sim time",
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
