"""sim/'s two exact ways of a convolution of spikes, layer by layer, on the conv nets' real
inputs: the event gather (``events``: :func:`lmh_deploy.sim.gather.conv_gather`) against
oneDNN's int8 convolution (``int8``).

Builds a row of :mod:`sim_vs_float` as it does (``prepared``: vgg13 / resnet19, calibrated
to 15 % firing, T = 4, batch 16), runs it once through sim/ and keeps every convolution's
input (the spikes of the layer before, 64 rows), then times the two ways of each path on
its own input at one thread (:func:`timing.alternate`: alternated, medians over
``--rounds``), checks that they give the same integers, and prints ms per call and the
ratio int8 / events (above 1: the gather is faster). The simulator itself measures both
ways per layer and takes the cheaper (``SynapsePath.costs``); this shows where each wins.

    python bench/conv_ways.py --rows vgg13 resnet19 --json bench/conv_ways.json
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import numpy as np
from lmh_deploy.sim import simulate, simulator
from lmh_deploy.sim.synapse import SynapsePath
from sim_vs_float import ROWS, prepared
from timing import alternate, environment, save, set_threads


def captured_inputs(name: str, args) -> list[tuple[str, SynapsePath, np.ndarray]]:
    """Each convolution path of row ``name`` that offers both ways, with a copy of its input
    in one streaming run."""
    _, q, _, x_int, _ = prepared(name, args)
    seen: dict[int, np.ndarray] = {}
    original = SynapsePath.sums

    def keep(self, pre, active=None):
        seen.setdefault(id(self), np.array(pre))
        return original(self, pre, active)

    SynapsePath.sums = keep  # type: ignore[method-assign]
    try:
        simulate(q, x_int, ROWS[name]["steps"], record_spikes=False)
    finally:
        SynapsePath.sums = original  # type: ignore[method-assign]
    paths = simulator.plan_for(q, None).paths
    return [
        (layer, path, seen[id(path)])
        for layer, path in paths.items()
        if path.conv is not None and {"events", "int8"} <= set(path.ways) and id(path) in seen
    ]


def bench_row(name: str, args) -> dict[str, Any]:
    layers = []
    for layer, path, pre in captured_inputs(name, args):
        events, int8 = path._events(pre), path._int8(pre)
        if not np.array_equal(np.asarray(events), np.asarray(int8)):
            raise AssertionError(f"{name} {layer}: the event gather and the int8 convolution differ")
        timed = alternate(
            {"events": partial(path._events, pre), "int8": partial(path._int8, pre)},
            rounds=args.rounds,
            warmup=1,
            ratios={"int8_over_events": ("int8", "events")},
        )
        c_out, c_in, kh, kw = path.conv.kernel.shape
        row = {
            "layer": layer,
            "kernel": [c_out, c_in, kh, kw],
            "input_hw": list(path.conv.input_shape[1:]),
            "out_hw": list(path.conv.out_hw),
            "pooled_input": path.conv.factored,
            "rows": int(pre.shape[0]),
            "input_rate": float(np.count_nonzero(pre) / pre.size),
            "ms": {way: timed["seconds"][way]["median"] * 1e3 for way in ("events", "int8")},
            "int8_over_events": timed["ratios"]["int8_over_events"],
        }
        layers.append(row)
        print(
            f"  {layer:7s} {c_in:4d}->{c_out:<4d} {row['input_hw'][0]:>2d}x{row['input_hw'][1]:<2d}"
            f"{' pooled' if row['pooled_input'] else '       '} rate {row['input_rate']:.3f}: "
            f"events {row['ms']['events']:6.2f} ms, int8 {row['ms']['int8']:6.2f} ms, "
            f"int8/events {row['int8_over_events']['median']:.2f}"
        )
    return {"row": name, "layers": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", default=["vgg13", "resnet19"], choices=["vgg13", "resnet19"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rate", type=float, default=0.15)
    parser.add_argument("--calibration-batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    env = environment(1)
    set_threads(1)
    rows = []
    for name in args.rows:
        print(f"{name}: one thread, per convolution call")
        rows.append(bench_row(name, args))
    save(args.json, {"rows": rows}, env)


if __name__ == "__main__":
    main()
