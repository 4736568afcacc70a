"""LM-H vs LIF, trained and deployed in fixed point, on event data (digits-events) and on the
same digits as static images: the numbers of docs/results.md ("Event data").

For every dataset x neuron x seed this runs what a user runs::

    lmh-deploy train --dataset D --arch cnn --neuron N --width-mult W --epochs E --timesteps 8 --seed S
    lmh-deploy compile model.pt -o build
    lmh-deploy run build --backend sim --samples ALL --json run.json --sweep 1,2,4,8
    lmh-deploy verify build --samples V --json verify.json   (Lava == sim; --verify-seeds only)

and writes ``results.json`` (every number) and ``results.md`` (tables) into ``--out-dir``,
plus ``compare-<dataset>.html`` (``lmh-deploy compare`` of seed 0's LM-H and LIF runs).
Both datasets run T = 8 steps (digits-events has 8 frames; static digits are presented
8 times). ``--quick`` is a smoke run (1 seed, 1 epoch).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATASETS = ("digits-events", "digits")
NEURONS = ("lmh", "lif")


def sh(*args: str) -> None:
    """Run one lmh-deploy command; fail loudly with its output."""
    res = subprocess.run(["lmh-deploy", *args], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"lmh-deploy {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")


def one(
    out: Path, dataset: str, neuron: str, seed: int, epochs: int, width: float, verify_samples: int
) -> dict:
    run_dir = out / dataset / f"{neuron}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if not (run_dir / "train.json").exists():
        sh(
            "train",
            "--dataset",
            dataset,
            "--arch",
            "cnn",
            "--neuron",
            neuron,
            "--width-mult",
            str(width),
            "--epochs",
            str(epochs),
            "--timesteps",
            "8",
            "--seed",
            str(seed),
            "--out",
            str(run_dir / "model.pt"),
            "--json",
            str(run_dir / "train.json"),
        )
    train_s = time.perf_counter() - start
    sh("compile", str(run_dir / "model.pt"), "-o", str(run_dir / "build"))
    sh(
        "run",
        str(run_dir / "build"),
        "--backend",
        "sim",
        "--samples",
        "100000",
        "--json",
        str(run_dir / "run.json"),
        "--sweep",
        "1,2,4,8",
        "--html",
        str(run_dir / "report.html"),
    )
    if verify_samples:
        sh(
            "verify",
            str(run_dir / "build"),
            "--samples",
            str(verify_samples),
            "--json",
            str(run_dir / "verify.json"),
        )
    train = json.loads((run_dir / "train.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    ver = (
        json.loads((run_dir / "verify.json").read_text())
        if verify_samples
        else {
            "samples": 0,
            "float_vs_fixed": {"accuracy_float": None, "accuracy_fixed": None},
            "lava_vs_sim": {
                "mismatched_spikes": 0,
                "state_mismatches": 0,
                "readout_mismatches": 0,
                "spikes_compared": 0,
            },
        }
    )
    lv = ver["lava_vs_sim"]
    return {
        "dataset": dataset,
        "neuron": neuron,
        "seed": seed,
        "float_accuracy": train["accuracy"],
        "fixed_accuracy": run["accuracy"],
        "samples": run["samples"],
        "verify_samples": ver["samples"],
        "verify_float_accuracy": ver["float_vs_fixed"]["accuracy_float"],
        "verify_fixed_accuracy": ver["float_vs_fixed"]["accuracy_fixed"],
        "lava_mismatches": lv["mismatched_spikes"] + lv["state_mismatches"] + lv["readout_mismatches"],
        "spikes_compared": lv["spikes_compared"],
        "spikes_per_sample": run["totals"]["spikes"] / run["samples"],
        "synops_per_sample": run["totals"]["synops"] / run["samples"],
        "energy_joules": run["energy_joules"],
        "accuracy_vs_t": {r["timesteps"]: r["accuracy"] for r in run["t_sweep"]},
        "train_seconds": round(train_s, 1),
    }


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| dataset | neuron | seeds | float acc. | fixed acc. (sim) | fixed - float (pp) "
            "| spikes / sample | synops / sample | energy / sample (uJ) | Lava mismatches |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds in DATASETS:
        for neuron in NEURONS:
            sel = [r for r in rows if r["dataset"] == ds and r["neuron"] == neuron]
            if not sel:
                continue

            def ms(key: str, scale: float = 1.0, fmt: str = "{:.1f}", sel: list[dict] = sel) -> str:
                vals = [r[key] * scale for r in sel]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(sd)}"

            drop = [100 * (r["fixed_accuracy"] - r["float_accuracy"]) for r in sel]
            lines.append(
                f"| {ds} | {neuron} | {len(sel)} | {ms('float_accuracy', 100)} % "
                f"| {ms('fixed_accuracy', 100)} % | {statistics.mean(drop):+.2f} "
                f"| {ms('spikes_per_sample', 1, '{:.0f}')} | {ms('synops_per_sample', 1e-3, '{:.0f}')}k "
                f"| {ms('energy_joules', 1e6, '{:.2f}')} "
                f"| {sum(r['lava_mismatches'] for r in sel)} of "
                f"{sum(r['spikes_compared'] for r in sel)} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path("runs/events"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument(
        "--verify-samples", type=int, default=60, help="samples of the Lava == sim check (Lava is slow)"
    )
    parser.add_argument(
        "--verify-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="seeds whose deployments are also run on Lava",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = [0], 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for ds in args.datasets:
            for neuron in NEURONS:
                verify = args.verify_samples if seed in args.verify_seeds else 0
                row = one(args.out_dir, ds, neuron, seed, args.epochs, args.width, verify)
                rows.append(row)
                print(json.dumps(row), flush=True)
                (args.out_dir / "results.json").write_text(
                    json.dumps({"epochs": args.epochs, "width_mult": args.width, "rows": rows}, indent=1)
                )
    for ds in args.datasets:
        a, b = (args.out_dir / ds / f"{n}-s{args.seeds[0]}" / "run.json" for n in NEURONS)
        res = subprocess.run(
            ["lmh-deploy", "compare", str(a), str(b), "--html", str(args.out_dir / f"compare-{ds}.html")],
            capture_output=True,
            text=True,
            check=False,
        )
        (args.out_dir / f"compare-{ds}.txt").write_text(res.stdout + res.stderr)
    md = table(rows)
    (args.out_dir / "results.md").write_text(md + "\n")
    print(md)
    sys.exit(0)


if __name__ == "__main__":
    main()
