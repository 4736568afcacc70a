"""The export stage: a checkpoint -> NIR (for other tools) or lava-dl netx HDF5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmh_deploy.choices import ExportFormat, choice
from lmh_deploy.options import DT, EXPORT_SAMPLES, NIR_DEFAULT_DT
from lmh_deploy.errors import InputError, InteropError, require_file
from lmh_deploy.files import check_output
from lmh_deploy.pipeline.artifact import check_artifact_and_inputs


def export_checkpoint(
    model: str | Path,
    out: str | Path,
    *,
    format: ExportFormat | str,
    dt: float | None = DT.default,
    samples: int = EXPORT_SAMPLES.default,
) -> dict[str, Any]:
    """Write ``model`` (an ``lmh-deploy train`` checkpoint) as ``format`` to ``out``; a
    compiled artifact directory exports to netx with exactly its integers (profile
    loihi-lif), a checkpoint to netx with the integers ``compile --profile loihi-lif``
    gives it (:func:`checkpoint_to_netx`).

    NIR: ``dt`` is the Euler step in seconds (default ``NIR_DEFAULT_DT``); a general LM-H
    layer is written as its nearest LIF with its exact factors in metadata, and how far other
    NIR tools' run is from the net is measured on ``samples`` test samples. Returns the
    exporter's report; NIR reports add ``"samples"``.
    """
    format = choice(ExportFormat, format, "--format")
    dt = NIR_DEFAULT_DT if dt is None else DT.check(dt)
    samples = EXPORT_SAMPLES.check(samples)
    check_output(out, "-o", inputs=[model])
    if Path(model).is_dir():  # a compiled artifact: write exactly its integers
        check_artifact_and_inputs(model)
        if format != ExportFormat.NETX:
            raise InputError(f"{model}: an artifact directory exports to netx only")
        from lmh_deploy.interop.netx_artifact import artifact_to_netx
        from lmh_deploy.pipeline.compile import load_artifact

        return dict(artifact_to_netx(load_artifact(model).quant_graph, Path(out)), from_artifact=True)
    checkpoint = require_file(model, "checkpoint")
    if format == ExportFormat.NETX:
        return checkpoint_to_netx(checkpoint, Path(out))
    # torch after the cheap checks: a mistake is refused in milliseconds
    from lmh_deploy.frontends.pytorch import export_model
    from lmh_deploy.models.checkpoint import load_checkpoint

    net, payload = load_checkpoint(checkpoint)
    ds = payload["dataset"]
    graph = export_model(
        net,
        input_shape=tuple(ds["input_shape"]),
        x_max=float(ds.get("x_max", 1.0)),
        timesteps=int(payload["arch_kwargs"].get("timesteps", 4)),
    )
    from lmh_deploy.interop.nir_export import write_nir
    from lmh_deploy.models.data import load_dataset

    _, test, _ = load_dataset(ds["name"], ds.get("data_dir"), seed=int(ds.get("seed", 0)))
    x = test.tensors[0][:samples].numpy()
    result = dict(write_nir(graph, Path(out), dt=dt, inputs=x))
    result["samples"] = len(x)
    return result


def checkpoint_to_netx(model: Path, out: Path) -> dict[str, Any]:
    """Compile the checkpoint in memory exactly as ``compile MODEL --profile loihi-lif`` does
    (Lava's CUBA LIF bit for bit; calibration and bias correction on the checkpoint's
    dataset) and write that artifact's integers as netx layers, so that the file run by
    netx equals sim/ of that artifact. A layer netx cannot hold (LM-H's dendrite or
    soma-coupling factors, per-step factors, another reset rule) is refused naming it."""
    from lmh_deploy.interop.netx_artifact import artifact_to_netx
    from lmh_deploy.ir import IRError
    from lmh_deploy.pipeline.compile import build_artifact, source_graph

    graph, x, _ = source_graph(model)
    try:
        art = build_artifact(graph, target="lava-sim", calibration_x=x, profile="loihi-lif")
    except IRError as exc:
        raise InteropError(
            f"{exc}: netx holds only Lava's CUBA LIF; train with --neuron lif "
            f"(compile --profile loihi-lif shows the same)"
        ) from None
    return dict(artifact_to_netx(art.quant_graph, out), from_checkpoint=True)
