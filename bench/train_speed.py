"""Training cost of LM-H vs LIF, and memory of time-slicing vs full BPTT, in one run.

Prints

* the LM-H / LIF training-step time ratio (goal <= 1.3): the same network, batch and
  ``T`` with ``neuron="lmh"`` (progressive factors) and ``neuron="lif"``; full STBP
  steps (forward, TET loss, backward, SGD step) alternate between the two models
  (:func:`timing.alternate`, ``--steps`` rounds): the median of the per-round ratios, with
  its spread, so load on a shared machine hits both alike;
* the time-slicing / full-BPTT peak memory ratio (goal <= 0.45 at k = 2, T = 6): peak
  bytes of tensors saved for backward (:class:`models.train.SavedTensorMeter`, the
  ``peak_memory_bytes`` of ``lmh-deploy train``) of one training step of the LM-H
  network with slices of ``k`` steps and with full BPTT over ``T`` steps.

Usage::

    python bench/train_speed.py                   # cnn, mnist-sized input, width 0.5
    python bench/train_speed.py --json            # JSON on stdout
    python bench/train_speed.py --json out.json   # and to a file
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from lmh_deploy.models.architectures import build
from lmh_deploy.models.losses import tet_loss
from lmh_deploy.models.train import SavedTensorMeter, train_step
from timing import alternate, environment, save

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}


def _model(args: argparse.Namespace, neuron: str, timesteps: int) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    return build(
        args.arch,
        SHAPES[args.input],
        10,
        neuron=neuron,
        timesteps=timesteps,
        width_mult=args.width_mult,
        norm=args.norm,
    )


def step_time_ratio(args: argparse.Namespace) -> dict:
    x = torch.rand(args.batch_size, *SHAPES[args.input])
    y = torch.randint(0, 10, (args.batch_size,))
    runs = {}
    for neuron in ("lmh", "lif"):
        model = _model(args, neuron, args.timesteps).train()
        runs[neuron] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))

    def step(neuron: str):
        model, opt = runs[neuron]
        return lambda: train_step(model, opt, tet_loss, x, y, timesteps=args.timesteps, time_slice=None)

    timed = alternate(
        {"lmh": step("lmh"), "lif": step("lif")},
        rounds=args.steps,
        warmup=args.warmup,
        ratios={"lmh_over_lif": ("lmh", "lif")},
    )
    ratio = timed["ratios"]["lmh_over_lif"]
    return {
        "lmh_step_s": timed["seconds"]["lmh"],
        "lif_step_s": timed["seconds"]["lif"],
        "ratio": ratio["median"],
        "ratio_spread": {k: ratio[k] for k in ("min", "q1", "q3", "max")},
        "rounds": timed["rounds"],
        "load_per_round": timed["load_per_round"],
        "goal": 1.3,
    }


def memory_ratio(args: argparse.Namespace) -> dict:
    x = torch.rand(args.batch_size, *SHAPES[args.input])
    y = torch.randint(0, 10, (args.batch_size,))
    peaks = {}
    for name, k in (("full_bptt", None), ("time_slice", args.slice)):
        model = _model(args, "lmh", args.slice_timesteps).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        meter = SavedTensorMeter.for_model(model)
        train_step(model, opt, tet_loss, x, y, timesteps=args.slice_timesteps, time_slice=k, meter=meter)
        peaks[name] = meter.peak
    return {
        "k": args.slice,
        "T": args.slice_timesteps,
        "full_bptt_bytes": peaks["full_bptt"],
        "time_slice_bytes": peaks["time_slice"],
        "ratio": peaks["time_slice"] / peaks["full_bptt"],
        "goal": 0.45,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="cnn")
    ap.add_argument("--input", choices=sorted(SHAPES), default="mnist")
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--norm", default="bn")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--timesteps", type=int, default=4, help="T of the speed comparison")
    ap.add_argument("--slice", type=int, default=2, help="k of the memory comparison")
    ap.add_argument("--slice-timesteps", type=int, default=6, help="T of the memory comparison")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per neuron")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--json", nargs="?", const="-", default=None, help="print JSON (or write it to the given path)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(args.threads)
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "speed": step_time_ratio(args),
        "memory": memory_ratio(args),
    }
    s, m = result["speed"], result["memory"]
    result["ok"] = s["ratio"] <= s["goal"] and m["ratio"] <= m["goal"]
    result = save(None if args.json in (None, "-") else args.json, result, env)
    if args.json == "-":
        print(json.dumps(result, indent=1))
    if args.json != "-":
        print(f"{args.arch} {SHAPES[args.input]} width {args.width_mult} batch {args.batch_size}")
        print(
            f"LM-H / LIF training step, T={args.timesteps}: {s['lmh_step_s']['median'] * 1e3:.1f} ms / "
            f"{s['lif_step_s']['median'] * 1e3:.1f} ms; median of per-round ratios {s['ratio']:.3f} "
            f"[{s['ratio_spread']['min']:.3f}-{s['ratio_spread']['max']:.3f}] (goal <= {s['goal']})"
        )
        print(
            f"time-slice k={m['k']} / full BPTT, T={m['T']}: peak saved tensors "
            f"{m['time_slice_bytes'] / 2**20:.2f} MiB / {m['full_bptt_bytes'] / 2**20:.2f} MiB"
            f" = {m['ratio']:.3f} (goal <= {m['goal']})"
        )
    return result


if __name__ == "__main__":
    main()
