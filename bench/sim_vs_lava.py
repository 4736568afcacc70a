"""sim/ against Lava's CPU runtime on the same integer network: time per sample-step.

Each row builds a random LM-H network (seeded; factors mu_d -0.2, mu_s 0.1, lam_d 1.2,
lam_s 0.8), quantises it and runs three sides in alternation (:func:`timing.alternate`,
median and spread over ``--rounds`` rounds after a warm-up):

* ``lava``: :func:`run_lava` (``Loihi2SimCfg``, fixed_pt) on the row's samples (mlp 16,
  cnn 32; ``--lava-samples``), one after another. Its start-up (our lowering, Lava's
  compiler, starting the workers) and its first ``depth + 1`` global steps (every worker's
  first active step, where Lava's models set themselves up) run as calls of their own; the
  time per sample-step is Lava's run of the remaining N steps divided by N (one global step
  advances every layer by one step of some sample). A row's ratios are refused (null, with
  the reason) when the median time of those N steps is not above the spread (max - min
  over the rounds) of the start-up before them: then a load burst alone could have made it.
* ``sim``: :func:`simulate` streaming (``record_spikes=False``, as ``run --stream``) at batch
  ``--batch``; ``sim b1``: the same on ``--batch1-samples`` samples one at a time.

Every round checks Lava's spikes against sim/'s (recorded run) on every layer, sample and
step, its last sample's final states, and the logits. Besides wall time, each side's CPU
time: sim/'s is this process's, Lava's that of this process and all its workers during
the timed steps (read from /proc; the CPU ratio leaves out the waits for a core, which on
a loaded machine hit Lava's ~10-50 processes far more than sim/'s one).

    python bench/sim_vs_lava.py --json bench/sim_vs_lava.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch

import lmh_deploy  # noqa: F401  - Lava import fix
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.models.architectures import build
from lmh_deploy.passes.delays import layer_depths
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate
from timing import Timed, alternate, environment, save, set_threads, summary

ROWS: dict[str, dict[str, Any]] = {
    # lava_samples: enough global steps that Lava's timed run stands out of its start-up's noise
    "mlp": {
        "arch": "mlp",
        "shape": (1, 8, 8),
        "T": 100,
        "kw": {"hidden": (400, 400, 400)},
        "lava_samples": 16,
    },
    "cnn": {"arch": "cnn", "shape": (1, 28, 28), "T": 8, "kw": {"width_mult": 0.5}, "lava_samples": 32},
}


def build_net(row: dict[str, Any], seed: int):
    torch.manual_seed(seed)
    model = build(row["arch"], row["shape"], 10, timesteps=row["T"], **row["kw"]).eval()
    for neuron in model.neurons():
        neuron.set_factors(mu_d=-0.2, mu_s=0.1, lam_d=1.2, lam_s=0.8)
    graph = export_model(model, input_shape=row["shape"], timesteps=row["T"])
    return quantize_graph(graph)[0]


def compare(q, x_int: np.ndarray, steps: int, lava) -> dict[str, int | bool]:
    """Lava's record against sim/'s recorded run: every layer, sample and step."""
    ref = simulate(q, x_int, steps)
    differ = sum(int((ref.spikes[n] != lava.spikes[n]).sum()) for n in ref.spikes)
    states = sum(
        int((ref.final_state[n][i][-1] != lava.final_state[n][i][0]).sum())
        for n in ref.spikes
        for i in (0, 1)
    )
    return {
        "spikes_compared": int(sum(s.size for s in ref.spikes.values())),
        "spikes_differing": differ,
        "final_state_mismatches": states,
        "logits_identical": bool(np.array_equal(ref.logits, lava.logits)),
    }


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    row = ROWS[name]
    steps = row["T"]
    q = build_net(row, args.seed)
    rng = np.random.default_rng(args.seed)
    x_int = fx.quantize_input(rng.random((args.batch, *row["shape"])), q.node("input").scale)
    lava_samples = args.lava_samples or row["lava_samples"]
    lava_x = x_int[:lava_samples]
    singles = x_int[: args.batch1_samples]
    first = max(layer_depths(q).values()) + 1  # every worker's first active step
    lava_runs: list[dict[str, Any]] = []

    def lava() -> Timed:
        phases: dict[str, float] = {}
        rec = run_lava(q, lava_x, steps, phases=phases, first_steps=first)
        lava_runs.append({"phases": phases, "checked": compare(q, lava_x, steps, rec)})
        cpu = phases.get("steps_cpu")
        return Timed(
            phases["steps"] / phases["steps_run"], None if cpu is None else cpu / phases["steps_run"]
        )

    def sim_side(xs: np.ndarray, batch: int):
        def side() -> Timed:
            cpu, start = time.process_time(), time.perf_counter()
            for chunk in np.split(xs, len(xs) // batch):
                simulate(q, chunk, steps, record_spikes=False)
            sample_steps = len(xs) * steps
            return Timed(
                (time.perf_counter() - start) / sample_steps, (time.process_time() - cpu) / sample_steps
            )

        return side

    timing = alternate(
        {"lava": lava, "sim": sim_side(x_int, args.batch), "sim b1": sim_side(singles, 1)},
        rounds=args.rounds,
        warmup=1,
        ratios={"sim_over_lava": ("lava", "sim"), "sim_b1_over_lava": ("lava", "sim b1")},
    )
    timed_runs = lava_runs[1:]  # the warm-up's run is checked, not timed
    startup = [sum(r["phases"][p] for p in ("lower", "compile", "start", "first_steps")) for r in timed_runs]
    lava_steps = [r["phases"]["steps"] for r in timed_runs]
    noise = max(startup) - min(startup)
    refused = None
    if statistics.median(lava_steps) <= noise:
        refused = (
            f"Lava's timed steps took {statistics.median(lava_steps):.2f} s (median), not above the "
            f"spread of its start-up over the rounds ({noise:.2f} s): use more --lava-samples"
        )
    checked = [r["checked"] for r in lava_runs]
    return {
        "row": name,
        "arch": row["arch"],
        "T": steps,
        "batch": args.batch,
        "batch1_samples": args.batch1_samples,
        "lava_samples": lava_samples,
        "neurons": int(sum(q.node(n).size for n in q.of_kind("q_lmh"))),
        "layers": len(q.of_kind("q_lmh")),
        "lava_steps_timed": timed_runs[0]["phases"]["steps_run"],
        "lava_startup_steps": first,
        "lava_startup_seconds": summary(startup) | {"per_round": startup},
        "lava_steps_seconds": summary(lava_steps) | {"per_round": lava_steps},
        "lava_phases_per_round": [r["phases"] for r in timed_runs],
        "seconds_per_sample_step": timing["seconds"],
        "sim_over_lava": None if refused else timing["ratios"]["sim_over_lava"],
        "sim_b1_over_lava": None if refused else timing["ratios"]["sim_b1_over_lava"],
        "cpu_sim_over_lava": None if refused else timing["cpu_ratios"].get("sim_over_lava"),
        "cpu_sim_b1_over_lava": None if refused else timing["cpu_ratios"].get("sim_b1_over_lava"),
        "cpu_seconds_per_sample_step": timing["cpu_seconds"],
        "refused": refused,
        "checked_runs": checked,
        "spikes_identical": all(
            c["spikes_differing"] == 0 and c["final_state_mismatches"] == 0 and c["logits_identical"]
            for c in checked
        ),
        "timing": {k: v for k, v in timing.items() if k not in ("ratios", "cpu_ratios")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batch1-samples", type=int, default=16)
    parser.add_argument("--lava-samples", type=int, default=0, help="samples Lava runs (0: the row's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS/numba threads of sim/")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if (
        max(args.batch1_samples, args.lava_samples, *(ROWS[r]["lava_samples"] for r in args.rows))
        > args.batch
    ):
        parser.error("--batch1-samples and the Lava samples must not exceed --batch")
    set_threads(args.threads)
    env = environment(threads=args.threads)
    rows = []
    for name in args.rows:
        rows.append(measure(name, args))
        r = rows[-1]
        ratio = r["sim_over_lava"]
        print(
            f"{name}: Lava {1e3 * r['seconds_per_sample_step']['lava']['median']:.2f} ms per sample-step; "
            + (f"sim/ {ratio['median']:.0f}x Lava" if ratio else f"refused: {r['refused']}")
            + f"; spikes identical: {r['spikes_identical']}",
            flush=True,
        )
    save(args.json, {"rows": rows}, env)


if __name__ == "__main__":
    main()
