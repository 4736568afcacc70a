"""The run stage: execute a compiled artifact on a backend and summarise what it measured.

Reports and plots only draw what this stage measured; they never run a network.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from lmh_deploy.options import BATCH_SIZE, LAVA_CONV, SAMPLES, check_sweep
from lmh_deploy.choices import Backend, check_sim_device, choice
from lmh_deploy.errors import CommandFailed, InputError
from lmh_deploy.files import atomic_write, check_outputs
from lmh_deploy.pipeline.artifact import check_artifact_and_inputs
from lmh_deploy.pipeline.inputs import (
    check_inputs,
    frames_for,
    is_sequence,
    num_samples,
    parse_sweep,
    quantize,
    read_inputs,
    select_samples,
)
from lmh_deploy.backends.record import RunRecord
from lmh_deploy.pipeline.results import RunResult
from lmh_deploy.reports.summary import summarize
from lmh_deploy.sim import check_run_fits, default_batch_size, run_in_batches, simulate_batched


def run_backend(
    qgraph,
    x_int: np.ndarray,
    timesteps: int,
    backend: str = "sim",
    *,
    batch_size: int | None = None,
    record_spikes: bool = True,
    record_final_state: bool = True,
    device: str | None = None,
    lava_conv: str = LAVA_CONV.default,
) -> RunRecord:
    """All samples of ``x_int`` on ``backend`` ("sim" or "lava"), in mini-batches.
    ``record_final_state=False``: sim/ keeps no final states (only a Lava comparison needs
    them; at 1.4 M neurons they are 1.4 GB per 64 samples). ``lava_conv``: which
    convolutions Lava runs on its Conv (:func:`~lmh_deploy.backends.lava.plan.plan_lowering`).

    ``x_int``: static ``(N, *shape)`` or time-major frames ``(T, N, *shape)``.

    Under torchrun each rank runs its contiguous shard of the samples and the records are
    merged (every rank gets the whole record). ``batch_size`` defaults to what fits a share
    of the free memory (:func:`lmh_deploy.sim.default_batch_size`); memory then no longer
    grows with the number of samples beyond the record itself.
    """
    from lmh_deploy.backends.sharding import run_sharded
    from lmh_deploy.pipeline.inputs import sample_axis

    if batch_size is None:
        batch_size = default_batch_size(qgraph, timesteps, record_spikes=record_spikes)
    # time-varying inputs (T, N, ...): shards and mini-batches cut samples, never frames
    axis = sample_axis(x_int, tuple(qgraph.node(qgraph.order()[0]).shape))
    if backend == "sim":
        return run_sharded(
            lambda xs: simulate_batched(
                qgraph,
                xs,
                timesteps,
                batch_size=batch_size,
                record_spikes=record_spikes,
                record_final_state=record_final_state,
                device=device,
            ),
            x_int,
            axis=axis,
        )
    if backend == "lava":
        plan = check_lava_plan(qgraph, lava_conv)  # before Lava is imported
        from lmh_deploy.backends.lava.run import run_lava

        return run_sharded(
            lambda xs: run_in_batches(
                lambda b: run_lava(qgraph, b, timesteps, "fixed_pt", plan=plan), xs, batch_size, axis=axis
            ),
            x_int,
            axis=axis,
        )
    raise InputError(f"unknown backend {backend!r}; supported: sim, lava")


def check_lava_plan(qgraph: Any, lava_conv: str, what: str = "--backend lava") -> Any:
    """The :class:`~lmh_deploy.backends.lava.plan.LavaPlan` of ``qgraph`` under ``lava_conv``,
    after refusing in one line a run that cannot fit the memory available now."""
    from lmh_deploy.backends.lava.memory import check_lava_fits
    from lmh_deploy.backends.lava.plan import plan_lowering
    from lmh_deploy.sim.batching import available_memory_bytes

    plan = plan_lowering(qgraph, lava_conv)
    check_lava_fits(qgraph, plan.conv, available_memory_bytes(), what, forced_off=lava_conv == "never")
    return plan


def t_sweep(
    qgraph,
    x_int: np.ndarray,
    labels: np.ndarray | None,
    t_values: Iterable[int],
    *,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """Run the integer simulator once per ``T`` in ``t_values``; one summary row per ``T``.

    Rows: ``timesteps``, ``accuracy`` (None without labels), ``energy_joules`` (Loihi estimate
    per sample), ``synops_per_sample``, ``spikes_per_sample``, ``ann_energy_joules``.
    Steps beyond the trained ``T`` reuse the last factor row, as the simulator does.
    """
    values = [int(t) for t in t_values]
    if not values:
        raise InputError("t_sweep needs at least one value of T")
    bad = [t for t in values if t < 1]
    if bad:
        raise InputError(f"inference steps must be >= 1, got {bad}")
    input_shape = tuple(qgraph.node(qgraph.order()[0]).shape)
    if x_int.ndim != len(input_shape) + 1 and max(values) > x_int.shape[0]:
        raise InputError(f"time-major input has {x_int.shape[0]} frames; cannot run T = {max(values)} steps")
    rows = []
    for t in values:
        rec = simulate_batched(qgraph, x_int, t, batch_size=batch_size, record_spikes=False)
        s = summarize(qgraph, rec, labels)
        rows.append(
            {
                "timesteps": t,
                "accuracy": s.get("accuracy"),
                "energy_joules": s["energy_joules"],
                "synops_per_sample": s["totals"]["synops"] / s["samples"],
                "spikes_per_sample": s["totals"]["spikes"] / s["samples"],
                "ann_energy_joules": s["ann_energy_joules"],
            }
        )
    return rows


def save_spike_rasters(
    path: str | Path, x_int: np.ndarray, rec: RunRecord, input_shape: tuple[int, ...]
) -> Path:
    """Write ``input`` (the integer input: (N, features) static or (T, N, features)) and one
    (T, N, neurons) bool raster per spiking layer, keyed by IR layer name, to ``path`` (.npz).

    Anyone can then check a run outside the project. Refuses a streamed run (no rasters) and
    layer names that would collide with ``input``."""
    if not rec.spikes:
        raise InputError("--save-spikes needs the spike rasters; drop --stream")
    if "input" in rec.spikes:
        raise InputError("a spiking layer is named 'input'; it would overwrite the input array")
    x = np.asarray(x_int)
    static = x.ndim == len(input_shape) + 1  # else time-major frames (T, N, *shape)
    flat = x.reshape(x.shape[0], -1) if static else x.reshape(x.shape[0], x.shape[1], -1)
    arrays: dict[str, Any] = {
        "input": flat.astype(np.int64)
    }  # Any: numpy 2 stubs type savez(**kw) values as bool
    arrays.update({name: np.asarray(s, bool) for name, s in rec.spikes.items()})
    path = Path(path)
    with atomic_write(path) as f:
        np.savez_compressed(f, **arrays)
    return path


def run_artifact(
    artifact: str | Path,
    *,
    backend: Backend | str = Backend.SIM,
    samples: int | None = SAMPLES.default,
    inputs: str | Path | None = None,
    labels: str | Path | None = None,
    plots_dir: str | Path | None = None,
    html: str | Path | None = None,
    sweep: str | None = None,
    stream: bool = False,
    device: str | None = None,
    batch_size: int | None = None,
    save_spikes: str | Path | None = None,
    lava_conv: str = LAVA_CONV.default,
    status: Callable[[str], None] = lambda text: None,
) -> RunResult | None:
    """Run a compiled artifact on ``backend``; a :class:`RunResult` (its ``to_dict()``: the
    summary of :func:`summarize`).

    ``sweep`` (with ``plots_dir`` or ``html``) adds an accuracy/energy-vs-T curve, always
    run on sim/ (the bit-exact twin of the Lava model). Under torchrun each rank runs a
    contiguous shard of the samples; the records are merged (bit-exact) and rank 0 alone
    summarises, plots and returns the summary; the other ranks return ``None``.
    ``batch_size``: samples per mini-batch (default: sized from the free memory).
    ``save_spikes``: write the integer input and every spiking layer's raster to this .npz
    (:func:`save_spike_rasters`); the summary then names it under ``"spikes_file"``.
    ``lava_conv`` (lava): which convolutions run on Lava's Conv (``auto``, ``always``, ``never``).
    """
    from lmh_deploy.parallel import distributed_context
    from lmh_deploy.pipeline.compile import check_model_file, load_artifact

    backend = choice(Backend, backend, "--backend")
    samples = SAMPLES.check(samples)
    batch_size = BATCH_SIZE.check(batch_size)
    lava_conv = LAVA_CONV.check(lava_conv)
    if lava_conv != LAVA_CONV.default and backend != Backend.LAVA:
        raise InputError(
            f"--lava-conv {lava_conv}: only the lava backend runs convolutions on Lava; add --backend lava"
        )
    device = check_sim_device(device)
    if device is not None and backend != Backend.SIM:
        raise InputError(f"--device {device}: only the sim backend runs on a torch device")
    if stream and backend != Backend.SIM:
        raise InputError("--stream: only the sim backend streams (Lava records every step)")
    if stream and save_spikes is not None:
        raise InputError("--save-spikes needs the spike rasters; drop --stream")
    check_sweep(sweep, plots_dir, html)
    check_outputs(
        {"--plots": (plots_dir, "folder"), "--html": (html, "file"), "--save-spikes": (save_spikes, "file")},
        inputs=[artifact, inputs, labels],
    )
    check_artifact_and_inputs(artifact, inputs, labels)  # before anything heavy loads
    with distributed_context("cpu") as dctx:
        art = load_artifact(artifact)
        check_model_file(art)  # the deployed net is the one the user's model file still builds
        if backend == Backend.LOIHI2:
            refuse_loihi2()
        q = art.quant_graph
        shape = art.input_shape
        x, y = select_samples(
            art, *read_inputs(inputs, labels), samples, x_name=str(inputs), y_name=str(labels)
        )
        x = frames_for(x, art.timesteps, shape)
        check_inputs(
            x,
            shape,
            art.timesteps,
            spikes=art.spike_input,
            what=str(inputs) if inputs is not None else "test split",
        )
        check_run_fits(q, num_samples(x, shape), art.timesteps, record_spikes=not stream)
        x_int = quantize(q, x)
        frames = x.shape[0] if is_sequence(x, shape) else None
        # time-varying inputs: a sweep cannot run past the frames given
        t_values = (
            [
                t
                for t in parse_sweep(sweep, art.timesteps)
                if frames is None or t <= frames or sweep is not None
            ]
            if plots_dir or html
            else []
        )
        status(f"running {num_samples(x, shape)} samples on {backend}")
        result = execute(
            q,
            x_int,
            y,
            art.timesteps,
            backend.value,
            batch_size=batch_size,
            record_spikes=not stream,
            device=_rank_device(device),
            processes=dctx.world_size,
            lava_conv=lava_conv,
        )
        if not dctx.is_main:
            return None
        summary, rec = result.summary, result.record
        assert rec is not None
        if save_spikes is not None:
            summary["spikes_file"] = str(
                save_spike_rasters(save_spikes, x_int, rec, tuple(q.node("input").shape))
            )
        if plots_dir is not None or html is not None:
            status("T sweep (sim), float run and plots")
            _plots(summary, rec, art, x, x_int, y, t_values, plots_dir, html, batch_size)
        return result


def execute(
    qgraph: Any,
    x_int: np.ndarray,
    labels: np.ndarray | None,
    timesteps: int,
    backend: str,
    *,
    batch_size: int | None = None,
    record_spikes: bool = True,
    device: str | None = None,
    processes: int = 1,
    on_batch: Callable[[int], None] | None = None,
    lava_conv: str = LAVA_CONV.default,
) -> RunResult:
    """:func:`run_backend`, timed and summarised (:func:`summarize`) as a
    :class:`~lmh_deploy.pipeline.results.RunResult`. ``on_batch(samples)`` is called after
    every mini-batch (a progress bar); without it the backend batches on its own. sim/ keeps
    no final states (nothing in a run reads them; at 1.4 M neurons 1.4 GB per 64 samples)."""
    start = time.perf_counter()
    if on_batch is None:
        rec = run_backend(
            qgraph,
            x_int,
            timesteps,
            backend,
            batch_size=batch_size,
            record_spikes=record_spikes,
            record_final_state=False,
            device=device,
            lava_conv=lava_conv,
        )
    else:
        from lmh_deploy.pipeline.inputs import sample_axis

        axis = sample_axis(x_int, tuple(qgraph.node(qgraph.order()[0]).shape))
        batch = batch_size or default_batch_size(qgraph, timesteps, record_spikes=record_spikes)

        def one_batch(xs: np.ndarray) -> RunRecord:
            part = run_backend(
                qgraph,
                xs,
                timesteps,
                backend,
                batch_size=batch,
                record_spikes=record_spikes,
                record_final_state=False,
                device=device,
                lava_conv=lava_conv,
            )
            on_batch(xs.shape[axis])
            return part

        rec = run_in_batches(one_batch, x_int, batch, axis=axis)
    seconds = time.perf_counter() - start
    summary = summarize(qgraph, rec, labels) | {
        "backend": backend,
        "seconds": seconds,
        "timesteps": timesteps,
        "processes": processes,
        "predictions": rec.predictions.tolist(),
    }
    return RunResult.from_record(summary, rec)


def refuse_loihi2() -> None:
    from lmh_deploy.passes.loihi2_map import LAVA_LOIHI_HINT, lava_loihi_available

    if not lava_loihi_available():
        raise CommandFailed(LAVA_LOIHI_HINT)
    raise CommandFailed(
        "lava-loihi is installed, but the LMHNeuron Process has CPU "
        "ProcessModels only; Loihi 2 needs a neuro-core (microcode) model of "
        "it, built with lava-loihi's tools. Nothing ran."
    )


def _plots(
    summary: dict[str, Any],
    rec: Any,
    art: Any,
    x: np.ndarray,
    x_int: np.ndarray,
    y: np.ndarray | None,
    t_values: list[int],
    plots_dir: str | Path | None,
    html: str | Path | None,
    batch_size: int | None,
) -> None:
    """Add ``t_sweep`` (and ``plots``) to ``summary``; write the PNGs and/or the HTML page."""
    from lmh_deploy.backends.float.torch_model import run_float
    from lmh_deploy.reports import plots as P
    from lmh_deploy.reports.html import write_html

    if t_values:
        summary["t_sweep"] = t_sweep(art.quant_graph, x_int, y, t_values, batch_size=batch_size)
        summary["t_sweep_backend"] = "sim"
    model = art.load_model()
    time_varying = is_sequence(x, art.input_shape)
    rec_float = run_float(model, x, art.timesteps, time_varying=time_varying) if model is not None else None
    with tempfile.TemporaryDirectory(prefix="lmh-plots-") as tmp:
        images = P.make_plots(
            summary, rec, plots_dir or tmp, sweep=summary.get("t_sweep"), rec_float=rec_float
        )
        if plots_dir is not None:
            summary["plots"] = images
        if html is not None:
            write_html(summary, html, images=images)


def _rank_device(device: str | None) -> str | None:
    """``cuda`` under torchrun means this process's GPU, ``cuda:LOCAL_RANK``."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device
