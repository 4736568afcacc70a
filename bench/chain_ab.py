"""The dense chain (sim/chain.py) of this tree against a git revision's, on the ``mlp`` row of
``sim_vs_float.py`` (64-400-400-400-10, T = 100, batch 256): one-thread CPU time of the whole
chain run, the two sides alternated in one process (:func:`timing.alternate`).

Made for changes to the chain's kernels on a machine loaded by others, where wall times of
separate runs cannot be compared: ``--ref``'s ``sim/chain.py``, ``sim/gather.py`` and
``sim/fused.py`` are loaded as a package of their own (in a temporary directory, removed at
the end; the rest of sim/ is this tree's) and run on the same plan's layers, at one thread
(numba, torch, BLAS), after checking that both give the same integers (readout input,
spike counts per layer and step, saturation, active neurons, synaptic events).

    python bench/chain_ab.py --ref a64f6f5 --rounds 21 --json bench/chain_ab.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import lmh_deploy  # noqa: F401  - Lava import fix
from lmh_deploy.sim.simulator import plan_for
from sim_vs_float import prepared
from timing import alternate, environment, save, set_threads, sim_modules_at

#: the modules taken from ``--ref`` (they import each other; the rest of sim/ is this tree's)
MODULES = ("chain", "gather", "fused")
PACKAGE = "chain_ab_ref"


def reference_chain_module(ref: str, where: Path):
    """``ref``'s sim/chain.py (with its gather.py and fused.py) imported from ``where``."""
    return sim_modules_at(ref, where, PACKAGE, MODULES, "chain")


def same_integers(a, b) -> bool:
    fields = ("trace", "counts", "saturation", "active", "synops")
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="git revision of the other side")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    set_threads(1)
    env = environment(1)
    _, q, _, x_int, _ = prepared("mlp", argparse.Namespace(seed=args.seed, rate=0.15, calibration_batch=4))
    plan = plan_for(q, None)
    tree = plan.chain
    flat = np.asarray(x_int, np.int64).reshape(len(x_int), -1)
    steps = 100
    with tempfile.TemporaryDirectory(prefix="chain_ab_") as where:
        old = reference_chain_module(args.ref, Path(where))
        ref = old.Chain(tree.layers, tree.out_dense, tree.out_path, plan.params)
        sides = {
            "ref": lambda: ref.run(flat, steps, None, threads=1),
            "tree": lambda: tree.run(flat, steps, None, threads=1),
        }
        same = same_integers(sides["ref"](), sides["tree"]())
        if not same:
            raise SystemExit(f"chain_ab: {args.ref}'s chain and this tree's give different integers")
        timed = alternate(sides, rounds=args.rounds, warmup=2, ratios={"ref / tree": ("ref", "tree")})
    cpu = timed["cpu_seconds"]
    ratio = timed["cpu_ratios"]["ref / tree"]
    print(
        f"mlp chain, batch 256, one thread, CPU ms: {args.ref} {1e3 * cpu['ref']['median']:.2f}, "
        f"this tree {1e3 * cpu['tree']['median']:.2f}; {args.ref} / tree {ratio['median']:.3f}x "
        f"[{ratio['min']:.3f}-{ratio['max']:.3f}] over {args.rounds} rounds",
        flush=True,
    )
    result = {"row": "mlp", "ref": args.ref, "same_integers": same, "timing": timed}
    save(args.json, result, env)


if __name__ == "__main__":
    main()
