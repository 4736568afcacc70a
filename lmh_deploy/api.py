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

from pathlib import Path
from typing import Any
from collections.abc import Callable

from lmh_deploy.bounds import check_samples, check_shape, check_timesteps
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
from lmh_deploy.errors import InputError
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
    from lmh_deploy.models.training_job import TrainJob, run_training_job

    job = TrainJob.from_options(
        dataset=dataset,
        data_dir=data_dir,
        arch=arch,
        neuron=neuron,
        factors=factors,
        timesteps=timesteps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        loss=loss,
        width_mult=width_mult,
        norm=norm,
        time_slice=time_slice,
        qcfs_levels=qcfs_levels,
        lif_decay=lif_decay,
        hybrid_from=hybrid_from,
        device=device,
        amp=amp,
        seed=seed,
        out=out,
        json_path=json_path,
        train_samples=train_samples,
    )
    return run_training_job(job, progress=progress)


def compile(
    model: str | Path,
    outdir: str | Path = "build",
    *,
    target: Target | str = Target.LAVA_SIM,
    calibration_samples: int = 64,
    dataset: Dataset | str | None = None,
    timesteps: int | None = None,
    dt: float | None = None,
    model_factory: str | None = None,
    model_kwargs: str | dict[str, Any] | None = None,
    input_shape: str | tuple[int, ...] | None = None,
    calibration: str | Path | None = None,
    profile: str = "lmh",
    bias_correction: bool = True,
    warn: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Compile a model into the artifact directory ``outdir``; returns the compile report.

    ``model`` is a checkpoint from ``train``, a LIF/CubaLIF ``.nir`` file (then
    ``dataset``, ``timesteps`` and ``dt`` apply), or, with ``model_factory="FILE.py:FACTORY"``,
    the ``state_dict`` of your own PyTorch module (then ``input_shape`` and ``timesteps``
    are needed, ``model_kwargs`` go to FACTORY, and ``dataset`` or ``calibration`` (.npy)
    give calibration inputs; a checkpoint or NIR file takes ``calibration`` too). Calibration
    inputs with negative values (normalised images) make the input signed 8-bit. ``profile``
    names the numeric profile (``lmh``: LM-H as trained; ``loihi-lif``: Lava's bit-accurate
    LIF; :mod:`lmh_deploy.semantics.profiles`).
    ``bias_correction`` (default on) takes each layer's mean 8-bit weight-rounding current on
    the calibration inputs off its bias (docs/fixed-point.md); off, the biases are the
    source's, rounded. ``warn`` receives warnings (possible saturation).
    """
    from lmh_deploy.pipeline.compile import compile_model

    if model_factory is None:
        return compile_model(
            model,
            outdir,
            target=target,
            calibration_samples=calibration_samples,
            dataset=dataset,
            timesteps=timesteps,
            dt=dt,
            profile=profile,
            bias_correction=bias_correction,
            calibration=calibration,
            warn=warn,
        )
    from lmh_deploy.pipeline.compile_torch import compile_model_file, parse_shape

    if input_shape is None or timesteps is None:
        raise InputError("--model needs --input-shape C,H,W and --timesteps T")
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    return compile_model_file(
        model,
        model_factory,
        outdir,
        model_kwargs=model_kwargs,
        input_shape=check_shape("--input-shape", shape),
        timesteps=check_timesteps(timesteps),
        dataset=(None if dataset is None else choice(Dataset, dataset, "--dataset").value),
        calibration=calibration,
        target=choice(Target, target, "--target").value,
        calibration_samples=check_samples(calibration_samples, "--calibration-samples", lo=0),
        profile=profile,
        bias_correction=bias_correction,
        warn=warn,
    )


def verify(
    artifact: str | Path,
    *,
    samples: int | None = None,
    inputs: str | Path | None = None,
    labels: str | Path | None = None,
    lava_samples: int | None = None,
    batch_size: int | None = None,
    max_accuracy_drop: float | None = None,
) -> dict[str, Any] | None:
    """Float source vs sim/ on ``samples`` samples, Lava fixed_pt vs sim/ on the first
    ``lava_samples`` of them (default: as many as fit ~1M neuron-steps; 0: no Lava).

    The samples are ``inputs`` (a .npy of the shape the network was compiled for, ``labels``
    optional) or the test split (100 by default). Returns the comparison (``lava_vs_sim``,
    ``float_vs_fixed``, ``ran``: which backends ran on which samples); it never raises on a
    mismatch: :func:`lmh_deploy.pipeline.verify.verify_failures` says whether it passed.
    Every backend runs in mini-batches of ``batch_size`` samples (default: sized from the
    free memory). ``max_accuracy_drop`` (percentage points) adds an ``accuracy_gate``.
    """
    from lmh_deploy.pipeline.verify import verify_path

    return verify_path(
        artifact,
        samples,
        inputs=inputs,
        labels=labels,
        lava_samples=lava_samples,
        batch_size=batch_size,
        max_accuracy_drop=max_accuracy_drop,
    )


def run(
    artifact: str | Path,
    *,
    backend: Backend | str = Backend.SIM,
    samples: int = 100,
    inputs: str | Path | None = None,
    labels: str | Path | None = None,
    plots_dir: str | Path | None = None,
    html: str | Path | None = None,
    sweep: str | None = None,
    stream: bool = False,
    device: str | None = None,
    batch_size: int | None = None,
    save_spikes: str | Path | None = None,
    status: Callable[[str], None] = lambda text: None,
) -> dict[str, Any] | None:
    """Run a compiled artifact; accuracy, per-layer spikes, synaptic ops and energy.

    ``inputs``/``labels``: own ``.npy`` arrays instead of the test split. ``plots_dir``
    and ``html`` write figures and a self-contained report (with a T ``sweep`` on sim/).
    sim/ only: ``stream`` keeps spike counts instead of rasters, ``device`` runs on a
    torch device (integer-exact). ``batch_size``: samples per mini-batch (default: sized
    from the free memory). ``save_spikes``: a .npz of the integer input and every spiking
    layer's raster.
    """
    from lmh_deploy.pipeline.run import run_artifact

    return run_artifact(
        artifact,
        backend=backend,
        samples=samples,
        inputs=inputs,
        labels=labels,
        plots_dir=plots_dir,
        html=html,
        sweep=sweep,
        stream=stream,
        device=device,
        batch_size=batch_size,
        save_spikes=save_spikes,
        status=status,
    )


def export(
    model: str | Path,
    out: str | Path,
    *,
    format: ExportFormat | str,
    dt: float = 1e-4,
    lossy: bool = False,
    samples: int = 100,
) -> dict[str, Any]:
    """Export a checkpoint to NIR or lava-dl netx HDF5, or a compiled artifact to netx
    (see :mod:`lmh_deploy.pipeline.export`)."""
    from lmh_deploy.pipeline.export import export_checkpoint

    return export_checkpoint(model, out, format=format, dt=dt, lossy=lossy, samples=samples)


def report(summary_json: str | Path, html: str | Path) -> Path:
    """Rebuild the self-contained HTML report from a saved ``run`` summary."""
    from lmh_deploy.reports.html import report_from_json

    return report_from_json(summary_json, html)


__all__ = ["compile", "export", "report", "run", "train", "verify"]
