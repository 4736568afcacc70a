"""Peak memory of a sim/ run against the number of samples, in mini-batches or all at once.

Each configuration runs in a fresh subprocess (``ru_maxrss`` is a per-process peak):
the mnist5k ``cnn`` (width 0.5, untrained), T = 4, random inputs.

    python bench/sim_memory.py --samples 100 1000 5000 --json bench/sim_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from timing import environment, save

CHILD = """
import json, resource, sys
import numpy as np, torch
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.models.architectures import build
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.pipeline.run import run_backend
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate
mode, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = build("cnn", (1, 28, 28), 10, timesteps=4, width_mult=0.5).eval()
q, _ = quantize_graph(export_model(model, input_shape=(1, 28, 28), timesteps=4))
x = fx.quantize_input(np.random.default_rng(0).random((n, 1, 28, 28)), q.node("input").scale)
if mode == "all":
    simulate(q, x, 4)
else:
    run_backend(q, x, 4, "sim", batch_size=batch, record_spikes=mode == "batched")
print(json.dumps({"mode": mode, "samples": n, "batch_size": batch,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    env = environment(1)
    rows = []
    for n in args.samples:
        for mode in ("all", "batched", "stream"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(n), str(args.batch_size)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    save(args.json, {"rows": rows}, env)


if __name__ == "__main__":
    main()
