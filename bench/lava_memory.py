"""Memory of a Lava run: per byte of lowered weight matrices (``LAVA_COPIES``) and per Lava process.

    python bench/lava_memory.py --widths 1 2
    nice -n 10 python bench/lava_memory.py --fixed 1 8 24 --json bench/lava_memory.json

For the paper's ResNet-20 (3 x 32 x 32, T = 4, untrained, compiled in memory) at each width,
every convolution on Sparse (``lava_conv="never"``): the lowered weight matrices' bytes
(:func:`lmh_deploy.backends.lava.memory.lava_weight_bytes`)
and the peak proportional set size (PSS: shared pages split between the processes that share
them) of this process and its Lava workers above this process's before a 1-sample fixed_pt
run, each width in a fresh process. The slope between two widths is what a Lava run holds
per byte of matrices, without the fixed cost of its worker processes; ``LAVA_COPIES`` rounds
it.

``--fixed D ...``: the fixed cost of Lava's worker processes. For each D, an MLP of D hidden
LM-H layers of 32 neurons (64 inputs, 10 classes; weights a few kB) is compiled to an artifact
and ``lmh-deploy run BUILD --backend lava --inputs x.npy --samples 1`` runs as a user runs it,
in a fresh process (the command's own code, with two hooks), ``--rounds`` times. While Lava
reads back (every worker up, every step run) the hook reads from /proc the PSS of the
process tree and its number of processes; the other hook, the command's own PSS when the run
began. ``(tree - before) / workers`` is what one Lava worker adds beyond the matrices; the
least-squares slope of the tree's PSS over the worker count says the same without the
intercept. ``LAVA_PROCESS_BYTES`` rounds it up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import lmh_deploy
from lmh_deploy.backends.lava.memory import LAVA_COPIES, LAVA_PROCESS_BYTES, lava_weight_bytes
from lmh_deploy.pipeline.inputs import quantize
from lmh_deploy.pipeline.run import run_backend

import timing


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
    import torch

    from lmh_deploy.models.architectures import build

    torch.manual_seed(0)
    model = build("resnet20", (3, 32, 32), 10, timesteps=4, width_mult=width).eval()
    x = np.random.default_rng(0).random((4, 3, 32, 32)).astype(np.float32)
    q = lmh_deploy.compile(model, input_shape=(3, 32, 32), timesteps=4, calibration=x).artifact.quant_graph
    matrices, _ = lava_weight_bytes(q, frozenset())  # every convolution on Sparse
    start = tree_pss()
    peak, done = [start], threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], tree_pss())

    watcher = threading.Thread(target=watch)
    watcher.start()
    began = time.perf_counter()
    try:
        run_backend(q, quantize(q, x[:1]), 4, "lava", lava_conv="never")
    finally:
        done.set()
        watcher.join()
    return matrices, peak[0] - start, time.perf_counter() - began


def _tree(root: int) -> list[int]:
    """``root`` and its descendants."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, grew = {root}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sorted(tree)


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
    except (OSError, ValueError, IndexError):
        return 0


def hooked_run(build_dir: str, x: str) -> None:
    """``lmh-deploy run BUILD --backend lava --inputs X --samples 1`` in this process (which,
    like the command, has not imported torch), printing one JSON line measured while Lava
    reads back, when every worker is up and has run every step: the PSS of this process's
    tree then and this process's own PSS when the run began, the number of processes in the
    tree and the median RSS of a worker (bytes)."""
    import lmh_deploy.backends.lava.run as lava_run
    from lmh_deploy.cli import app

    page, me = os.sysconf("SC_PAGE_SIZE"), os.getpid()
    start: dict[str, int] = {}
    run_lava, read_back = lava_run.run_lava, lava_run.read_back

    def run_measured(*args, **kwargs):
        start["pss"] = _pss(me)
        return run_lava(*args, **kwargs)

    def read_back_measured(*args, **kwargs):
        tree = _tree(me)
        rss = []
        for pid in tree[1:]:
            with open(f"/proc/{pid}/statm") as f:
                rss.append(int(f.read().split()[1]) * page)
        got = {
            "peak_pss": sum(_pss(p) for p in tree),
            "pss_before_workers": start["pss"],
            "processes": len(tree),
            "worker_rss_median": int(np.median(rss)),
        }
        print("MEASURED " + json.dumps(got), flush=True)
        return read_back(*args, **kwargs)

    lava_run.run_lava, lava_run.read_back = run_measured, read_back_measured
    import lmh_deploy.pipeline.run as pipeline_run  # it imports run_lava when a run starts

    assert not hasattr(pipeline_run, "run_lava")
    sys.argv = ["lmh-deploy", "run", build_dir, "--backend", "lava", "--inputs", x, "--samples", "1"]
    app()


def fixed_run(build_dir: Path, x: Path) -> dict:
    """:func:`hooked_run` in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--hooked", str(build_dir), str(x)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (line,) = [s for s in out.splitlines() if s.startswith("MEASURED ")]
    return json.loads(line.removeprefix("MEASURED "))


def fixed_cost(depths: list[int], rounds: int, work: Path) -> dict:
    """:func:`fixed_run` of an MLP of each hidden depth, alternated over ``rounds``."""
    import torch

    from lmh_deploy.models.architectures import build

    builds = {}
    x = np.random.default_rng(0).random((4, 64)).astype(np.float32)
    np.save(work / "x.npy", x[:1])
    for d in depths:
        torch.manual_seed(d)
        model = build("mlp", (64,), 10, timesteps=4, hidden=(32,) * d).eval()
        builds[d] = work / f"mlp{d}"
        lmh_deploy.compile(model, builds[d], input_shape=(64,), timesteps=4, calibration=x)
    runs: dict[int, list[dict]] = {d: [] for d in depths}
    for r in range(rounds):
        for d in depths if r % 2 == 0 else depths[::-1]:
            got = fixed_run(builds[d], work / "x.npy")
            runs[d].append(got)
            print(d, json.dumps(got), flush=True)
    rows = []
    for d in depths:
        per = runs[d]
        workers = statistics.median(g["processes"] - 1 for g in per)
        added = statistics.median(g["peak_pss"] - g["pss_before_workers"] for g in per)
        rows.append(
            {
                "hidden_layers": d,
                "workers": workers,
                "peak_pss_median": statistics.median(g["peak_pss"] for g in per),
                "pss_added_median": added,
                "pss_added_per_worker": added / workers,
                "worker_rss_median": statistics.median(g["worker_rss_median"] for g in per),
                "per_round": per,
            }
        )
    slope, intercept = np.polyfit([r["workers"] for r in rows], [r["peak_pss_median"] for r in rows], 1)
    return {"rows": rows, "slope_bytes_per_worker": float(slope), "intercept_bytes": float(intercept)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=float, nargs=2, default=[1.0, 2.0])
    parser.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fixed", type=int, nargs="+", default=None, help="hidden depths (see above)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    parser.add_argument("--hooked", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hooked is not None:  # one measured run of the command (no torch imported)
        hooked_run(*args.hooked)
        return
    import torch

    torch.set_num_threads(1)
    if args.fixed is not None:
        env = timing.environment(threads=1)
        with tempfile.TemporaryDirectory(prefix="lava-fixed-") as tmp:
            result = fixed_cost(args.fixed, args.rounds, Path(tmp))
        timing.save(args.json, {"fixed_cost": result}, env)
        mib = 2.0**20
        for row in result["rows"]:
            print(
                f"{row['hidden_layers']} hidden layers, {row['workers']:g} workers: PSS +"
                f"{row['pss_added_median'] / mib:.0f} MiB above the command before its workers, "
                f"{row['pss_added_per_worker'] / mib:.1f} MiB a worker (worker RSS "
                f"{row['worker_rss_median'] / mib:.0f} MiB)"
            )
        print(
            f"slope of peak PSS over workers: {result['slope_bytes_per_worker'] / mib:.1f} MiB a worker "
            f"(LAVA_PROCESS_BYTES = {LAVA_PROCESS_BYTES / mib:.0f} MiB)"
        )
        return
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
