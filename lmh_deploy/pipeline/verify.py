"""``verify``: the same samples through the float model, sim/ and Lava fixed_pt, compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmh_deploy.bounds import check_float, check_samples
from lmh_deploy.errors import InputError
from lmh_deploy.pipeline.compile import Artifact
from lmh_deploy.pipeline.inputs import (
    check_inputs,
    first_samples,
    frames_for,
    num_samples,
    quantize,
    sample_axis,
)
from lmh_deploy.backends.record import RunRecord, spike_agreement_by_layer


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
    readout_mismatches = int(np.sum(sim.readout_trace != lava.readout_trace))
    return {
        "spikes_compared": compared,
        "mismatched_spikes": mismatched,
        "state_mismatches": state_mismatches,
        "readout_mismatches": readout_mismatches,
        "logits_compared": int(sim.logits.size),
        "logit_mismatches": int((np.asarray(sim.logits) != np.asarray(lava.logits)).sum()),
        "prediction_mismatches": int((sim.predictions != lava.predictions).sum()),
        "saturation_sim": int(sum(sim.saturation.values())),
        "saturation_lava": int(sum(lava.saturation.values())),
    }


def _run_source(art: Artifact, x: np.ndarray, t: int, source: Any, batch: int) -> tuple[RunRecord, str]:
    """The float side: the user's own model in its own framework, when the artifact has one
    (in mini-batches of ``batch`` samples)."""
    from lmh_deploy.backends.sharding import run_sharded
    from lmh_deploy.pipeline.compile_torch import load_source_module
    from lmh_deploy.sim import run_in_batches

    axis = sample_axis(x, art.input_shape)  # shards and batches cut samples, never frames

    def batched(fn):
        return run_sharded(lambda xs: run_in_batches(fn, xs, batch, axis=axis), x, axis=axis)

    meta = art.float_graph.meta
    module = source if source is not None else load_source_module(art)
    if module is not None:
        from lmh_deploy.backends.float.torch_source import run_source

        from lmh_deploy.pipeline.user_code import model_files, users_code

        src = meta.get("source") or {}
        action = f"running your model {src['file']}" if src.get("file") else "running your model"
        with users_code(action, model_files(module)):
            return batched(
                lambda xs: run_source(
                    module,
                    xs,
                    t,
                    source_neurons=meta["source_neurons"],
                    output_index=meta.get("source_output_index"),
                    time_loop=meta.get("source_time_loop"),
                )
            ), "source module (PyTorch)"
    if meta.get("source", {}).get("format") == "nir" and (art.directory / "source.nir").is_file():
        from lmh_deploy.frontends.nir import read_nir
        from lmh_deploy.backends.float.nir_graph import run_nir_reference

        g = read_nir(art.directory / "source.nir")
        return batched(
            lambda xs: run_nir_reference(g, xs, t, float(meta["dt"]), source_neurons=meta["source_neurons"])
        ), "source NIR graph (reference executor)"
    model = art.load_model()
    if model is not None:
        from lmh_deploy.backends.float.torch_model import run_float

        return (
            batched(lambda xs: run_float(model, xs, t, time_varying=bool(axis))),
            "source checkpoint (PyTorch)",
        )
    from lmh_deploy.backends.float.ir import simulate_float

    return (
        batched(lambda xs: simulate_float(art.float_graph, xs, t)),
        "float IR (the source model is not in the artifact)",
    )


def lava_sim_disagree(result: dict[str, Any]) -> bool:
    """True when :func:`verify_artifact` found any difference between Lava and sim/."""
    lv = result["lava_vs_sim"]
    return any(
        lv[k]
        for k in (
            "mismatched_spikes",
            "state_mismatches",
            "readout_mismatches",
            "logit_mismatches",
            "prediction_mismatches",
        )
    )


def accuracy_gate(accuracy_source: float, accuracy_fixed: float, max_drop_points: float) -> dict[str, Any]:
    """Whether fixed-point accuracy is at most ``max_drop_points`` percentage points below the
    source model's (accuracies are fractions)."""
    drop = 100.0 * (accuracy_source - accuracy_fixed)
    return {
        "max_drop_points": float(max_drop_points),
        "drop_points": drop,
        "passed": bool(drop <= max_drop_points),
    }


def verify_artifact(
    art: Artifact,
    samples: int,
    *,
    split: str = "test",
    source: Any = None,
    batch_size: int | None = None,
    max_accuracy_drop: float | None = None,
) -> dict[str, Any]:
    """Run ``samples`` samples on all three backends and compare; see the CLI for the schema.

    The float side is the source model run in its own framework (``source``: the module
    itself, for artifacts compiled from a module object), else the float IR. Every backend
    runs in mini-batches of ``batch_size`` samples (default: sized from the free memory),
    so memory does not grow with ``samples`` beyond the records. Lava and sim/ are compared
    in spikes, final states, readout values, logits and predictions; ``max_accuracy_drop``
    (percentage points) adds ``accuracy_gate``."""
    from lmh_deploy.pipeline.run import run_backend
    from lmh_deploy.sim import default_batch_size

    x, y = art.dataset_split(split)  # time-major (T, N, ...) for event frames
    shape, t, q = art.input_shape, art.timesteps, art.quant_graph
    available = num_samples(x, shape)
    if samples > available:
        raise InputError(f"--samples {samples} exceeds the {available} samples of the {split} split")
    x, y = frames_for(first_samples(x, samples, shape), t, shape), y[:samples]
    check_inputs(x, shape, t, spikes=art.spike_input, what=f"{split} split")
    x_int = quantize(q, x)
    batch = batch_size or default_batch_size(q, t)
    rec_float, reference = _run_source(art, x, t, source, batch)
    rec_sim = run_backend(q, x_int, t, "sim", batch_size=batch)
    rec_lava = run_backend(q, x_int, t, "lava", batch_size=batch)
    per_layer, weighted = spike_agreement_by_layer(rec_float.spikes, rec_sim.spikes)
    result: dict[str, Any] = {
        "samples": int(samples),
        "timesteps": t,
        "input": "time-varying frames" if sample_axis(x, shape) else "static",
        "input_encoding": "spikes" if art.spike_input else "graded",
        "lava_vs_sim": compare_lava_sim(rec_sim, rec_lava),
        "float_vs_fixed": {
            "float_reference": reference,
            "accuracy_float": float(np.mean(rec_float.predictions == y)),
            "accuracy_fixed": float(np.mean(rec_sim.predictions == y)),
            "accuracy_lava": float(np.mean(rec_lava.predictions == y)),
            "prediction_agreement": float(np.mean(rec_float.predictions == rec_sim.predictions)),
            "spike_agreement": weighted,
            "spike_agreement_per_layer": per_layer,
            "min_layer_spike_agreement": min(per_layer.values(), default=1.0),
        },
    }
    if max_accuracy_drop is not None:
        ff = result["float_vs_fixed"]
        result["accuracy_gate"] = accuracy_gate(ff["accuracy_float"], ff["accuracy_fixed"], max_accuracy_drop)
    return result


def verify_path(
    artifact: str | Path,
    samples: int = 100,
    *,
    batch_size: int | None = None,
    max_accuracy_drop: float | None = None,
) -> dict[str, Any] | None:
    """Load and verify an artifact directory (:func:`verify_artifact`).

    Under torchrun each rank runs a contiguous shard of the samples; rank 0 returns the
    result, the other ranks ``None``.
    """
    from lmh_deploy.parallel import distributed_context
    from lmh_deploy.pipeline.compile import load_artifact

    samples = check_samples(samples)
    if batch_size is not None:
        batch_size = check_samples(batch_size, "--batch-size")
    if max_accuracy_drop is not None:
        max_accuracy_drop = check_float("--max-accuracy-drop", max_accuracy_drop, lo=-100.0, hi=100.0)
    with distributed_context("cpu") as dctx:
        result = verify_artifact(
            load_artifact(artifact), samples, batch_size=batch_size, max_accuracy_drop=max_accuracy_drop
        )
        return result if dctx.is_main else None


def verify_failures(result: dict[str, Any]) -> list[str]:
    """Why a verify result fails (empty when it passes): any Lava/sim difference, and the
    accuracy gate (``--max-accuracy-drop``) when one was set."""
    failures = []
    if lava_sim_disagree(result):
        failures.append("Lava fixed_pt and sim/ disagree (see above)")
    gate = result.get("accuracy_gate")
    if gate is not None and not gate["passed"]:
        failures.append(
            f"fixed-point accuracy is {gate['drop_points']:.2f} points below the "
            f"source model's (--max-accuracy-drop {gate['max_drop_points']:g})"
        )
    return failures
