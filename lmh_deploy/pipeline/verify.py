"""``verify``: the same samples through the float model, sim/ and Lava fixed_pt, compared."""
from __future__ import annotations

from typing import Any

import numpy as np

from lmh_deploy.semantics import integer as fx
from lmh_deploy.pipeline.compile import Artifact
from lmh_deploy.reports.record import RunRecord, spike_agreement_by_layer


def compare_lava_sim(sim: RunRecord, lava: RunRecord) -> dict[str, int]:
    """Count every differing spike, readout value and final state between two integer runs."""
    compared = mismatched = 0
    for name, s in sim.spikes.items():
        compared += s.size
        mismatched += int((s != lava.spikes[name]).sum())
    state_mismatches = 0
    for name, (v_d, v_s) in sim.final_state.items():
        lv_d, lv_s = lava.final_state[name]
        state_mismatches += int((v_d[-1] != lv_d[-1]).sum() + (v_s[-1] != lv_s[-1]).sum())
    readout_mismatches = int((sim.readout_trace != lava.readout_trace).sum())
    return {"spikes_compared": compared, "mismatched_spikes": mismatched,
            "state_mismatches": state_mismatches, "readout_mismatches": readout_mismatches,
            "saturation_sim": int(sum(sim.saturation.values())),
            "saturation_lava": int(sum(lava.saturation.values()))}


def _run_source(art: Artifact, x: np.ndarray, t: int, source: Any) -> tuple[RunRecord, str]:
    """The float side: the user's own model in its own framework, when the artifact has one."""
    from lmh_deploy.backends.sharding import run_sharded
    from lmh_deploy.pipeline.compile_torch import load_source_module

    meta = art.float_graph.meta
    module = source if source is not None else load_source_module(art)
    if module is not None:
        from lmh_deploy.backends.torch_source import run_source

        return run_sharded(lambda xs: run_source(
            module, xs, t, source_neurons=meta["source_neurons"],
            output_index=meta.get("source_output_index")), x), "source module (PyTorch)"
    model = art.load_model()
    if model is not None:
        from lmh_deploy.backends.torch_ref import run_float

        return run_sharded(lambda xs: run_float(model, xs, t), x), "source checkpoint (PyTorch)"
    from lmh_deploy.backends.float_ir import simulate_float

    return (run_sharded(lambda xs: simulate_float(art.float_graph, xs, t), x),
            "float IR (the source model is not in the artifact)")


def verify_artifact(art: Artifact, samples: int, *, split: str = "test",
                    source: Any = None) -> dict[str, Any]:
    """Run ``samples`` samples on all three backends and compare; see the CLI for the schema.

    The float side is the source model run in its own framework (``source``: the module
    itself, for artifacts compiled from a module object), else the float IR."""
    from lmh_deploy.backends.lava.run import run_lava
    from lmh_deploy.backends.sharding import run_sharded  # fn(x) itself without a process group
    from lmh_deploy.sim import simulate

    x, y = art.dataset_split(split)
    if samples > len(x):
        raise ValueError(f"--samples {samples} exceeds the {len(x)} samples of the {split} split")
    x, y = x[:samples], y[:samples]
    t = art.timesteps
    q = art.quant_graph
    x_int = fx.quantize_input(x, q.node("input").scale)
    rec_float, reference = _run_source(art, x, t, source)
    rec_sim = run_sharded(lambda xs: simulate(q, xs, t), x_int)
    rec_lava = run_sharded(lambda xs: run_lava(q, xs, t, "fixed_pt"), x_int)
    per_layer, weighted = spike_agreement_by_layer(rec_float.spikes, rec_sim.spikes)
    return {
        "samples": int(samples), "timesteps": t,
        "lava_vs_sim": compare_lava_sim(rec_sim, rec_lava),
        "float_vs_fixed": {
            "float_reference": reference,
            "accuracy_float": float(np.mean(rec_float.predictions == y)),
            "accuracy_fixed": float(np.mean(rec_sim.predictions == y)),
            "accuracy_lava": float(np.mean(rec_lava.predictions == y)),
            "prediction_agreement": float(np.mean(rec_float.predictions == rec_sim.predictions)),
            "spike_agreement": weighted, "spike_agreement_per_layer": per_layer,
            "min_layer_spike_agreement": min(per_layer.values(), default=1.0)},
    }
