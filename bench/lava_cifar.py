"""A Lava run of a CIFAR-size ResNet-20 (3x32x32, T = 4): the whole command, its parts, per step.

Builds the ResNet-20 of ``models/architectures.py`` (random weights, seeded; BN in eval mode)
for 3x32x32 inputs, compiles it (no calibration data needed: CIFAR is not downloaded) and
measures, on random images:

* **The command**: ``lmh-deploy run BUILD --backend lava --samples 1`` and ``--samples K``
  as a user runs them (a fresh process each: imports, artifact, Lava), alternated by
  :func:`timing.alternate` for ``--rounds`` rounds. Per further sample is the per-round
  difference ``(t_K - t_1) / (K - 1)``; it is refused (null, with the reason) when the median
  difference is not above the spread (interquartile range) of the 1-sample times.
* **Where a run's time goes**: one in-process run of 1 and one of K samples with
  ``run_lava(..., phases=...)``: our lowering, Lava's compiler, the start of the worker
  processes, the first ``depth + 1`` global steps (every worker's first active step), Lava's
  run of the remaining N steps, read-back, stop, each in wall and in CPU time of this process
  and all workers. Lava's time per step is the K-sample run's N steps divided by N.
* **Lava == sim/**: the K-sample run's spikes (every layer, sample and step), final states and
  logits against sim/'s.

Both use the default ``--lava-conv auto`` (every convolution on Sparse while the run's estimate
fits the budget); the JSON records the plan (``lava_plan``: budget, estimate, paths on Conv).

    python bench/lava_cifar.py --json bench/lava_cifar.json
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import lmh_deploy  # noqa: F401  - Lava import fix
from lmh_deploy.backends.lava.lower import build_layers
from lmh_deploy.backends.lava.plan import LavaPlan, plan_lowering
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.passes.delays import layer_depths
from lmh_deploy.pipeline.inputs import quantize
from lmh_deploy.sim import simulate
from timing import alternate, environment, save, summary

SHAPE = (3, 32, 32)
STARTUP = ("lower", "compile", "start", "first_steps", "stop")  # run_lava's parts besides its steps
TIMESTEPS = 4


def make_artifact(work: Path, seed: int) -> Path:
    """Build and compile the network; run in a child process (``--make-artifact``), so that
    this process, whose Lava runs are profiled, holds no torch, as ``run --backend lava``."""
    import torch

    from lmh_deploy.models.architectures import build
    from lmh_deploy.models.checkpoint import save_checkpoint
    from lmh_deploy.pipeline.compile import compile_model

    torch.manual_seed(seed)
    model = build("resnet20", SHAPE, 10, timesteps=TIMESTEPS).eval()
    dataset = {"name": "cifar10", "input_shape": list(SHAPE), "num_classes": 10, "x_max": 1.0, "seed": seed}
    save_checkpoint(
        work / "resnet20.pt", model, arch="resnet20", arch_kwargs={"timesteps": TIMESTEPS}, dataset=dataset
    )
    compile_model(work / "resnet20.pt", work / "build", calibration_samples=0)
    return work / "build"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def command_times(build_dir: Path, inputs: Path, k: int, rounds: int) -> dict:
    """The CLI run of 1 and of k samples, alternated; per further sample with its guard."""
    exe = Path(sys.executable).with_name("lmh-deploy")
    cpu: dict[str, list[float]] = {"1 sample": [], f"{k} samples": []}

    def command(samples: int, side: str):
        def call() -> None:
            before = children_cpu()
            args = [str(exe), "run", str(build_dir), "--backend", "lava", "--samples", str(samples)]
            subprocess.run([*args, "--inputs", str(inputs)], check=True, capture_output=True)
            cpu[side].append(children_cpu() - before)

        return call

    timed = alternate(
        {"1 sample": command(1, "1 sample"), f"{k} samples": command(k, f"{k} samples")},
        rounds=rounds,
        warmup=0,
    )
    result = {
        "samples": k,
        "rounds": rounds,
        "seconds": timed["seconds"],
        "per_round": timed["per_round"],
        "load_per_round": timed["load_per_round"],
        "cpu_seconds_all_processes": {side: summary(v) | {"per_round": v} for side, v in cpu.items()},
    }
    for key, per_round in (("", timed["per_round"]), ("cpu_", cpu)):
        further, refused = per_further_sample(per_round["1 sample"], per_round[f"{k} samples"], k)
        result[f"{key}per_further_sample_seconds"] = further
        result[f"{key}per_further_sample_refused"] = refused
    return result


def per_further_sample(one: list[float], many: list[float], k: int) -> tuple[dict | None, str | None]:
    """Per-round ``(t_k - t_1) / (k - 1)``, or the reason it is refused: the median difference
    must be above the spread (interquartile range) of the 1-sample times."""
    further = [(b - a) / (k - 1) for a, b in zip(one, many, strict=True)]
    stats = summary(one)
    spread, difference = stats["q3"] - stats["q1"], statistics.median(further) * (k - 1)
    if difference <= spread:
        return None, f"median difference {difference:.2f} s is not above the 1-sample spread {spread:.2f} s"
    return summary(further) | {"per_round": further}, None


def in_process(build_dir: Path, x: np.ndarray, k: int) -> dict:
    art = load_artifact(build_dir)
    q = art.quant_graph
    x_int = quantize(q, x[:k])
    first = max(layer_depths(q).values()) + 1  # every worker's first active step
    plan = plan_lowering(q)
    runs = {}
    for samples in (1, k):
        phases: dict[str, float] = {}
        before = children_cpu()
        rec = run_lava(q, x_int[:samples], TIMESTEPS, phases=phases, first_steps=first, plan=plan)
        runs[samples] = (rec, phases | {"workers_cpu": children_cpu() - before})
    rec, many = runs[k]
    sim = simulate(q, x_int, TIMESTEPS)
    compared = sum(s.size for s in sim.spikes.values())
    differ = sum(int((sim.spikes[n] != rec.spikes[n]).sum()) for n in sim.spikes)
    states = sum(
        int((sim.final_state[n][0][-1] != rec.final_state[n][0][0]).sum())
        + int((sim.final_state[n][1][-1] != rec.final_state[n][1][0]).sum())
        for n in sim.spikes
    )
    one = runs[1][1]
    cpu = many.get("steps_cpu")
    return {
        "phases_1_sample": one,
        f"phases_{k}_samples": many,
        "lava_steps_timed": many["steps_run"],
        "lava_seconds_per_step": many["steps"] / many["steps_run"],
        "lava_cpu_seconds_per_step": None if cpu is None else cpu / many["steps_run"],
        "startup_seconds": {p: one[p] for p in STARTUP},
        "startup_cpu_seconds": {p: one.get(f"{p}_cpu") for p in STARTUP},
        "neurons": int(sum(q.node(n).size for n in q.of_kind("q_lmh"))),
        "lava_processes": lava_processes(q, plan),
        "lava_plan": {
            "route": plan.route.value,
            "budget_bytes": plan.budget,
            "estimated_bytes": plan.need,
            "paths_on_conv": sorted(plan.conv),
        },
        "spikes_compared": int(compared),
        "spikes_differing": int(differ),
        "state_mismatches": int(states),
        "logits_identical": bool(np.array_equal(sim.logits, rec.logits)),
        "sample_steps_compared": int(k * TIMESTEPS),
    }


def lava_processes(q, plan: LavaPlan) -> dict[str, int]:
    """Lava Processes of a run (each one OS process on Lava's CPU runtime)."""
    layers = build_layers(q, TIMESTEPS, samples=1, record=True, plan=plan)
    counts = {"LM-H layers": len(layers.neurons), "connections": len(layers.connections)}
    return counts | {"source and readout": 2, "all": sum(counts.values()) + 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # K = 9: a further sample costs about 0.1 s, so a 3-sample run's 0.2 s more was within the
    # 1-sample runs' spread (0.4 s) and the guard refused it; 8 further samples resolve it
    parser.add_argument("--samples", type=int, default=9, help="K, the larger run (default 9)")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds of the command")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--make-artifact", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_artifact is not None:
        make_artifact(args.make_artifact, args.seed)
        return
    env = environment(threads=0)
    with tempfile.TemporaryDirectory(prefix="lava-cifar-") as tmp:
        work = Path(tmp)
        child = [sys.executable, __file__, "--make-artifact", str(work), "--seed", str(args.seed)]
        subprocess.run(child, check=True)
        build_dir = work / "build"
        x = np.random.default_rng(args.seed).random((args.samples, *SHAPE)).astype(np.float32)
        np.save(work / "x.npy", x)
        result = {"network": "resnet20 3x32x32, T=4, random weights (seeded), untrained"}
        result["in_process"] = in_process(build_dir, x, args.samples)
        result["command_runs"] = command_times(build_dir, work / "x.npy", args.samples, args.rounds)
    record = save(args.json, result, env)
    cmd, run = record["command_runs"], record["in_process"]
    print(f"whole command, 1 sample: {cmd['seconds']['1 sample']['median']:.1f} s (median of {args.rounds})")
    for key, what in (("", "wall"), ("cpu_", "CPU of all processes")):
        further = cmd[f"{key}per_further_sample_seconds"]
        refused = cmd[f"{key}per_further_sample_refused"]
        print(
            f"per further sample ({what}): "
            + (f"{further['median']:.2f} s" if further else f"refused ({refused})")
        )
    print(
        f"Lava per step: {run['lava_seconds_per_step']:.3f} s wall, "
        f"{run['lava_cpu_seconds_per_step']} s CPU; "
        f"start-up parts: {run['startup_seconds']}"
    )
    print(f"spikes differing from sim/: {run['spikes_differing']} of {run['spikes_compared']}")


if __name__ == "__main__":
    main()
