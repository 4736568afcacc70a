"""Speed of our simulator against Lava's CPU runtime and float PyTorch on the same network.

Builds a random LM-H MLP (>= 1000 neurons in >= 3 layers), quantises it, and measures, in
this one run, sample-steps per second of:

* Lava fixed_pt: the per-step rate (start-up excluded, which favours Lava) from the time
  difference of a 1-sample and a 3-sample run, median of ``--lava-runs`` pairs;
* sim/ at batch ``--batch`` (median of ``--sim-runs`` runs) and at batch 1 (``--batch1-samples``
  samples run one at a time, median of ``--sim-runs`` such passes);
* float PyTorch inference of the same (untrained) net at the same batch sizes.

The spikes of the Lava samples must be identical to sim/'s (at both batch sizes). With
``--conv`` a second row does the same for the mnist5k ``cnn`` (width 0.5, 28x28).

    python bench/sim_vs_lava.py --json bench/sim_vs_lava.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import lmh_deploy  # noqa: F401  - Lava import fix
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.models.architectures import build
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate
from timing import median_time


def build_net(arch: str, shape: tuple, steps: int, seed: int, **kw):
    torch.manual_seed(seed)
    model = build(arch, shape, 10, timesteps=steps, **kw).eval()
    for neuron in model.neurons():
        neuron.set_factors(mu_d=-0.2, mu_s=0.1, lam_d=1.2, lam_s=0.8)
    return model, quantize_graph(export_model(model, input_shape=shape, timesteps=steps))[0]


def measure(arch: str, shape: tuple, steps: int, args, **kw) -> dict:
    model, q = build_net(arch, shape, steps, args.seed, **kw)
    rng = np.random.default_rng(args.seed)
    x = rng.random((args.batch, *shape))
    x_int = fx.quantize_input(x, q.node("input").scale)

    lava_rates, lava = [], None
    for _ in range(args.lava_runs):
        start = time.perf_counter()
        lava = run_lava(q, x_int[:1], steps)
        one = time.perf_counter() - start
        start = time.perf_counter()
        run_lava(q, x_int[:3], steps)
        three = time.perf_counter() - start
        lava_rates.append(2 * steps / max(three - one, 1e-9))
    lava_rate = statistics.median(lava_rates)

    simulate(q, x_int[:2], steps)  # warm-up: compiles kernels, prepares and caches the plan
    sim_s = median_time(lambda: simulate(q, x_int, steps), args.sim_runs)
    sim = simulate(q, x_int, steps)
    singles = x_int[: args.batch1_samples]
    for xs in singles[:3]:
        simulate(q, xs[None], steps)  # warm-up at batch 1 (its own chunk length)
    sim1_s = median_time(lambda: [simulate(q, xs[None], steps) for xs in singles], args.sim_runs)
    sim1 = simulate(q, x_int[:1], steps)
    identical = all(
        np.array_equal(sim.spikes[k][:, :1], lava.spikes[k])
        and np.array_equal(sim1.spikes[k], lava.spikes[k])
        for k in lava.spikes
    )

    xt = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        model(xt[:2], steps)
        float_s = median_time(lambda: model(xt, steps), args.sim_runs)
        float1_s = median_time(
            lambda: [model(xt[i : i + 1], steps) for i in range(len(singles))], args.sim_runs
        )

    sim_rate = args.batch * steps / sim_s
    sim1_rate = len(singles) * steps / sim1_s
    float_rate = args.batch * steps / float_s
    float1_rate = len(singles) * steps / float1_s
    neurons = sum(q.node(n).size for n in q.of_kind("q_lmh"))
    return {
        "arch": arch,
        "neurons": int(neurons),
        "layers": len(q.of_kind("q_lmh")),
        "steps": steps,
        "batch": args.batch,
        "spikes_identical": bool(identical),
        "ratio": sim_rate / lava_rate,
        "ratio_batch1": sim1_rate / lava_rate,
        "sim_over_float": sim_rate / float_rate,
        "sim_over_float_batch1": sim1_rate / float1_rate,
        "lava_steps_per_s": lava_rate,
        "lava_steps_per_s_runs": lava_rates,
        "sim_steps_per_s": sim_rate,
        "sim_steps_per_s_batch1": sim1_rate,
        "float_steps_per_s": float_rate,
        "float_steps_per_s_batch1": float1_rate,
        "lava_runs": args.lava_runs,
        "sim_runs": args.sim_runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[400, 400, 400])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batch1-samples", type=int, default=20)
    parser.add_argument("--lava-runs", type=int, default=3)
    parser.add_argument("--sim-runs", type=int, default=5)
    parser.add_argument("--conv", action="store_true", help="also the mnist5k cnn row")
    parser.add_argument("--conv-steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS and torch threads for sim/ and float PyTorch alike (on a "
        "shared 2-core machine one thread is faster and far steadier)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    result = measure("mlp", (1, 8, 8), args.steps, args, hidden=tuple(args.hidden))
    result |= {"threads": args.threads, "unit": "sample-steps per second; ratios of them"}
    print(json.dumps(result, indent=1), flush=True)
    if args.conv:
        result["conv"] = measure("cnn", (1, 28, 28), args.conv_steps, args, width_mult=0.5)
        print(json.dumps(result["conv"], indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
