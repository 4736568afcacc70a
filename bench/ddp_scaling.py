"""Training throughput on 1 vs 2 CPU processes (DDP over gloo), printed as JSON.

    python bench/ddp_scaling.py [--epochs 3] [--repeats 2] [--json out.json]

For each workload (``--workloads``) it runs ``lmh-deploy``'s training job as

* ``1proc-1thread``: one process, one intra-op thread (the per-rank setting of DDP);
* ``1proc-Nthreads``: one process using all cores with intra-op threads;
* ``2proc-1thread``: two processes started with torchrun's environment (gloo), one
  thread each, ``batch_size`` the same *global* batch (so the same optimisation);
* ``2indep-1thread``: two independent single-process trainings at once, no
  communication (throughput of both together): the parallelism the machine itself
  offers, i.e. the ceiling for ``2proc-1thread``.

Throughput is training samples per second of the fastest epoch after the first
(``train samples / epoch seconds``, evaluation excluded), best of ``--repeats`` runs.
``cpu_us_per_sample`` is the CPU time (``time.process_time``, all ranks together)
spent inside ``train_step`` per training sample: it shows the work DDP adds
(communication, BN synchronisation) independently of how busy the machine is,
whereas samples/s on a loaded machine mostly shows the contention.
The machine's core count and load average are recorded with the numbers: on a shared
machine, concurrent work slows every configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    base.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    port = str(_free_port())
    children = []
    for rank in range(procs):
        env = dict(base, BENCH_INDEX=str(rank))
        if procs > 1 and not independent:
            env.update(
                RANK=str(rank),
                WORLD_SIZE=str(procs),
                LOCAL_RANK=str(rank),
                LOCAL_WORLD_SIZE=str(procs),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            )
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
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    cores = os.cpu_count() or 1
    configs = [
        ("1proc-1thread", 1, 1, False),
        (f"1proc-{cores}threads", 1, cores, False),
        ("2proc-1thread", 2, 1, False),
        ("2indep-1thread", 2, 1, True),
    ]
    import torch

    out: dict = {
        "cores": cores,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "backend": "gloo",
        "epochs": args.epochs,
        "repeats": args.repeats,
        "metric": "train samples/s of the fastest epoch after the first, best of "
        "repeats (evaluation excluded)",
        "load_average_before": list(os.getloadavg()),
        "workloads": {},
    }
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        for name in args.workloads.split(","):
            job = {**WORKLOADS[name], "epochs": args.epochs}
            n = TRAIN_SAMPLES[job["dataset"]]
            row: dict = {"job": job, "train_samples": n}
            for label, procs, threads, independent in configs:
                best, acc, cpu = float("inf"), None, float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    res = _run(job, procs=procs, threads=threads, tmp=tmp, independent=independent)
                    epochs = res["epoch_seconds"][1:] or res["epoch_seconds"]
                    best, acc = min(best, min(epochs)), res["accuracy"]
                    cpu = min(cpu, res["cpu_us_per_sample"])
                    print(
                        f"{name} {label}: {n / min(epochs):.0f} samples/s, "
                        f"{res['cpu_us_per_sample']:.0f} cpu-us/sample "
                        f"({time.perf_counter() - start:.1f} s wall)",
                        file=sys.stderr,
                    )
                row[label] = {
                    "samples_per_s": round(n / best, 1),
                    "epoch_s": round(best, 3),
                    "cpu_us_per_sample": round(cpu, 1),
                    "accuracy": acc,
                }
            base = row["1proc-1thread"]["samples_per_s"]
            row["speedup_2proc_vs_1proc_1thread"] = round(row["2proc-1thread"]["samples_per_s"] / base, 2)
            threaded = row[f"1proc-{cores}threads"]["samples_per_s"]
            row[f"speedup_2proc_vs_1proc_{cores}threads"] = round(
                row["2proc-1thread"]["samples_per_s"] / threaded, 2
            )
            row["speedup_2indep_vs_1proc_1thread"] = round(row["2indep-1thread"]["samples_per_s"] / base, 2)
            out["workloads"][name] = row
    out["load_average_after"] = list(os.getloadavg())
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
