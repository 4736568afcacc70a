"""Memory of a Lava run against the lowered weight matrices (``LAVA_COPIES``).

    python bench/lava_memory.py --widths 1 2

For the paper's ResNet-20 (3 x 32 x 32, T = 4, untrained, compiled in memory) at each width:
the lowered weight matrices' bytes (:func:`lmh_deploy.backends.lava.memory.lava_weight_bytes`)
and the peak proportional set size (PSS: shared pages split between the processes that share
them) of this process and its Lava workers above this process's before a 1-sample fixed_pt
run, each width in a fresh process. The slope between two widths is what a Lava run holds
per byte of matrices, without the fixed cost of its worker processes; ``LAVA_COPIES`` rounds
it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import torch

import lmh_deploy
from lmh_deploy.backends.lava.memory import LAVA_COPIES, lava_weight_bytes
from lmh_deploy.models.architectures import build
from lmh_deploy.pipeline.inputs import quantize
from lmh_deploy.pipeline.run import run_backend


def tree_pss() -> int:
    """PSS bytes of this process and its children (Linux ``smaps_rollup``)."""
    me, total = os.getpid(), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            if int(pid) != me and parent != me:
                continue
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, ValueError, IndexError):
            continue  # a worker that ended meanwhile
    return total


def measure(width: float) -> tuple[int, int, float]:
    """(matrix bytes, PSS above the start, Lava wall seconds) of a 1-sample run."""
    torch.manual_seed(0)
    model = build("resnet20", (3, 32, 32), 10, timesteps=4, width_mult=width).eval()
    x = np.random.default_rng(0).random((4, 3, 32, 32)).astype(np.float32)
    q = lmh_deploy.compile(model, input_shape=(3, 32, 32), timesteps=4, calibration=x).artifact.quant_graph
    matrices, _ = lava_weight_bytes(q)
    start = tree_pss()
    peak, done = [start], threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], tree_pss())

    watcher = threading.Thread(target=watch)
    watcher.start()
    began = time.perf_counter()
    try:
        run_backend(q, quantize(q, x[:1]), 4, "lava")
    finally:
        done.set()
        watcher.join()
    return matrices, peak[0] - start, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=float, nargs=2, default=[1.0, 2.0])
    parser.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.one is not None:  # one width in a fresh process: nothing of another run's heap
        print(json.dumps(measure(args.one)))
        return
    rows = [
        json.loads(
            subprocess.run(
                [sys.executable, __file__, "--one", str(w)], check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]
        )
        for w in args.widths
    ]
    gib = 2.0**30
    for w, (matrices, held, wall) in zip(args.widths, rows):
        print(
            f"ResNet-20 width {w:g}: matrices {matrices / gib:.2f} GiB, "
            f"Lava run PSS +{held / gib:.2f} GiB, {wall:.0f} s"
        )
    (m1, h1, _), (m2, h2, _) = rows
    print(f"bytes held per byte of matrices: {(h2 - h1) / (m2 - m1):.2f} (LAVA_COPIES = {LAVA_COPIES})")


if __name__ == "__main__":
    main()
