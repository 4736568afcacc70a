"""Simulator cost per sample against network size and inference length T.

    python bench/sim_scaling.py --json bench/sim_scaling.json

For mlp (digits 8x8), cnn (28x28) and resnet20 (width 0.25, 32x32x3), untrained but with
non-trivial LM-H factors, runs sim/ on a batch for T in --steps and prints milliseconds per
sample, neurons and synapses, measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import lmh_deploy  # noqa: F401
from lmh_deploy.semantics import integer as fx
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.passes.loihi2_map import map_to_loihi2
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.models.architectures import build
from lmh_deploy.sim import simulate
from timing import environment, save

NETS = [("mlp", (1, 8, 8), 1.0), ("cnn", (1, 28, 28), 0.5), ("resnet20", (3, 32, 32), 0.25)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    env = environment(args.threads)
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    rows = []
    for arch, shape, width in NETS:
        torch.manual_seed(0)
        model = build(arch, shape, 10, timesteps=4, width_mult=width).eval()
        for neuron in model.neurons():
            neuron.set_factors(mu_d=-0.2, mu_s=0.1, lam_d=1.2, lam_s=0.9)
        q, _ = quantize_graph(export_model(model, input_shape=shape, timesteps=4))
        res = map_to_loihi2(q)
        x = fx.quantize_input(np.random.default_rng(0).random((args.batch, *shape)), q.node("input").scale)
        simulate(q, x[:2], 1)  # warm-up
        for steps in args.steps:
            start = time.perf_counter()
            simulate(q, x, steps, record_spikes=False)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "arch": arch,
                    "input_shape": list(shape),
                    "width_mult": width,
                    "neurons": res["neurons"],
                    "synapses": res["synapses"],
                    "T": steps,
                    "batch": args.batch,
                    "ms_per_sample": 1e3 * seconds / args.batch,
                    "us_per_sample_step": 1e6 * seconds / args.batch / steps,
                }
            )
            print(json.dumps(rows[-1]))
    save(args.json, {"rows": rows}, env)


if __name__ == "__main__":
    main()
