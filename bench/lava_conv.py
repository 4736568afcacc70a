"""A Lava run with convolutions on Lava's own ``Conv`` against the same run on ``Sparse``.

    nice -n 10 python bench/lava_conv.py --json bench/lava_conv.json
    nice -n 10 python bench/lava_conv.py --net resnet19 --sides conv --rounds 0 \\
        --json bench/lava_conv_resnet19.json

Networks (3 x 32 x 32, T = 4, untrained): ``resnet20``, the ResNet-20 of
``bench/lava_cifar.py`` (its artifact, raw [0, 1] pixels); ``resnet19``, the paper's Tab. 1
network at full width as ``bench/paper_scale.py`` builds and compiles it (the builder file in
the fake clone of the paper's repository, BatchNorm statistics from one pass over the
calibration images, normalised inputs: 16-bit signed input messages).

Sides: ``conv`` is ``--lava-conv always`` (every convolution that Lava's Conv computes exactly
runs on it); ``sparse`` is ``--lava-conv never`` (every convolution a ``Sparse`` CSR matrix).
For each side, alternated over ``--rounds`` rounds, each a fresh process as a user runs it::

    lmh-deploy run BUILD --backend lava --inputs x.npy --samples 1 --lava-conv always|never

measured: wall seconds, CPU seconds of the command and all its Lava workers, and peak memory:
the largest sum over the command's process tree of the proportional set size (PSS: shared
pages split between the processes sharing them; sampled every 0.5 s from /proc) and the
largest single-process RSS. Then, once, with the ``conv`` side::

    lmh-deploy verify BUILD --inputs x.npy --samples 1 --lava-samples 1 --lava-conv always

whose JSON holds Lava == sim/ (mismatched spikes over every layer and step), with its time
and memory measured the same way. The JSON also records which Lava process each path became.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import timing

HERE = Path(__file__).resolve().parent
#: the CLI
COMMAND = [sys.executable, "-m", "lmh_deploy.cli"]
#: each side's ``--lava-conv``
ROUTE = {"conv": "always", "sparse": "never"}


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, resident pages) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[21])
    except (OSError, ValueError, IndexError):
        return None


def tree_memory(root: int) -> tuple[int, int]:
    """(PSS bytes summed over ``root`` and its descendants, largest RSS bytes of one of them)."""
    parents = {int(p): s[0] for p in filter(str.isdigit, os.listdir("/proc")) if (s := _stat(p))}
    tree, grew = {root}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    pss = rss = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                pss += sum(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        stat = _stat(str(pid))
        rss = max(rss, stat[1] * page if stat else 0)
    return pss, rss


def measured(args: list[str], cwd: Path) -> dict:
    """Run ``args`` as a child process: wall and CPU seconds (the child and its workers),
    peak tree PSS and peak single-process RSS (GiB), exit code, output tail."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0, 0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            pss, rss = tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out = proc.stdout.read() if proc.stdout else ""
    code = proc.wait()
    done.set()
    watcher.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": cpu,
        "peak_tree_pss_gib": peak[0] / 2**30,
        "peak_process_rss_gib": peak[1] / 2**30,
        "exit_code": code,
        "tail": out.strip().splitlines()[-40:],
    }


def make_resnet20(work: Path, seed: int) -> tuple[Path, Path]:
    subprocess.run(
        [sys.executable, HERE / "lava_cifar.py", "--make-artifact", work, "--seed", str(seed)], check=True
    )
    x = np.random.default_rng(seed).random((1, 3, 32, 32)).astype(np.float32)
    np.save(work / "x.npy", x)
    return work / "build", work / "x.npy"


def make_resnet19(work: Path) -> tuple[Path, Path]:
    import paper_scale

    setup = paper_scale.SETUP.replace("{mean}", repr(paper_scale.CIFAR10_MEAN))
    setup = setup.replace("{std}", repr(paper_scale.CIFAR10_STD))
    kwargs = json.dumps(paper_scale.NETS["resnet19"])
    env = paper_scale.thread_env(1)
    subprocess.run(
        [sys.executable, "-c", setup, paper_scale.CLONE, kwargs, work, "64", "0"], check=True, env=env
    )
    compiled = measured(paper_scale.commands("resnet19", work, 1, 64)["compile"], work)
    if compiled["exit_code"]:
        raise SystemExit(f"compile failed: {compiled['tail']}")
    print("compile", json.dumps({k: v for k, v in compiled.items() if k != "tail"}), flush=True)
    return work / "build", work / "inputs.npy"


def routes(build: Path) -> dict[str, int]:
    """How many paths lowering gives each Lava process kind on the ``conv`` side (no Lava run)."""
    from lmh_deploy.backends.lava.lower import build_layers
    from lmh_deploy.backends.lava.plan import plan_lowering
    from lmh_deploy.pipeline.compile import load_artifact

    art = load_artifact(build)
    plan = plan_lowering(art.quant_graph, ROUTE["conv"])
    layers = build_layers(art.quant_graph, art.timesteps, samples=1, plan=plan)
    kinds: dict[str, int] = {}
    for conn in layers.connections.values():
        kinds[type(conn).__name__] = kinds.get(type(conn).__name__, 0) + 1
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=("resnet20", "resnet19"), default="resnet20")
    parser.add_argument("--sides", nargs="+", choices=("conv", "sparse"), default=["conv", "sparse"])
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternated rounds of the run command (0: verify only)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder; reuse its build")
    args = parser.parse_args()
    env = timing.environment(threads=1)
    threads_env = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    os.environ.update(threads_env)  # every command and its workers: one thread each
    with tempfile.TemporaryDirectory(prefix="lava-conv-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        if (work / "build").is_dir():
            build, x = work / "build", work / ("x.npy" if args.net == "resnet20" else "inputs.npy")
        else:
            build, x = make_resnet20(work, args.seed) if args.net == "resnet20" else make_resnet19(work)
        result: dict = {"net": args.net, "threads_env": threads_env, "routes": routes(build)}
        print("routes", result["routes"], flush=True)
        runs: dict[str, list[dict]] = {side: [] for side in args.sides}
        for r in range(args.rounds):
            for side in args.sides if r % 2 == 0 else args.sides[::-1]:
                cmd = [*COMMAND, "run", str(build), "--backend", "lava", "--lava-conv", ROUTE[side]]
                got = measured([*cmd, "--inputs", str(x), "--samples", "1"], work)
                got["load"] = timing.load_average()
                runs[side].append(got)
                print(side, json.dumps({k: v for k, v in got.items() if k != "tail"}), flush=True)
                if got["exit_code"]:
                    raise SystemExit(f"{side}: run failed: {got['tail']}")
        result["run_1_sample"] = {
            side: {
                key: statistics.median(g[key] for g in got)
                for key in ("seconds", "cpu_seconds", "peak_tree_pss_gib", "peak_process_rss_gib")
            }
            | {"per_round": got}
            for side, got in runs.items()
            if got
        }
        report = work / "verify.json"
        verify = [
            str(build),
            "--inputs",
            str(x),
            "--samples",
            "1",
            "--lava-samples",
            "1",
            "--json",
            str(report),
        ]
        checked = measured([*COMMAND, "verify", *verify, "--lava-conv", ROUTE["conv"]], work)
        print("verify", json.dumps({k: v for k, v in checked.items() if k != "tail"}), flush=True)
        if checked["exit_code"] == 0:
            doc = json.loads(report.read_text())
            checked["lava_vs_sim"] = doc["lava_vs_sim"]
            checked["ran"] = doc["ran"]
        result["verify_lava_1_sample"] = checked
    record = timing.save(args.json, result, env)
    for side, got in record["run_1_sample"].items():
        print(
            f"{args.net} run --backend lava, 1 sample, {side}: {got['seconds']:.1f} s wall, "
            f"{got['cpu_seconds']:.1f} s CPU, peak PSS {got['peak_tree_pss_gib']:.2f} GiB "
            f"(median of {args.rounds})"
        )
    print("verify Lava == sim/:", json.dumps(record["verify_lava_1_sample"].get("lava_vs_sim")))


if __name__ == "__main__":
    main()
