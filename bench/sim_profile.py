"""Where sim/ and the lean float loop spend their time, part by part, for the rows of
``sim_vs_float.py`` (the same nets, inputs and calibration).

sim/: CPU seconds (``time.process_time``: on a shared machine, time waiting for a core is
not counted) in the synaptic sums by way (``gemm``: float BLAS / convolution; ``events``:
the compiled gather or scatter; ``int8``: the CPU's int8 matrix units), in the fused
neuron kernel, and the rest (chunk bookkeeping, currents of residual sums, record); an MLP
runs whole in one compiled call (:mod:`lmh_deploy.sim.chain`), its neuron updates, event
gathers and first layer's sums timed together as one part (and its ns per neuron-step
includes them all). Float
(:class:`float_baselines.LeanNet`): in the Linear / Conv2d layers, in the in-place LM-H
update, and the rest. ``ns per neuron-step`` divides the neuron part by T x batch x
neurons. Totals are medians of ``--runs`` runs after warm-up; the parts are summed over
those runs.

    python bench/sim_profile.py --json bench/sim_profile.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

import lmh_deploy  # noqa: F401  - Lava import fix
from float_baselines import LeanNet, LeanNeuron
from lmh_deploy.sim import simulate
from lmh_deploy.sim import chain as chain_module
from lmh_deploy.sim import simulator as sim_module
from lmh_deploy.sim.synapse import SynapsePath
from lmh_deploy.sim.simulator import plan_for
from sim_vs_float import ROWS, prepared, warm_runs
from timing import environment, save, set_threads

CLOCK = time.process_time
LAYERS = "layers (Linear / Conv2d, pooling, residual sums)"
#: an MLP's whole run in one compiled call (sim/chain.py): neuron updates and the event
#: gathers of the hidden and readout layers together
CHAIN = "chain kernel (neuron kernel + event gathers)"


def _timed_sim(parts: dict[str, float]):
    """Patch sim/'s synapse ways and neuron kernel to add their CPU time to ``parts``."""
    originals = {"gemm": SynapsePath._gemm, "events": SynapsePath._events, "int8": SynapsePath._int8}

    def wrap(way, fn):
        def timed(self, pre):
            start = CLOCK()
            try:
                return fn(self, pre)
            finally:
                parts[f"synaptic sums ({way})"] += CLOCK() - start

        return timed

    for way, fn in originals.items():
        setattr(SynapsePath, f"_{way}", wrap(way, fn))
    neuron = sim_module.run_neuron_chunk

    def timed_neuron(*args, **kw):
        start = CLOCK()
        try:
            return neuron(*args, **kw)
        finally:
            parts["neuron kernel"] += CLOCK() - start

    sim_module.run_neuron_chunk = timed_neuron
    whole = chain_module._run

    def timed_chain(*args):
        start = CLOCK()
        try:
            return whole(*args)
        finally:
            parts[CHAIN] += CLOCK() - start

    chain_module._run = timed_chain

    def restore() -> None:
        for way, fn in originals.items():
            setattr(SynapsePath, f"_{way}", fn)
        sim_module.run_neuron_chunk = neuron
        chain_module._run = whole

    return restore


def _timed_float(lean: LeanNet, parts: dict[str, float]) -> None:
    """Wrap the lean net's ops: neurons (the in-place update) and the rest by kind."""

    def wrap(op, label):
        def timed(x):
            start = CLOCK()
            try:
                return op(x)
            finally:
                parts[label] += CLOCK() - start

        return timed

    original = LeanNeuron.__call__

    def neuron_call(self, current, steps):
        start = CLOCK()
        try:
            return original(self, current, steps)
        finally:
            parts["LM-H update"] += CLOCK() - start

    LeanNeuron.__call__ = neuron_call  # type: ignore[method-assign]
    lean.ops = [wrap(op, LAYERS) for op in lean.ops]


def _profile(run, parts: dict[str, float], runs: int) -> dict:
    totals = []
    for part in list(parts):
        parts[part] = 0.0
    for _ in range(runs):
        start = CLOCK()
        run()
        totals.append(CLOCK() - start)
    total = sum(totals)
    out = {part: seconds / total for part, seconds in parts.items()}
    return {"cpu_s_per_run": statistics.median(totals), "fractions": out}


def profile_row(name: str, args) -> dict:
    spec = ROWS[name]
    model, q, x, x_int, _ = prepared(name, args)
    steps, batch = spec["steps"], spec["batch"]
    chunks = [slice(i, i + batch) for i in range(0, len(x), batch)]
    sim_parts: dict[str, float] = defaultdict(float)
    sim_parts.update(
        {f"synaptic sums ({way})": 0.0 for way in ("gemm", "events", "int8")} | {"neuron kernel": 0.0}
    )
    if plan_for(q, None).chain is not None:
        sim_parts[CHAIN] = 0.0

    def sim_run() -> None:
        for c in chunks:
            simulate(q, x_int[c], steps, record_spikes=False)

    for _ in range(warm_runs(q)):
        sim_run()
    restore = _timed_sim(sim_parts)
    try:
        sim = _profile(sim_run, sim_parts, args.runs)
    finally:
        restore()
    sim["fractions"]["rest"] = 1 - sum(sim["fractions"].values())

    lean = LeanNet(model, steps, channels_last=spec["arch"] != "mlp")
    float_parts: dict[str, float] = defaultdict(float)
    original = LeanNeuron.__call__
    _timed_float(lean, float_parts)
    try:
        with torch.inference_mode():
            xt = torch.as_tensor(x, dtype=torch.float32)

            def float_run() -> None:
                for c in chunks:
                    lean(xt[c])

            float_run()
            flt = _profile(float_run, float_parts, args.runs)
    finally:
        LeanNeuron.__call__ = original  # type: ignore[method-assign]
    layers = flt["fractions"].pop("layers (Linear / Conv2d, pooling, residual sums)")
    flt["fractions"]["layers (Linear / Conv2d, pooling, residual sums)"] = (
        layers - flt["fractions"]["LM-H update"]
    )
    neuron_steps = steps * len(x) * sum(q.node(n).size for n in q.of_kind("q_lmh"))
    return {
        "row": name,
        "sim": sim,
        "float_lean": flt,
        "neuron_steps_per_run": neuron_steps,
        "ns_per_neuron_step": {  # an MLP's chain: neuron updates and gathers together
            "sim neuron kernel": 1e9
            * sim["cpu_s_per_run"]
            * (sim["fractions"]["neuron kernel"] + sim["fractions"].get(CHAIN, 0.0))
            / neuron_steps,
            "float LM-H update": 1e9 * flt["cpu_s_per_run"] * flt["fractions"]["LM-H update"] / neuron_steps,
        },
    }


def _ns(profile: dict, part: str, neuron_steps: int) -> float:
    return 1e9 * profile["cpu_s_per_run"] * profile["fractions"][part] / neuron_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=["mlp", "mlp-b1", "cnn", "vgg13"], choices=list(ROWS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.15)
    parser.add_argument("--calibration-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    set_threads(1)
    env = environment(1)
    rows = []
    for name in args.rows:
        rows.append(profile_row(name, args))
        row = rows[-1]
        show = {k: f"{v:.0%}" for k, v in row["sim"]["fractions"].items()}
        print(f"{name}: sim {row['sim']['cpu_s_per_run']:.3f} s {show}", flush=True)
        show = {k: f"{v:.0%}" for k, v in row["float_lean"]["fractions"].items()}
        print(f"{name}: float {row['float_lean']['cpu_s_per_run']:.3f} s {show}", flush=True)
        print(f"{name}: ns per neuron-step {row['ns_per_neuron_step']}", flush=True)
    save(args.json, {"unit": "CPU seconds (process_time); fractions of the total", "rows": rows}, env)


if __name__ == "__main__":
    main()
