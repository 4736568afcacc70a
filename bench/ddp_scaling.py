"""Training throughput on 1 vs 2 CPU processes (DDP over gloo), on the one timing harness.

    python bench/ddp_scaling.py --json bench/ddp_scaling.json

For each workload (``--workloads``) it runs ``lmh-deploy``'s training job as

* ``1 proc, 1 thread``: one process, one intra-op thread (the per-rank setting of DDP);
* ``1 proc, N threads``: one process using all N cores with intra-op threads;
* ``2 procs (DDP)``: two processes with torchrun's environment (gloo), one thread each,
  ``batch_size`` the same *global* batch (so the same optimisation);
* ``2 independent``: two independent single-process trainings at once, no communication
  (throughput of both together): the parallelism the machine itself offers, the ceiling
  for DDP.

The four sides alternate over ``--rounds`` rounds (:func:`timing.alternate`; each side a
fresh set of processes, so no warm-up round). A side's time is the seconds per training
sample of its epochs after the first (evaluation excluded), its CPU time the CPU seconds
(``time.process_time``, all ranks together) spent inside ``train_step`` per training
sample: the work DDP adds (communication, BN synchronisation) apart from how busy the
machine is. Ratios are the medians of the per-round speed-ups over ``1 proc, 1 thread``.
Only on an otherwise idle machine does it measure the machine's parallelism: under load,
two processes get twice one process's share of the cores, whatever they do (each run
records the load average per round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import Timed, alternate, environment, save

from lmh_deploy.parallel import TORCHRUN_ENV, free_port, rank_env

ROOT = Path(__file__).resolve().parents[1]

WORKLOADS = {
    # name: TrainJob fields
    "mlp-mnist5k": dict(dataset="mnist5k", arch="mlp", timesteps=4, batch_size=64),
    "mlp-mnist5k-b256": dict(dataset="mnist5k", arch="mlp", timesteps=4, batch_size=256),
    "cnn-digits": dict(dataset="digits", arch="cnn", width_mult=0.5, norm="bn", timesteps=4, batch_size=64),
}
TRAIN_SAMPLES = {"mnist5k": 4000, "digits": 1437}


def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    import torch

    torch.set_num_threads(int(spec["threads"]))
    sys.path.insert(0, str(ROOT))
    import lmh_deploy.models.train as T
    from lmh_deploy.models.training_job import TrainJob, run_training_job

    step, cpu = T.train_step, {"s": 0.0, "samples": 0}

    def timed_step(model, opt, loss_fn, x, y, **kw):
        start = time.process_time()
        try:
            return step(model, opt, loss_fn, x, y, **kw)
        finally:
            cpu["s"] += time.process_time() - start
            cpu["samples"] += len(y)

    T.train_step = timed_step  # train() looks it up at call time
    metrics = run_training_job(TrainJob(**spec["job"]))
    rank = int(os.environ.get("RANK", os.environ.get("BENCH_INDEX", "0")))
    Path(f"{spec['result']}.{rank}").write_text(
        json.dumps(
            {
                "epoch_seconds": [h["seconds"] for h in metrics["history"]],
                "accuracy": metrics["accuracy"],
                "cpu_s": cpu["s"],
                "samples": cpu["samples"],
            }
        )
    )


def _run(job: dict, *, procs: int, threads: int, tmp: Path, independent: bool = False) -> dict:
    spec = tmp / "spec.json"
    result = tmp / "result.json"
    for old in tmp.glob("result.json.*"):
        old.unlink()
    spec.write_text(
        json.dumps({"job": {**job, "out": str(tmp / "m.pt")}, "threads": threads, "result": str(result)})
    )
    if independent:  # each process its own output file
        specs = []
        for i in range(procs):
            one = tmp / f"spec{i}.json"
            one.write_text(
                json.dumps(
                    {"job": {**job, "out": str(tmp / f"m{i}.pt")}, "threads": threads, "result": str(result)}
                )
            )
            specs.append(one)
    alone = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    port = free_port()
    children = []
    for rank in range(procs):
        env = rank_env(rank, procs, port) if procs > 1 and not independent else dict(alone)
        env.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT), BENCH_INDEX=str(rank))
        path = specs[rank] if independent else spec
        children.append(
            subprocess.Popen([sys.executable, __file__, "--worker", str(path)], env=env, cwd=ROOT)
        )
    for child in children:
        if child.wait() != 0:
            raise RuntimeError(f"a worker failed (exit {child.returncode})")
    ranks = [json.loads(Path(f"{result}.{r}").read_text()) for r in range(procs)]
    out = dict(ranks[0])
    if independent:  # both ran the whole job at the same time: twice the samples per epoch
        out["epoch_seconds"] = [max(e) / procs for e in zip(*(r["epoch_seconds"] for r in ranks))]
    out["cpu_us_per_sample"] = 1e6 * sum(r["cpu_s"] for r in ranks) / max(sum(r["samples"] for r in ranks), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is not timed")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workloads", default="mlp-mnist5k", help=f"comma-separated, of {','.join(WORKLOADS)}")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch is not timed)")
    cores = os.cpu_count() or 1
    configs = {
        "1 proc, 1 thread": (1, 1, False),
        f"1 proc, {cores} threads": (1, cores, False),
        "2 procs (DDP)": (2, 1, False),
        "2 independent": (2, 1, True),
    }
    env = environment(threads=1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        for name in args.workloads.split(","):
            job = {**WORKLOADS[name], "epochs": args.epochs}
            n = TRAIN_SAMPLES[job["dataset"]]
            accuracy: dict[str, list[float]] = {label: [] for label in configs}

            def side(label: str, procs: int, threads: int, independent: bool, job=job, n=n, acc=accuracy):
                def call() -> Timed:
                    res = _run(job, procs=procs, threads=threads, tmp=tmp, independent=independent)
                    acc[label].append(res["accuracy"])
                    per_epoch = statistics.mean(res["epoch_seconds"][1:])
                    return Timed(per_epoch / n, 1e-6 * res["cpu_us_per_sample"])

                return call

            timed = alternate(
                {label: side(label, *config) for label, config in configs.items()},
                rounds=args.rounds,
                warmup=0,
                ratios={
                    "ddp_speedup": ("1 proc, 1 thread", "2 procs (DDP)"),
                    "threads_speedup": ("1 proc, 1 thread", f"1 proc, {cores} threads"),
                    "independent_speedup": ("1 proc, 1 thread", "2 independent"),
                },
            )
            rows.append({"workload": name, "job": job, "train_samples": n, "accuracy": accuracy} | timed)
            ddp = timed["ratios"]["ddp_speedup"]
            print(f"{name}: DDP / 1 proc, 1 thread: {ddp['median']:.2f}x [{ddp['min']:.2f}-{ddp['max']:.2f}]")
    save(args.json, {"backend": "gloo", "cores": cores, "rows": rows}, env)


if __name__ == "__main__":
    main()
