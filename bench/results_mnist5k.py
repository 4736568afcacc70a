"""Short, real experiments on mnist5k with the ``cnn``: the numbers of docs/results.md.

Every run is a :class:`models.training_job.TrainJob` (what ``lmh-deploy train`` runs),
``--seed`` (default 0), the stratified 4000/1000 split of the 5000 bundled MNIST digits, batch 64,
SGD momentum 0.9, weight decay 5e-4, cosine schedule. The script prints a markdown
table and writes ``results.json``/``results.md`` (and every checkpoint) to
``--out-dir``::

    python bench/results_mnist5k.py --out-dir runs/mnist5k            # all experiments
    python bench/results_mnist5k.py --out-dir runs/mnist5k --only lmh lif

Experiments (``name``: what changes from ``lmh``):

* ``lmh``        LM-H progressive, TET, vanilla BN, T = 4 (the reference run)
* ``lif``        LIF neuron (LM-H special case, lambda_S = 0.5)
* ``radical``    LM-H radical factors (one set per step)
* ``ce_tdbn``    rate cross-entropy with tdBN
* ``qcfs``       QCFS ANN (L = 4), rate CE (the ANN has one output)
* ``hybrid``     ``qcfs`` converted to LM-H (T = L = 4), then fine-tuned (lr 0.002, TET)
* ``bptt_t6``    full BPTT at T = 6
* ``slice_k2``   time-slicing, k = 2 steps per slice at T = 6 (lr 0.0125 as Tab. S1)
* accuracy of ``lmh`` (trained at T = 4) evaluated at T = 1..16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from lmh_deploy.models.checkpoint import load_checkpoint
from lmh_deploy.models.data import load_dataset, make_loaders
from lmh_deploy.models.train import evaluate_per_timestep
from lmh_deploy.models.training_job import TrainJob, run_training_job

CLI_FLAGS = {
    "dataset": "--dataset",
    "arch": "--arch",
    "neuron": "--neuron",
    "factors": "--factors",
    "loss": "--loss",
    "norm": "--norm",
    "timesteps": "--timesteps",
    "epochs": "--epochs",
    "lr": "--lr",
    "width_mult": "--width-mult",
    "time_slice": "--time-slice",
    "qcfs_levels": "--qcfs-levels",
    "hybrid_from": "--hybrid-from",
    "seed": "--seed",
    "out": "--out",
    "json_path": "--json",
}


def experiments(epochs: int, width: float, finetune_epochs: int, seed: int = 0) -> dict[str, dict]:
    base = dict(
        dataset="mnist5k",
        arch="cnn",
        neuron="lmh",
        factors="progressive",
        loss="tet",
        norm="bn",
        timesteps=4,
        epochs=epochs,
        width_mult=width,
        seed=seed,
    )
    return {
        "lmh": base,
        "lif": {**base, "neuron": "lif"},
        "radical": {**base, "factors": "radical"},
        "ce_tdbn": {**base, "loss": "ce", "norm": "tdbn"},
        "qcfs": {**base, "neuron": "qcfs", "loss": "ce", "qcfs_levels": 4},
        "hybrid": {**base, "hybrid_from": "qcfs", "epochs": finetune_epochs, "lr": 0.002},
        "bptt_t6": {**base, "timesteps": 6},
        "slice_k2": {**base, "timesteps": 6, "time_slice": 2, "lr": 0.0125},
    }


def cli_command(job: TrainJob) -> str:
    defaults = TrainJob()
    parts = ["lmh-deploy train"]
    for field, flag in CLI_FLAGS.items():
        value = getattr(job, field)
        if value != getattr(defaults, field) or field in ("dataset", "arch", "out"):
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="runs/mnist5k")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--max-t", type=int, default=16)
    ap.add_argument("--only", nargs="*", default=None, help="run only these experiments")
    ap.add_argument("--seed", type=int, default=0, help="seed of every run (init, split, order)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: robust on a shared 2-core machine)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exps = experiments(args.epochs, args.width_mult, args.finetune_epochs, args.seed)
    names = args.only or list(exps)
    if "hybrid" in names and "qcfs" not in names and not (out / "qcfs.pt").exists():
        names = ["qcfs"] + names
    results: dict = {"settings": vars(args), "runs": {}}
    prev = out / "results.json"
    if args.only and prev.exists():
        results["runs"] = json.loads(prev.read_text()).get("runs", {})
    for name in names:
        kwargs = dict(exps[name])
        if kwargs.get("hybrid_from"):
            kwargs["hybrid_from"] = str(out / f"{kwargs['hybrid_from']}.pt")
        job = TrainJob(**kwargs, out=str(out / f"{name}.pt"), json_path=str(out / f"{name}.json"))
        start = time.perf_counter()
        m = run_training_job(
            job, progress=lambda e, n, a, name=name: print(f"  {name}: epoch {e}/{n} acc {a:.4f}", flush=True)
        )
        row = {
            "accuracy": m["accuracy"],
            "epochs": m["epochs"],
            "seconds_per_epoch": m["seconds_per_epoch"],
            "peak_memory_bytes": m["peak_memory_bytes"],
            "optimizer_steps": m["optimizer_steps"],
            "wall_s": time.perf_counter() - start,
            "history": m["history"],
            "command": cli_command(job),
            "job": dict(kwargs),
        }
        if "hybrid" in m:
            row["hybrid"] = m["hybrid"]
        results["runs"][name] = row
        print(
            f"{name}: acc {m['accuracy']:.4f}, peak {m['peak_memory_bytes'] / 2**20:.2f} MiB, "
            f"{m['seconds_per_epoch']:.1f} s/epoch",
            flush=True,
        )
        (out / "results.json").write_text(json.dumps(results, indent=1))
    if (out / "lmh.pt").exists():
        model, payload = load_checkpoint(out / "lmh.pt")
        _, test_set, _ = load_dataset("mnist5k", seed=args.seed)
        _, test_loader = make_loaders(test_set, test_set, batch_size=250)
        results["accuracy_vs_T"] = {
            "model": "lmh (trained at T=4)",
            "accuracy": evaluate_per_timestep(model, test_loader, timesteps=args.max_t),
        }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    md = markdown(results)
    (out / "results.md").write_text(md)
    print(md)
    return results


def markdown(results: dict) -> str:
    runs = results["runs"]
    lines = [
        "| run | what | T | epochs | test acc | peak saved-tensor MiB | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        j = r["job"]
        what = (
            f"{j['neuron']}"
            + (f"/{j['factors']}" if j["neuron"] == "lmh" else "")
            + f", {j['loss']}, {j['norm']}"
            + (f", k={j['time_slice']}" if j.get("time_slice") else "")
            + (", hybrid fine-tune" if j.get("hybrid_from") else "")
        )
        t = "1 (ANN)" if j["neuron"] == "qcfs" else str(j["timesteps"])
        lines.append(
            f"| {name} | {what} | {t} | {r['epochs']} | {r['accuracy']:.4f} | "
            f"{r['peak_memory_bytes'] / 2**20:.2f} | {r['seconds_per_epoch']:.1f} |"
        )
    if "hybrid" in runs and "hybrid" in runs["hybrid"]:
        h = runs["hybrid"]["hybrid"]
        hy = runs["hybrid"]
        lines += [
            "",
            f"Hybrid: QCFS ANN {h['ann_accuracy']:.4f} -> converted LM-H at "
            f"T={h['timesteps']} before fine-tuning {h['converted_accuracy']:.4f} "
            f"-> after {hy['epochs']} fine-tune epochs {hy['accuracy']:.4f}",
        ]
    if "bptt_t6" in runs and "slice_k2" in runs:
        ratio = runs["slice_k2"]["peak_memory_bytes"] / runs["bptt_t6"]["peak_memory_bytes"]
        lines += ["", f"Time-slicing k=2 / full BPTT at T=6: peak saved-tensor memory ratio {ratio:.3f}"]
    if "accuracy_vs_T" in results:
        acc = results["accuracy_vs_T"]["accuracy"]
        lines += [
            "",
            "Accuracy of `lmh` (trained at T=4) at inference T:",
            "",
            "| T | " + " | ".join(str(i + 1) for i in range(len(acc))) + " |",
            "|---" * (len(acc) + 1) + "|",
            "| acc | " + " | ".join(f"{a:.3f}" for a in acc) + " |",
        ]
    lines += ["", "Commands:", ""] + [f"- {n}: `{r['command']}`" for n, r in runs.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
