"""Compile cost (export + quantise + Loihi 2 mapping) against parameter count.

    python bench/compile_time.py --json bench/compile_time.json

Builds mlp, cnn, resnet20, vgg13 and resnet19 (untrained, CIFAR-sized 3x32x32 inputs for
the conv nets), compiles each in memory and prints seconds, parameters, neurons,
synapses and Loihi 2 cores. Goal: ResNet-19 under 10 s, growth linear in size. Wall and
CPU seconds (``process_time``): on a loaded shared machine the CPU time is the code's own.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import lmh_deploy  # noqa: F401
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.passes.loihi2_map import map_to_loihi2
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.models.architectures import build
from timing import environment, save

NETS = [
    ("mlp", (1, 8, 8), 10),
    ("cnn", (1, 28, 28), 10),
    ("resnet20", (3, 32, 32), 10),
    ("vgg13", (3, 32, 32), 10),
    ("resnet19", (3, 32, 32), 10),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--width-mult", type=float, default=1.0)
    args = parser.parse_args()
    env = environment(1)
    rows = []
    for arch, shape, classes in NETS:
        torch.manual_seed(0)
        model = build(arch, shape, classes, timesteps=4, width_mult=args.width_mult).eval()
        params = sum(p.numel() for p in model.parameters())
        start, cpu = time.perf_counter(), time.process_time()
        graph = export_model(model, input_shape=shape, timesteps=4)
        q, _ = quantize_graph(graph)
        resources = map_to_loihi2(q)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        rows.append(
            {
                "arch": arch,
                "input_shape": list(shape),
                "parameters": params,
                "seconds": round(seconds, 3),
                "cpu_seconds": round(cpu_seconds, 3),
                "neurons": resources["neurons"],
                "synapses": resources["synapses"],
                "loihi2_cores": resources["cores"],
                "loihi2_chips": resources["chips"],
                "us_per_synapse": round(1e6 * seconds / max(resources["synapses"], 1), 4),
            }
        )
        print(json.dumps(rows[-1]))
    save(args.json, {"width_mult": args.width_mult, "rows": rows}, env)


if __name__ == "__main__":
    main()
