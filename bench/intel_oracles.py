"""Agreement of a compiled ``loihi-lif`` artifact with Intel's own code, on N test samples.

Runs the artifact's integer graph on sim/, on Lava's own ``LIF`` + ``Dense`` processes
(``lmh_deploy.backends.lava.lava_lif``) and, exported with exactly its integers, on lava-dl's
``netx.hdf5.Network(..., input_message_bits=8, reset_interval=T, reset_offset=1)`` run freely
in Lava fixed_pt (``run_netx_artifact``: biases from the file, no host writes); prints how many spikes,
``u``/``v`` values, readout values, logits and predictions were compared and how many differ.
A measurement, not a speed benchmark (the closing note of issue 13 quotes it):

    lmh-deploy train --neuron lif --norm bn --epochs 3 --out lif.pt
    lmh-deploy compile lif.pt --profile loihi-lif -o lif_build
    python bench/intel_oracles.py lif_build --samples 30
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from lmh_deploy.backends.lava.lava_lif import run_lava_lif
from lmh_deploy.interop.netx_artifact import artifact_to_netx, run_netx_artifact
from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate


def measure(build: Path, samples: int) -> dict:
    """The comparison counts (see the module docstring)."""
    art = load_artifact(build)
    q, steps = art.quant_graph, art.timesteps
    x, y = art.dataset_split("test")
    x, y = x[:samples], y[:samples]
    x_int = fx.quantize_input(x, q.node("input").scale)
    ref = simulate(q, x_int, steps, record_states=True)
    spikes_total = sum(s.size for s in ref.spikes.values())
    result = {
        "samples": int(len(x)),
        "timesteps": steps,
        "spikes_compared": spikes_total,
        "spike_events": int(sum(s.sum() for s in ref.spikes.values())),
        "accuracy_sim": float(np.mean(ref.predictions == y)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.h5"
        artifact_to_netx(q, path)
        spikes, trace, logits = run_netx_artifact(path, x_int, steps)
    result["netx"] = {
        "spike_mismatches": int(sum((spikes[k] != s).sum() for k, s in ref.spikes.items())),
        "readout_values": int(trace.size),
        "readout_mismatches": int((trace != ref.readout_trace).sum()),
        "logit_mismatches": int((logits != ref.logits).sum()),
        "prediction_mismatches": int((logits.argmax(1) != ref.predictions).sum()),
    }
    lif = run_lava_lif(q, x_int, steps)
    result["lava_lif_dense"] = {
        "spike_mismatches": int(sum((lif.spikes[k] != s).sum() for k, s in ref.spikes.items())),
        "u_v_values": 2 * spikes_total,
        "u_v_mismatches": int(
            sum(
                (lif.u[k] != ref.state_trace[k][0]).sum() + (lif.v[k] != ref.state_trace[k][1]).sum()
                for k in ref.spikes
            )
        ),
        "logit_mismatches": int((lif.logits != ref.logits).sum()),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="an artifact compiled with --profile loihi-lif")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.build, args.samples)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
