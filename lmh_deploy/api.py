"""The Python API: every CLI command is one call here (the CLI only parses and prints).

    import lmh_deploy
    lmh_deploy.train(out="model.pt", arch="cnn", epochs=4)
    report = lmh_deploy.compile("model.pt", "build", target="loihi2")
    result = lmh_deploy.verify("build", samples=100)
    summary = lmh_deploy.run("build", backend="lava", samples=50)

Choices accept the Enum (:mod:`lmh_deploy.choices`) or its string. Bad inputs raise a
:class:`~lmh_deploy.errors.UserError` naming the cause before anything runs; any other
exception is a bug. Under torchrun, ``verify`` and ``run`` shard the samples over the
ranks and return ``None`` on every rank but 0.
"""

from __future__ import annotations

import os

from pathlib import Path
from typing import Any
from collections.abc import Callable

from lmh_deploy.bounds import check_shape
from lmh_deploy.choices import (
    Arch,
    Backend,
    Dataset,
    ExportFormat,
    Factors,
    Loss,
    Neuron,
    Norm,
    Target,
    Device,
    choice,
)
from lmh_deploy import options as O
from lmh_deploy.errors import InputError, require_file
from lmh_deploy.files import check_output, check_outputs
from lmh_deploy.pipeline.results import RunResult, VerifyResult
from lmh_deploy.semantics.profiles import get_profile
from lmh_deploy.models.job import DEFAULT_JOB


_JOB = DEFAULT_JOB  # every training default is TrainJob's


def train(
    *,
    out: str | Path = _JOB.out,
    dataset: Dataset | str = _JOB.dataset,
    data_dir: str | Path | None = _JOB.data_dir,
    arch: Arch | str = _JOB.arch,
    neuron: Neuron | str = _JOB.neuron,
    factors: Factors | str = _JOB.factors,
    timesteps: int | None = _JOB.timesteps,
    epochs: int = _JOB.epochs,
    batch_size: int = _JOB.batch_size,
    lr: float = _JOB.lr,
    weight_decay: float = _JOB.weight_decay,
    loss: Loss | str = _JOB.loss,
    width_mult: float = _JOB.width_mult,
    norm: Norm | str = _JOB.norm,
    time_slice: int = _JOB.time_slice,
    qcfs_levels: int = _JOB.qcfs_levels,
    lif_decay: float = _JOB.lif_decay,
    hybrid_from: str | Path | None = _JOB.hybrid_from,
    device: Device | str = _JOB.device,
    amp: bool = _JOB.amp,
    seed: int = _JOB.seed,
    json_path: str | Path | None = _JOB.json_path,
    train_samples: int = _JOB.train_samples,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Train a spiking network (or a QCFS ANN) and write a checkpoint to ``out``.

    ``train_samples`` > 0 trains on the first N samples of the training split only (a
    quick run). Returns the metrics (``accuracy``, ``epochs``, ``seconds_per_epoch``, ...); see
    :mod:`lmh_deploy.models.training_job` for the modes (hybrid, time-slicing, torchrun).
    """
    options = {name: value for name, value in locals().items() if name != "progress"}  # TrainJob's fields
    check_outputs({"--out": (out, "file"), "--json": (json_path, "file")}, inputs=[hybrid_from, data_dir])
    from lmh_deploy.models.training_job import TrainJob, run_training_job

    job = TrainJob.from_options(**options)
    return run_training_job(job, progress=progress)


def compile(
    model: Any,
    outdir: str | Path | None = None,
    *,
    example_input: Any = None,
    input_shape: str | tuple[int, ...] | None = None,
    timesteps: int | None = O.TIMESTEPS.default,
    calibration: Any = None,
    target: Target | str = Target.LAVA_SIM,
    profile: str | None = O.PROFILE.default,
    calibration_samples: int = O.CALIBRATION_SAMPLES.default,
    dataset: Dataset | str | None = None,
    dt: float | None = O.DT.default,
    model_factory: str | None = None,
    model_kwargs: str | dict[str, Any] | None = None,
    bias_correction: bool = O.BIAS_CORRECTION.default,
    input_bits: int | None = O.INPUT_BITS.default,
    weight_bits: int | str = O.WEIGHT_BITS.default,
    force: bool = False,
    warn: Callable[[str], None] = lambda message: None,
) -> Any:
    """Compile a model. Without ``outdir``: a :class:`~lmh_deploy.deployment.Deployment`,
    nothing written (``.save(path)`` writes the artifact folder). With ``outdir``: the
    artifact folder is written there and the compile report returned (the CLI's way).

    ``model`` is a live ``torch.nn.Module`` (our own nets, the paper's style, snnTorch
    ``nn.Sequential`` ...: every module the torch.fx frontend maps; give ``example_input``
    (one batch, ``(1, *shape)``) or ``input_shape``, and ``timesteps``), a checkpoint from
    ``train``, a LIF/CubaLIF ``.nir`` file (then ``dataset``, ``timesteps`` and ``dt``
    apply), or, with ``model_factory="FILE.py:FACTORY"``, the ``state_dict`` of your own
    module (then ``input_shape`` and ``timesteps`` are needed, ``model_kwargs`` go to
    FACTORY). ``calibration`` (a tensor, numpy array, ``.npy`` path or DataLoader) or
    ``dataset`` give the inputs the state ranges are measured on (the first
    ``calibration_samples``; negative values, e.g. normalised images, make the input signed:
    16-bit messages under ``lmh``). ``input_bits`` sets the graded input messages' width
    (1..24; docs/fixed-point.md §7). ``weight_bits`` 16 splits each weight across two 8-bit
    synapses (about 15 mantissa bits, twice the synapses; for deep nets, §5); ``"auto"`` (the
    default) keeps 8 unless the 8-bit net's predictions agree with the source's on fewer than
    98 % of the calibration inputs and the split agrees on more (the report's
    ``weight_bits_choice`` then says so; docs/compiler.md). ``profile``
    names the numeric profile (``lmh``: LM-H as trained;
    ``loihi-lif``: Lava's bit-accurate LIF; :mod:`lmh_deploy.semantics.profiles`); None: ``lmh``,
    or ``cuba`` where only it holds a layer's synaptic current decay or membrane decay below 1/2
    (:func:`~lmh_deploy.passes.neurons.default_profile`; the report's ``profile_choice`` says so).
    ``bias_correction`` (default on) takes each layer's mean 8-bit weight-rounding current on
    the calibration inputs off its bias (docs/fixed-point.md). An existing ``outdir`` is
    replaced only when empty or an lmh-deploy artifact (``force``: any folder, never a file
    nor an input; :func:`lmh_deploy.files.check_output`). ``warn`` receives warnings
    (possible saturation).
    """
    # options and paths first, before torch is imported: a mistake costs milliseconds. Here
    # only: the pipeline takes them as checked (inputs.check_input_bits adds the sign's rule)
    target = choice(Target, target, "--target")
    calibration_samples = O.CALIBRATION_SAMPLES.check(calibration_samples)
    dataset = None if dataset is None else choice(Dataset, dataset, "--dataset").value
    timesteps, dt = O.TIMESTEPS.check(timesteps), O.DT.check(dt)
    from_file = isinstance(model, (str, os.PathLike))
    if outdir is not None:
        sources = [model if from_file else None, model_factory.rpartition(":")[0] if model_factory else None]
        if isinstance(calibration, (str, os.PathLike)):
            sources.append(calibration)
        check_output(outdir, "-o", kind="artifact", inputs=sources, force=force)
    if from_file:
        require_file(model)
    if profile is not None:
        get_profile(profile)
    from torch import nn

    from lmh_deploy.deployment import Deployment, as_arrays

    options: dict[str, Any] = {
        "target": target.value,
        "calibration_samples": calibration_samples,
        "profile": profile,
        "bias_correction": bias_correction,
        "input_bits": O.INPUT_BITS.check(input_bits),
        "weight_bits": O.WEIGHT_BITS.check(weight_bits),
        "warn": warn,
    }
    if isinstance(model, nn.Module) or model_factory is not None:
        from lmh_deploy.pipeline.compile_torch import (
            compile_model_file,
            module_artifact,
            parse_shape,
            save_module_artifact,
        )

        if example_input is not None:
            shape: tuple[int, ...] | None = tuple(as_arrays(example_input, what="example_input")[0].shape[1:])
        elif isinstance(input_shape, str):
            shape = parse_shape(input_shape)
        else:
            shape = None if input_shape is None else tuple(input_shape)
        if timesteps is None and isinstance(model, nn.Module):
            timesteps = O.TIMESTEPS.check(getattr(model, "timesteps", None))  # our own nets know theirs
        if shape is None or timesteps is None:
            raise InputError(
                "a module needs its input shape (example_input=x[:1] or input_shape=(C, H, W)) "
                "and timesteps=T"
            )
        options.update(
            input_shape=check_shape("--input-shape", shape),
            timesteps=timesteps,
            dataset=dataset,
        )
        if calibration is not None:
            options["calibration"] = (
                calibration if isinstance(calibration, (str, Path)) else as_arrays(calibration)[0]
            )
        if model_factory is not None:
            if outdir is None:
                raise InputError("model_factory= compiles a weights file into outdir; give outdir")
            return compile_model_file(
                model, model_factory, outdir, model_kwargs=model_kwargs, force=force, **options
            )
        art = module_artifact(model, **options)
        if outdir is None:
            return Deployment(art, source=model)
        save_module_artifact(art, model, outdir, force=force)
        return art.report
    from lmh_deploy.pipeline.compile import build_artifact, compile_model, source_graph

    if outdir is not None:
        return compile_model(
            model,
            outdir,
            dataset=dataset,
            timesteps=timesteps,
            dt=dt,
            calibration=calibration,
            force=force,
            **options,
        )
    graph, x, files = source_graph(
        model,
        calibration_samples=options.pop("calibration_samples"),
        dataset=dataset,
        timesteps=timesteps,
        dt=dt,
        calibration=calibration,
        warn=warn,
    )
    art = build_artifact(graph, calibration_x=x, **options)
    return Deployment(art, source=_source_of(files), files=files)


def _source_of(files: dict[str, Path]) -> Any:
    """The source model of a checkpoint or NIR compile (verify's float side; None for netx)."""
    from lmh_deploy.frontends.nir import read_nir
    from lmh_deploy.models.checkpoint import load_checkpoint

    if "source.nir" in files:
        return read_nir(files["source.nir"])
    if "source.net" in files:  # a netx file: its float graph is the reference
        return None
    model, _ = load_checkpoint(files["model.pt"])
    return model


def load(path: str | Path) -> Any:
    """A saved artifact folder as a :class:`~lmh_deploy.deployment.Deployment`."""
    from lmh_deploy.deployment import load as load_deployment

    return load_deployment(path)


def verify(
    artifact: str | Path,
    *,
    samples: int | None = O.SAMPLES.default,
    inputs: str | Path | None = O.INPUTS.default,
    labels: str | Path | None = O.LABELS.default,
    lava_samples: int | None = O.LAVA_SAMPLES.default,
    batch_size: int | None = O.BATCH_SIZE.default,
    max_accuracy_drop: float | None = O.MAX_ACCURACY_DROP.default,
    lava_conv: str = O.LAVA_CONV.default,
) -> VerifyResult | None:
    """Float source vs sim/ on ``samples`` samples, Lava fixed_pt vs sim/ on the first
    ``lava_samples`` of them (default: as many as fit 12M neuron-steps; 0: no Lava).

    The samples are ``inputs`` (a .npy of the shape the network was compiled for, ``labels``
    optional) or the test split (100 by default). Returns the comparison (``lava_vs_sim``,
    ``float_vs_fixed``, ``ran``: which backends ran on which samples) as a
    :class:`~lmh_deploy.pipeline.results.VerifyResult`; it never raises on a mismatch:
    ``result.ok`` and ``result.failures`` say whether it passed.
    Every backend runs in mini-batches of ``batch_size`` samples (default: sized from the
    free memory). ``max_accuracy_drop`` (percentage points) adds an ``accuracy_gate``.
    ``lava_conv``: which convolutions Lava runs on its own Conv (``auto``: Sparse, faster,
    within a memory budget; ``always``; ``never``), the same results either way.
    """
    options = dict(locals())  # verify_path's parameters, by name; it checks them before loading
    from lmh_deploy.pipeline.verify import verify_path

    return verify_path(**options)


def run(
    artifact: str | Path,
    *,
    backend: Backend | str = Backend.SIM,
    samples: int | None = O.SAMPLES.default,
    inputs: str | Path | None = O.INPUTS.default,
    labels: str | Path | None = O.LABELS.default,
    plots_dir: str | Path | None = None,
    html: str | Path | None = None,
    sweep: str | None = None,
    stream: bool = False,
    device: str | None = None,
    batch_size: int | None = O.BATCH_SIZE.default,
    save_spikes: str | Path | None = None,
    lava_conv: str = O.LAVA_CONV.default,
    status: Callable[[str], None] = lambda text: None,
) -> RunResult | None:
    """Run a compiled artifact; accuracy, per-layer spikes, synaptic ops and energy as a
    :class:`~lmh_deploy.pipeline.results.RunResult`.

    ``inputs``/``labels``: own ``.npy`` arrays instead of the test split. ``plots_dir``
    and ``html`` write figures and a self-contained report (with a T ``sweep`` on sim/).
    sim/ only: ``stream`` keeps spike counts instead of rasters, ``device`` runs on a
    torch device (integer-exact). ``batch_size``: samples per mini-batch (default: sized
    from the free memory). ``save_spikes``: a .npz of the integer input and every spiking
    layer's raster. ``lava_conv`` (lava): as :func:`verify`.
    """
    options = dict(locals())  # run_artifact's parameters, by name; it checks them before loading
    from lmh_deploy.pipeline.run import run_artifact

    return run_artifact(**options)


def export(
    model: str | Path,
    out: str | Path,
    *,
    format: ExportFormat | str,
    dt: float | None = O.DT.default,
    samples: int = O.EXPORT_SAMPLES.default,
) -> dict[str, Any]:
    """Export a checkpoint to NIR or lava-dl netx HDF5, or a compiled artifact to netx
    (see :mod:`lmh_deploy.pipeline.export`)."""
    from lmh_deploy.pipeline.export import export_checkpoint  # it checks before loading torch

    return export_checkpoint(model, out, format=format, dt=dt, samples=samples)


def compare(run_a: str | Path, run_b: str | Path, *, html: str | Path | None = None) -> dict[str, Any]:
    """Two saved ``run`` summaries (``--json`` files) side by side: accuracy, spikes, synaptic
    ops, energy, total and per layer; ``html`` also writes a self-contained page with plots
    (its path is returned under ``"html"``)."""
    from lmh_deploy.reports.compare import compare_files

    comparison = compare_files(run_a, run_b)
    if html is not None:
        from lmh_deploy.reports.compare_html import write_compare_html

        comparison["html"] = str(write_compare_html(comparison, html))
    return comparison


def report(summary_json: str | Path, html: str | Path) -> Path:
    """Rebuild the self-contained HTML report from a saved ``run`` summary."""
    check_output(html, "--html", inputs=[summary_json])
    require_file(summary_json)
    from lmh_deploy.reports.html import report_from_json

    return report_from_json(summary_json, html)


__all__ = ["compare", "compile", "export", "load", "report", "run", "train", "verify"]
