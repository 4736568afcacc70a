"""Speed of our simulator against Lava's CPU runtime on the same compiled network.

Builds a random LM-H MLP (>= 1000 neurons in >= 3 layers), quantises it, runs
``--lava-samples`` samples of ``--steps`` steps on Lava fixed_pt and ``--batch``
samples on sim/ (batched as a user evaluates a test set), checks that the spikes
of the shared samples are identical, and prints the throughput ratio
(sample-steps per second), measured in this one run.

    python bench/sim_vs_lava.py --json bench/sim_vs_lava.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import lmh_deploy  # noqa: F401  - Lava import fix
from lmh_deploy.semantics import integer as fx
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.models.architectures import mlp
from lmh_deploy.sim import simulate


def build(hidden: tuple[int, ...], steps: int, seed: int):
    torch.manual_seed(seed)
    model = mlp((1, 8, 8), 10, timesteps=steps, hidden=hidden)
    for neuron in model.neurons():
        neuron.set_factors(mu_d=-0.2, mu_s=0.1, lam_d=1.2, lam_s=0.8)
    graph = export_model(model, input_shape=(1, 8, 8), timesteps=steps)
    return quantize_graph(graph)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[400, 400, 400])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lava-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS and torch threads for sim/ and float PyTorch alike (on a "
                             "shared 2-core machine one thread is faster and far steadier)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)

    q = build(tuple(args.hidden), args.steps, args.seed)
    rng = np.random.default_rng(args.seed)
    x = rng.random((args.batch, 1, 8, 8))
    x_int = fx.quantize_input(x, q.node("input").scale)

    # Lava's cost = start-up (compile, spawn one OS process per Process) + per step.
    # Two runs of different length separate the two; the ratio uses the per-step rate,
    # which favours Lava.
    start = time.perf_counter()
    lava = run_lava(q, x_int[: args.lava_samples], args.steps)
    lava_s = time.perf_counter() - start
    start = time.perf_counter()
    run_lava(q, x_int[: 3 * args.lava_samples], args.steps)
    lava_long_s = time.perf_counter() - start
    lava_marginal_s = max(lava_long_s - lava_s, 1e-9)

    simulate(q, x_int[:2], 2)  # warm-up (imports, allocator)
    start = time.perf_counter()
    sim = simulate(q, x_int, args.steps)
    sim_s = time.perf_counter() - start

    identical = all(np.array_equal(sim.spikes[k][:, : args.lava_samples], lava.spikes[k])
                    for k in lava.spikes)
    lava_rate = 2 * args.lava_samples * args.steps / lava_marginal_s
    lava_rate_incl_startup = args.lava_samples * args.steps / lava_s
    sim_rate = args.batch * args.steps / sim_s

    # Float PyTorch inference of the same network, same batch, for the throughput comparison.
    model = mlp((1, 8, 8), 10, timesteps=args.steps, hidden=tuple(args.hidden)).eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    with torch.no_grad():
        model(xt[:2], 2)
        start = time.perf_counter()
        model(xt, args.steps)
        float_s = time.perf_counter() - start
    float_rate = args.batch * args.steps / float_s

    result = {"neurons": int(sum(args.hidden)), "layers": len(args.hidden), "steps": args.steps,
              "sim_batch": args.batch, "lava_samples": args.lava_samples,
              "lava_steps_per_s": lava_rate, "sim_steps_per_s": sim_rate,
              "ratio": sim_rate / lava_rate, "spikes_identical": bool(identical),
              "float_torch_steps_per_s": float_rate, "sim_over_float_torch": sim_rate / float_rate,
              "lava_steps_per_s_incl_startup": lava_rate_incl_startup,
              "ratio_incl_lava_startup": sim_rate / lava_rate_incl_startup,
              "lava_seconds_incl_startup": lava_s, "sim_seconds": sim_s,
              "threads": args.threads, "unit": "sample-steps per second"}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
