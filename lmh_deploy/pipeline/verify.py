"""``verify``: the float source vs sim/ on every sample, Lava fixed_pt vs sim/ on the first
``lava_samples`` of them, compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmh_deploy.options import BATCH_SIZE, LAVA_CONV, LAVA_SAMPLES, MAX_ACCURACY_DROP, SAMPLES, WEIGHT_BITS
from lmh_deploy.errors import InputError
from lmh_deploy.pipeline.artifact import check_artifact_and_inputs
from lmh_deploy.pipeline.compile import Artifact
from lmh_deploy.pipeline.weight_choice import split_unavailable
from lmh_deploy.pipeline.inputs import (
    check_inputs,
    first_samples,
    frames_for,
    num_samples,
    quantize,
    read_inputs,
    sample_axis,
    select_samples,
)
from lmh_deploy.backends.record import RunRecord, spike_agreement_by_layer
from lmh_deploy.pipeline.results import VerifyResult


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
    is_nir = meta.get("source", {}).get("format") == "nir"
    module = source if source is not None or is_nir or art.directory is None else load_source_module(art)
    if module is not None and not is_nir and "source_neurons" not in meta:  # our own SpikingNet
        from lmh_deploy.backends.float.torch_model import run_float

        return (
            batched(lambda xs: run_float(module, xs, t, time_varying=bool(axis))),
            "source module (PyTorch)",
        )
    if module is not None and not is_nir:
        from lmh_deploy.backends.float.torch_source import run_traced_source

        from lmh_deploy.pipeline.user_code import model_files, users_code

        src = meta.get("source") or {}
        action = f"running your model {src['file']}" if src.get("file") else "running your model"
        with users_code(action, model_files(module)):
            return batched(lambda xs: run_traced_source(module, xs, t, meta)), "source module (PyTorch)"
    nir_copy = None if art.directory is None else art.directory / "source.nir"
    if is_nir and (source is not None or (nir_copy is not None and nir_copy.is_file())):
        from lmh_deploy.frontends.nir import read_nir
        from lmh_deploy.backends.float.nir_graph import run_nir_reference

        g = read_nir(source if source is not None else nir_copy)
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

    if meta.get("source", {}).get("format") == "netx":
        # a netx file's network never sees graded values: it takes the input's messages (the
        # dataset's values rounded: 0 or 1 for [0, 1] images), so the float IR runs on those
        # (on the graded values 0.76 of 50 predictions of a trained slayer net agreed)
        q_input = art.quant_graph.node("input")

        def messages(xs: np.ndarray) -> np.ndarray:
            return (q_input.quantize(xs) / q_input.scale).astype(np.float32)

        return (
            batched(lambda xs: simulate_float(art.float_graph, messages(xs), t)),
            "float IR of the netx file, on the input messages the file's network receives",
        )
    return (
        batched(lambda xs: simulate_float(art.float_graph, xs, t)),
        "float IR (the source model is not in the artifact)",
    )


def lava_sim_disagree(result: dict[str, Any]) -> bool:
    """True when :func:`verify_artifact` found any difference between Lava and sim/ (on the
    samples Lava ran)."""
    lv = result["lava_vs_sim"]
    return any(
        lv.get(k, 0)
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


#: The default Lava share of ``verify``, in neuron-steps: every sample of a small net, 15
#: samples of the paper's ResNet-20 on CIFAR (188,416 neurons, T = 4), which
#: bench/lava_cifar.py puts at 4.4 s wall for a 1-sample run plus 0.26 s per further sample
#: (idle 2-core machine).
LAVA_BUDGET_NEURON_STEPS = 12_000_000


def default_lava_samples(qgraph: Any, timesteps: int, samples: int) -> int:
    """How many of ``samples`` the default ``verify`` runs on Lava: as many as fit
    :data:`LAVA_BUDGET_NEURON_STEPS`, at least 1."""
    neurons = sum(qgraph.node(n).output_size() for n in qgraph.order() if qgraph.node(n).kind == "q_lmh")
    return max(1, min(samples, LAVA_BUDGET_NEURON_STEPS // max(1, neurons * timesteps)))


def _accuracy(predictions: np.ndarray, y: np.ndarray | None) -> float | None:
    return None if y is None or not len(predictions) else float(np.mean(predictions == y[: len(predictions)]))


def verify_artifact(
    art: Artifact,
    samples: int | None = None,
    *,
    split: str = "test",
    inputs: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    inputs_name: str = "inputs",
    labels_name: str = "labels",
    lava_samples: int | None = None,
    source: Any = None,
    batch_size: int | None = None,
    max_accuracy_drop: float | None = None,
    lava_conv: str = LAVA_CONV.default,
) -> dict[str, Any]:
    """Float source vs sim/ on ``samples`` samples, Lava fixed_pt vs sim/ on the first
    ``lava_samples`` of them; see the CLI for the schema.

    The samples are ``inputs`` (checked by :func:`~lmh_deploy.pipeline.inputs.accept_inputs`;
    ``labels`` optional: without them the accuracies are None, agreement needs none) or the
    dataset's ``split`` (100 samples by default). ``lava_samples`` None: as many as fit
    :data:`LAVA_BUDGET_NEURON_STEPS`; 0 runs no Lava. The float side is the source model run
    in its own framework (``source``: the module itself, for artifacts compiled from a module
    object), else the float IR. Every backend runs in mini-batches of ``batch_size`` samples
    (default: sized from the free memory). Lava and sim/ are compared in spikes, final
    states, readout values, logits and predictions; ``max_accuracy_drop`` (percentage
    points, needs labels) adds ``accuracy_gate``. ``lava_conv``: which convolutions Lava runs
    on its Conv (:func:`~lmh_deploy.backends.lava.plan.plan_lowering`)."""
    from lmh_deploy.pipeline.run import check_lava_plan, run_backend
    from lmh_deploy.backends.lava.memory import lava_fits
    from lmh_deploy.backends.lava.plan import plan_lowering
    from lmh_deploy.sim import check_run_fits, default_batch_size
    from lmh_deploy.sim.batching import available_memory_bytes

    shape, t, q = art.input_shape, art.timesteps, art.quant_graph
    x, y = select_samples(art, inputs, labels, samples, split=split, x_name=inputs_name, y_name=labels_name)
    what = f"{split} split" if inputs is None else inputs_name
    samples = num_samples(x, shape)
    if max_accuracy_drop is not None and y is None:
        raise InputError("--max-accuracy-drop compares accuracies: give --labels with --inputs")
    x = frames_for(x, t, shape)
    check_inputs(x, shape, t, spikes=art.spike_input, what=what)
    lava_skipped = None  # why the default Lava share is 0
    if lava_samples is None:
        lava_skipped = lava_fits(q, plan_lowering(q, lava_conv).conv, available_memory_bytes())
        lava_samples = 0 if lava_skipped else default_lava_samples(q, t, samples)
    elif lava_samples > samples:
        raise InputError(f"--lava-samples {lava_samples} exceeds the {samples} samples verified")
    elif lava_samples:
        check_lava_plan(q, lava_conv, f"--lava-samples {lava_samples}")
    # the source's and sim/'s whole records (spike rasters) are kept to compare them
    check_run_fits(q, num_samples(x, shape), t, records=2, stream_hint=False)
    x_int = quantize(q, x)
    batch = batch_size or default_batch_size(q, t)
    rec_float, reference = _run_source(art, x, t, source, batch)
    # final states are compared with Lava's on the Lava samples' own sim/ run below
    rec_sim = run_backend(q, x_int, t, "sim", batch_size=batch, record_final_state=False)
    lava_vs_sim: dict[str, Any] = {"samples": lava_samples}
    accuracy_lava = None
    if lava_samples:
        x_lava = first_samples(x_int, lava_samples, shape)
        rec_lava = run_backend(q, x_lava, t, "lava", batch_size=batch, lava_conv=lava_conv)
        # the same samples on sim/ again: a record is compared whole (states, readout trace)
        lava_vs_sim.update(compare_lava_sim(run_backend(q, x_lava, t, "sim", batch_size=batch), rec_lava))
        accuracy_lava = _accuracy(rec_lava.predictions, y)
    per_layer, weighted = spike_agreement_by_layer(rec_float.spikes, rec_sim.spikes)
    differ = rec_float.predictions != rec_sim.predictions
    result: dict[str, Any] = {
        "samples": int(samples),
        "lava_samples": int(lava_samples),
        "labels": y is not None,
        "ran": {
            "float_vs_fixed": f"{reference} and sim/ on all {samples} samples",
            "lava_vs_sim": (
                f"Lava fixed_pt and sim/ on the first {lava_samples} samples"
                if lava_samples
                else f"Lava not run: {lava_skipped}"
                if lava_skipped
                else "Lava not run (lava_samples 0)"
            ),
        },
        "timesteps": t,
        "input": "time-varying frames" if sample_axis(x, shape) else "static",
        "input_encoding": "spikes" if art.spike_input else "graded",
        "lava_vs_sim": lava_vs_sim,
        "float_vs_fixed": {
            "samples": int(samples),
            "float_reference": reference,
            "accuracy_float": _accuracy(rec_float.predictions, y),
            "accuracy_fixed": _accuracy(rec_sim.predictions, y),
            "accuracy_lava": accuracy_lava,
            "prediction_agreement": float(np.mean(~differ)),
            "disagreements": int(differ.sum()),
            # information only (agreement stays the argmax's): of those, the samples whose
            # source output ties for the top (argmax then takes the lowest class)
            "disagreements_tied_in_source": int((differ & tied_at_top(rec_float.logits)).sum()),
            "spike_agreement": weighted,
            "spike_agreement_per_layer": per_layer,
            "min_layer_spike_agreement": min(per_layer.values(), default=1.0),
        },
    }
    advice = weight_bits_advice(art, result["float_vs_fixed"]["prediction_agreement"])
    if advice:
        result["advice"] = advice
    if max_accuracy_drop is not None:
        ff = result["float_vs_fixed"]
        result["accuracy_gate"] = accuracy_gate(ff["accuracy_float"], ff["accuracy_fixed"], max_accuracy_drop)
    return result


LOW_AGREEMENT = 0.95  # below this, verify points at the finer weights


def tied_at_top(logits: np.ndarray) -> np.ndarray:
    """Per sample: whether two or more classes share the largest output (e.g. equal spike
    counts of a spiking output layer); argmax then picks the lowest of them."""
    logits = np.asarray(logits)
    return np.count_nonzero(logits == logits.max(axis=1, keepdims=True), axis=1) > 1


def weight_bits_advice(art: Artifact, prediction_agreement: float) -> str | None:
    """The note ``verify`` prints when an 8-bit artifact's predictions agree with the source
    on fewer than :data:`LOW_AGREEMENT` of the samples and ``--weight-bits 16`` is open to it
    (not an imported netx file, not ``loihi-lif``) and ``--weight-bits auto`` did not already
    try it (its ``weight_bits_choice`` says why it kept 8 bits): the 8-bit mantissa compounded
    over depth is the measured cause in deep nets (docs/fixed-point.md §9)."""
    if prediction_agreement >= LOW_AGREEMENT or int(art.manifest.get(WEIGHT_BITS.name, 8)) != 8:
        return None
    if split_unavailable(art.float_graph, art.quant_graph.meta["profile"]) is not None:
        return None
    if "weight_bits_choice" in art.report:  # --weight-bits auto tried the split and kept 8 bits
        return None
    return (
        f"predictions agree on {prediction_agreement:.1%}: 8-bit weight rounding compounds over "
        "depth; compile with --weight-bits 16 (two 8-bit synapse paths per weight, twice the "
        "synapses) for about 15-bit weights"
    )


def verify_path(
    artifact: str | Path,
    samples: int | None = None,
    *,
    inputs: str | Path | None = None,
    labels: str | Path | None = None,
    lava_samples: int | None = None,
    batch_size: int | None = None,
    max_accuracy_drop: float | None = None,
    lava_conv: str = LAVA_CONV.default,
) -> VerifyResult | None:
    """Load and verify an artifact directory (:func:`verify_artifact`) on the test split or
    on ``inputs`` (a .npy, with optional ``labels``); a :class:`VerifyResult`.

    Under torchrun each rank runs a contiguous shard of the samples; rank 0 returns the
    result, the other ranks ``None``.
    """
    from lmh_deploy.parallel import distributed_context
    from lmh_deploy.pipeline.compile import load_artifact

    samples = SAMPLES.check(samples)
    lava_samples = LAVA_SAMPLES.check(lava_samples)
    batch_size = BATCH_SIZE.check(batch_size)
    max_accuracy_drop = MAX_ACCURACY_DROP.check(max_accuracy_drop)
    lava_conv = LAVA_CONV.check(lava_conv)
    check_artifact_and_inputs(artifact, inputs, labels)  # before anything heavy loads
    art = load_artifact(artifact)
    x, y = read_inputs(inputs, labels)
    with distributed_context("cpu") as dctx:
        result = verify_artifact(
            art,
            samples,
            inputs=x,
            labels=y,
            inputs_name=str(inputs),
            labels_name=str(labels),
            lava_samples=lava_samples,
            batch_size=batch_size,
            max_accuracy_drop=max_accuracy_drop,
            lava_conv=lava_conv,
        )
        return VerifyResult.from_dict(result) if dctx.is_main else None


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
