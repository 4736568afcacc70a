"""The compile driver: checkpoint -> export -> quantize -> calibrate -> artifact directory."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from lmh_deploy.choices import Target
from lmh_deploy.errors import InputError, require_file
from lmh_deploy.options import (
    AUTO,
    BIAS_CORRECTION,
    CALIBRATION_SAMPLES,
    INPUT_BITS,
    PROFILE,
    WEIGHT_BITS,
    WEIGHT_BITS_NOTE,
)
from lmh_deploy import __version__
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import DEFAULT_PROFILE
from lmh_deploy.passes.neurons import default_profile
from lmh_deploy.pipeline.artifact import (
    ArtifactError,
    atomic_directory,
    check_artifact,
    sha256,
    write_manifest,
)
from lmh_deploy.pipeline.inputs import (
    dataset_inputs,
    fit_input_range,
    frames_for,
    is_sequence,
    num_samples,
    quantize,
    sample_axis,
)
from lmh_deploy.frontends.netx import is_netx_file
from lmh_deploy.ir import Graph, load_graph, save_graph
from lmh_deploy.passes.quantize import exact_graph, quantize_graph
from lmh_deploy.pipeline.weight_choice import choose_weight_bits

CHECKPOINT_COPY = "model.pt"
SOURCE_FILE = "source_model.py"  # the copy of a --model FILE.py
RESOURCES = "resources.json"


@dataclass
class Artifact:
    """A compiled network: loaded from a checksum-verified artifact directory, or built in
    memory by :func:`build_artifact` (``directory`` None until it is saved)."""

    directory: Path | None
    manifest: dict[str, Any]
    float_graph: Graph
    quant_graph: Graph
    report: dict[str, Any]
    resources: dict[str, Any] | None = None  # the Loihi 2 mapping (target loihi2)

    @property
    def timesteps(self) -> int:
        return int(self.quant_graph.meta["timesteps"])

    def load_model(self):
        """The float PyTorch model (weights-only load), or None for imported NIR graphs."""
        if self.directory is None:
            return None
        path = self.directory / CHECKPOINT_COPY
        if not path.exists():
            return None
        from lmh_deploy.models.checkpoint import load_checkpoint  # torch, imported when needed

        model, _ = load_checkpoint(path)
        return model

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One frame's shape."""
        return tuple(self.quant_graph.node(self.quant_graph.order()[0]).shape)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape as the calibration inputs had it (a flat-input network
        calibrated on images remembers the image shape); else :attr:`input_shape`."""
        given = self.quant_graph.meta.get("sample_shape")
        return tuple(int(d) for d in given) if given else self.input_shape

    @property
    def num_classes(self) -> int:
        return self.quant_graph.node(self.quant_graph.order()[-1]).output_size()

    @property
    def spike_input(self) -> bool:
        """True when the network takes binary event frames, sent as spikes."""
        return int(self.quant_graph.node(self.quant_graph.order()[0]).bits) == 1

    def dataset_split(self, split: str = "test"):
        """``(x, y)`` numpy arrays of the model's dataset split.

        ``x`` is ``(N, *shape)`` for images, time-major ``(T, N, *shape)`` for event frames.
        """
        ds = self.quant_graph.meta.get("dataset")
        if not ds:
            raise InputError(
                f"{self.directory}: compiled without a dataset (e.g. from NIR); "
                "pass --inputs/--labels or recompile with --dataset"
            )
        from lmh_deploy.models.data import load_dataset  # torch, imported when needed

        train, test, _ = load_dataset(ds["name"], ds.get("data_dir"), seed=int(ds.get("seed", 0)))
        data = test if split == "test" else train
        x = dataset_inputs(data.tensors[0].numpy(), self.input_shape, bool(ds.get("frames")))
        return x, data.tensors[1].numpy()


#: Memory a compile-time measurement (calibration, bias-correction counts) may plan per
#: mini-batch: a paper-scale network (ResNet-19 at 32 x 32: 1.4 M neurons) holds about
#: 90 MB of states per sample, so whole calibration sets never sit in memory at once.
MEASURE_BATCH_BYTES = 256 << 20


def _batches(x: np.ndarray, shape: tuple[int, ...], batch: int):
    """Consecutive mini-batches of ``batch`` samples (static or time-major ``x``)."""
    axis = sample_axis(x, shape)
    for start in range(0, x.shape[axis], batch):
        yield x[:, start : start + batch] if axis else x[start : start + batch]


def calibrate(
    qgraph: Graph,
    x: np.ndarray,
    timesteps: int,
    *,
    batch_size: int | None = None,
    predictions: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Observed state ranges and saturation on real samples, via the integer simulator, in
    mini-batches of ``batch_size`` samples (default: :data:`MEASURE_BATCH_BYTES` of states);
    each mini-batch's predicted classes are appended to ``predictions`` where given.

    ``x``: static ``(N, *shape)`` or time-major frames ``(T, N, *shape)``.
    """
    from lmh_deploy.sim import default_batch_size, simulate  # the run stage, used to measure

    shape = tuple(qgraph.node(qgraph.order()[0]).shape)
    batch = batch_size or default_batch_size(
        qgraph, timesteps, budget_bytes=MEASURE_BATCH_BYTES, record_spikes=False, record_states=True
    )
    peaks: dict[str, list[int]] = {}
    saturation: dict[str, int] = {}
    for part in _batches(quantize(qgraph, frames_for(x, timesteps, shape)), shape, batch):
        rec = simulate(qgraph, part, timesteps, record_states=True, record_spikes=False)
        for name, (v_d, v_s) in rec.state_trace.items():
            old = peaks.get(name, [0, 0])
            peaks[name] = [max(old[0], int(np.abs(v_d).max())), max(old[1], int(np.abs(v_s).max()))]
            saturation[name] = saturation.get(name, 0) + int(rec.saturation[name])
        if predictions is not None:
            predictions.append(rec.predictions)
        del rec
    out = {}
    for name, (max_v_d, max_v_s) in peaks.items():
        out[name] = {
            "max_abs_v_d": max_v_d,
            "max_abs_v_s": max_v_s,
            "saturation_events": saturation[name],
            "headroom_bits": float(np.log2(fx.STATE_MAX / max(1, max_v_d, max_v_s))),
        }
    return {"samples": num_samples(x, shape), "layers": out}


#: A float run of a batch of inputs (static or frames) recording every LM-H layer's spikes.
FloatRun = Callable[[np.ndarray], Any]


def mean_counts(
    graph: Graph,
    x: np.ndarray,
    timesteps: int,
    *,
    run_float: FloatRun | None = None,
    batch_size: int | None = None,
    predictions: list[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Mean count per step of every presynaptic neuron of the float model on ``x`` (static
    ``(N, *shape)`` or frames ``(T, N, *shape)``): the input in its integer units
    (``x_max / 255``, or spikes), each LM-H layer's spikes; the bias correction's statistics.

    ``run_float`` runs the float model on a mini-batch (default: the float IR in float64;
    the source module itself is faster where there is one); mini-batches of ``batch_size``
    samples (default: about :data:`MEASURE_BATCH_BYTES` of float states), counts summed."""
    from lmh_deploy.backends.float.ir import simulate_float  # measurement, as calibrate's sim

    inp = graph.node(graph.order()[0])
    shape = tuple(inp.shape)
    x = frames_for(np.asarray(x, np.float64), timesteps, shape)
    run = run_float or (lambda xs: simulate_float(graph, xs, timesteps))
    neurons = sum(int(graph.node(n).size) for n in graph.of_kind("lmh"))
    batch = batch_size or max(1, MEASURE_BATCH_BYTES // (40 * max(neurons, 1)))
    sums: dict[str, np.ndarray] = {}
    for part in _batches(x, shape, batch):
        rec = run(part)
        for name, spikes in rec.spikes.items():
            # a source module may record (T, N, C, H, W) or merged (T*N, ...): sum over all
            # but the layer's neurons, which every layout keeps last in the IR's order
            size = int(graph.node(name).size)
            total = np.asarray(spikes).reshape(-1, size).sum(0, dtype=np.int64)
            sums[name] = sums[name] + total if name in sums else total
        if predictions is not None:
            predictions.append(rec.predictions)
        del rec
    steps_samples = timesteps * num_samples(x, shape)
    counts = {graph.order()[0]: x.reshape(-1, inp.output_size()).mean(0) / inp.unit}
    counts.update({name: total / steps_samples for name, total in sums.items()})
    return counts


def _from_checkpoint(model_path: Path) -> tuple[Graph, dict[str, Any]]:
    from lmh_deploy.models.checkpoint import load_checkpoint  # torch, imported when needed

    model, payload = load_checkpoint(model_path)
    ds = payload["dataset"]
    timesteps = int(payload["arch_kwargs"].get("timesteps", 4))
    meta = {
        "num_classes": int(ds["num_classes"]),
        "dataset": ds,
        "source": {"file": model_path.name, "sha256": sha256(model_path), "format": "checkpoint"},
    }
    from lmh_deploy.frontends.pytorch import export_model  # torch: not for loading an artifact

    graph = export_model(
        model,
        input_shape=tuple(ds["input_shape"]),
        x_max=float(ds.get("x_max", 1.0)),
        timesteps=timesteps,
        meta=meta,
        spikes=bool(ds.get("spikes", False)),
    )
    return graph, ds


def _from_nir(
    path: Path, dataset: str | None, timesteps: int | None, dt: float | None, warn: Callable[[str], None]
) -> tuple[Graph, dict[str, Any] | None]:
    from lmh_deploy.frontends.nir import nir_to_graph

    graph = nir_to_graph(path, dt=dt, timesteps=timesteps, x_max=1.0, warn=warn)
    return graph, _imported_dataset(graph, path, dataset, "NIR graph", warn)


def _from_netx(
    path: Path, dataset: str | None, timesteps: int | None, warn: Callable[[str], None]
) -> tuple[Graph, dict[str, Any] | None]:
    from lmh_deploy.frontends.netx import netx_to_graph

    # a file whose first layer is a conv or pool and has no 'input' layer takes the dataset's
    # (C, H, W), as netx takes input_shape
    shape = None
    if dataset:
        from lmh_deploy.models.data import load_dataset  # torch, imported when needed

        shape = tuple(load_dataset(dataset)[2].input_shape)
    graph = netx_to_graph(path, timesteps=timesteps, input_shape=shape)
    return graph, _imported_dataset(graph, path, dataset, "netx network", warn)


def _imported_dataset(
    graph: Graph, path: Path, dataset: str | None, what: str, warn: Callable[[str], None]
) -> dict[str, Any] | None:
    """The dataset record of an imported graph (None without ``dataset``); records the
    source file's name and checksum in ``graph.meta``."""
    ds = None
    if dataset:
        from lmh_deploy.models.data import load_dataset  # torch, imported when needed

        train, _, spec = load_dataset(dataset)
        n_in = int(np.prod(spec.input_shape))
        if graph.node("input").output_size() != n_in:
            raise InputError(
                f"{path}: the {what} takes {graph.node('input').output_size()} "
                f"inputs, dataset {dataset} has {n_in}"
            )
        ds = {
            "name": spec.name,
            "input_shape": list(graph.node("input").shape),
            "num_classes": spec.num_classes,
            "x_max": 1.0,
            "seed": 0,
        }
        _warn_if_silent(graph, train.tensors[0][:64].numpy(), warn)
    graph.meta.update(
        {"dataset": ds, "source": {**graph.meta["source"], "file": path.name, "sha256": sha256(path)}}
    )
    return ds


def _warn_if_silent(graph: Graph, x: np.ndarray, warn: Callable[[str], None]) -> None:
    """A wrong dt can leave an imported network silent: say so (its rate per layer)."""
    from lmh_deploy.backends.float.ir import simulate_float

    x = x.reshape((len(x), *graph.node("input").shape))
    rec = simulate_float(graph, x, int(graph.meta["timesteps"]))
    for name, spikes in rec.spikes.items():
        if spikes.mean() < 1e-3:
            warn(
                f"{name}: {spikes.mean():.2%} spikes per neuron and step on {len(x)} training "
                f"samples with dt = {graph.meta['dt']:g} s ({graph.meta['dt_origin']}): the "
                f"network is (nearly) silent; check --dt"
            )
            return


def source_graph(
    model_path: str | Path,
    *,
    calibration_samples: int = CALIBRATION_SAMPLES.default,
    dataset: str | None = None,
    timesteps: int | None = None,
    dt: float | None = None,
    calibration: str | Path | None = None,
    warn: Callable[[str], None] = lambda msg: None,
) -> tuple[Graph, np.ndarray | None, dict[str, Path]]:
    """A checkpoint (or a LIF/CubaLIF NIR file) as a float graph, its calibration inputs
    (``calibration``, a .npy of ``(N, *input_shape)``: negative values make the input signed,
    docs/fixed-point.md §7; else the dataset's training split) and the files an artifact
    keeps a copy of."""
    model_path = Path(model_path)
    if model_path.suffix == ".nir":
        graph, ds = _from_nir(require_file(model_path), dataset, timesteps, dt, warn)
    elif is_netx_file(model_path):
        graph, ds = _from_netx(model_path, dataset, timesteps, warn)
    else:
        graph, ds = _from_checkpoint(model_path)
    x = None
    if calibration is not None:
        from lmh_deploy.pipeline.compile_torch import calibration_inputs

        x = calibration_inputs(calibration, tuple(graph.node("input").shape))[:calibration_samples]
    elif calibration_samples > 0 and ds:
        from lmh_deploy.models.data import load_dataset  # torch, imported when needed

        train_set, _, _ = load_dataset(ds["name"], ds.get("data_dir"), seed=int(ds.get("seed", 0)))
        raw = train_set.tensors[0]
        graph.meta["sample_shape"] = list(raw.shape[2:] if ds.get("frames") else raw.shape[1:])
        x = dataset_inputs(
            train_set.tensors[0][:calibration_samples].numpy(),
            tuple(graph.node("input").shape),
            bool(ds.get("frames")),
        )
    copy_name = {"nir": "source.nir", "netx": "source.net"}.get(
        graph.meta.get("source", {}).get("format"), CHECKPOINT_COPY
    )
    return graph, x, {copy_name: model_path}


def compile_model(
    model_path: str | Path,
    outdir: str | Path,
    *,
    target: str = Target.LAVA_SIM.value,
    calibration_samples: int = CALIBRATION_SAMPLES.default,
    dataset: str | None = None,
    timesteps: int | None = None,
    dt: float | None = None,
    profile: str | None = None,
    bias_correction: bool = True,
    calibration: str | Path | None = None,
    input_bits: int | None = None,
    weight_bits: int | str = AUTO,
    force: bool = False,
    warn: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Compile a checkpoint (or a LIF/CubaLIF NIR file) into ``outdir`` atomically
    (``calibration``: see :func:`source_graph`; ``force``: see :func:`save_artifact`).

    Returns the compile report. ``dataset``/``timesteps``/``dt`` only apply to NIR input
    (a checkpoint records them). ``profile`` names the numeric profile
    (:mod:`lmh_deploy.semantics.profiles`; None: :func:`~lmh_deploy.passes.neurons.default_profile`);
    it is stored in the integer graph, the manifest and the report.
    """
    graph, x, files = source_graph(
        model_path,
        calibration_samples=calibration_samples,
        dataset=dataset,
        timesteps=timesteps,
        dt=dt,
        calibration=calibration,
        warn=warn,
    )
    return write_artifact(
        graph,
        outdir,
        target=target,
        calibration_x=x,
        files=files,
        profile=profile,
        bias_correction=bias_correction,
        input_bits=input_bits,
        weight_bits=weight_bits,
        force=force,
        warn=warn,
    )


def build_artifact(
    graph: Graph,
    *,
    target: str,
    calibration_x: np.ndarray | None,
    profile: str | None = None,
    bias_correction: bool = True,
    input_bits: int | None = None,
    weight_bits: int | str = AUTO,
    run_float: FloatRun | None = None,
    warn: Callable[[str], None] = lambda msg: None,
) -> Artifact:
    """Quantise ``graph`` under numeric ``profile`` (None: the one the net needs,
    :func:`~lmh_deploy.passes.neurons.default_profile`, named in the report's
    ``profile_choice`` where it is not the default) and calibrate on ``calibration_x``, in
    memory (nothing is written). ``bias_correction``: take each layer's mean weight-rounding
    current on the calibration inputs off its bias (:mod:`lmh_deploy.passes.bias_correction`),
    measured with ``run_float`` (see :func:`mean_counts`). ``input_bits``: the graded input
    messages' width (default :func:`~lmh_deploy.semantics.integer.default_input_bits`).
    ``weight_bits`` 16: each weight split across two 8-bit synapses
    (:func:`~lmh_deploy.passes.weights.split_fine`; not for an imported netx file's own integers);
    ``"auto"``: 8, or 16 where 8 falls short on the calibration inputs
    (:func:`~lmh_deploy.pipeline.weight_choice.choose_weight_bits`)."""
    graph.meta["target"] = target
    timesteps = int(graph.meta["timesteps"])
    shape = tuple(graph.node(graph.order()[0]).shape)
    x = None
    if calibration_x is not None and len(calibration_x):
        x = (
            calibration_x
            if is_sequence(calibration_x, shape)  # (T, N, *shape) frames
            else calibration_x.reshape((len(calibration_x), *shape))
        )
    exact = "exact_weight_scale" in graph.meta  # an imported netx file: its own integers, loihi-lif
    choice = None
    if profile is None:
        profile, choice = (DEFAULT_PROFILE, None) if exact else default_profile(graph)
    fit_input_range(graph, x, profile=profile, bits=input_bits)
    auto = weight_bits == AUTO
    bits = 8 if auto else int(weight_bits)
    source_predictions: list[np.ndarray] | None = [] if auto else None
    sim_predictions: list[np.ndarray] | None = [] if auto else None
    if exact:
        if bits > 8:
            raise InputError(
                "--weight-bits 16: an imported netx file deploys its own 8-bit weights as they are; "
                "leave --weight-bits at 8"
            )
        qgraph, report = exact_graph(graph)
        profile, bias_correction = qgraph.meta["profile"], False
        counts = None
    else:
        counts = (
            mean_counts(graph, x, timesteps, run_float=run_float, predictions=source_predictions)
            if x is not None and bias_correction
            else None
        )
        qgraph, report = quantize_graph(graph, profile, mean_counts=counts, weight_bits=bits)
    if choice:
        report["profile_choice"] = choice
    if x is not None:
        report["calibration"] = calibrate(qgraph, x, timesteps, predictions=sim_predictions)
    note = None
    if auto:
        qgraph, report, note = choose_weight_bits(
            graph,
            qgraph,
            report,
            x=x,
            profile=profile,
            counts=counts,
            run_float=run_float,
            source_predictions=source_predictions,
            sim_predictions=sim_predictions,
            loihi2=target == "loihi2",
        )
    for layer in report["layers"]:
        if layer["kind"] == "lmh" and not layer["worst_case_fits_24bit"]:
            warn(
                f"{layer['name']}: worst-case state {max(layer['worst_case_state'].values())} "
                f"exceeds the 24-bit range ({fx.STATE_MAX}); saturation is possible and is counted"
            )
    if x is not None:
        for name, c in report["calibration"]["layers"].items():
            if c["saturation_events"]:
                warn(f"{name}: {c['saturation_events']} saturation events on calibration data")
    q_input = qgraph.node(qgraph.order()[0])
    report.update(
        {
            "input": {  # the graded input messages (docs/fixed-point.md §7)
                "bits": int(q_input.bits),
                "signed": bool(q_input.signed),
                "range": list(fx.input_range(int(q_input.bits), bool(q_input.signed))),
                "unit": 1.0 / float(q_input.scale),
            },
            "target": target,
            "timesteps": timesteps,
            "lmh_deploy_version": __version__,
            "source": graph.meta["source"],
        }
    )
    resources = None
    if "dt" in graph.meta:  # a NIR import: the Euler step its time constants were read with
        report["dt"] = {"seconds": float(graph.meta["dt"]), "origin": graph.meta.get("dt_origin", "given")}
    if target == "loihi2":
        from lmh_deploy.passes.loihi2_map import map_to_loihi2

        resources = map_to_loihi2(qgraph)
    if note is not None:  # printed by compile, not saved: see WEIGHT_BITS_NOTE
        report[WEIGHT_BITS_NOTE] = note
    manifest = {
        "target": target,
        "timesteps": timesteps,
        PROFILE.name: profile,  # the options as given, under their API names
        BIAS_CORRECTION.name: bias_correction,
        INPUT_BITS.name: int(q_input.bits),  # as chosen (given or the default)
        WEIGHT_BITS.name: int(report.get("weight_bits", 8)),
        "lmh_deploy_version": __version__,
    }
    return Artifact(None, manifest, graph, qgraph, report, resources)


def save_artifact(art: Artifact, outdir: str | Path, files: dict[str, Path], *, force: bool = False) -> Path:
    """Write ``art`` to ``outdir`` atomically, with ``files`` (artifact name -> source path)
    copied in and a manifest of checksums; returns ``outdir``. An existing ``outdir`` is
    replaced only when empty or an artifact, or with ``force`` any folder
    (:func:`lmh_deploy.files.check_output`)."""
    with atomic_directory(outdir, force=force) as tmp:
        save_graph(art.float_graph, tmp, "ir")
        save_graph(art.quant_graph, tmp, "quantized")
        for name, path in files.items():
            shutil.copyfile(path, tmp / name)
        report = {k: v for k, v in art.report.items() if k != WEIGHT_BITS_NOTE}
        (tmp / "compile_report.json").write_text(json.dumps(report, indent=1))
        if art.resources is not None:
            (tmp / RESOURCES).write_text(json.dumps(art.resources, indent=1))
        write_manifest(tmp, art.manifest)
    return Path(outdir)


def write_artifact(
    graph: Graph,
    outdir: str | Path,
    *,
    target: str,
    calibration_x: np.ndarray | None,
    files: dict[str, Path],
    profile: str | None = None,
    bias_correction: bool = True,
    input_bits: int | None = None,
    weight_bits: int | str = AUTO,
    run_float: FloatRun | None = None,
    force: bool = False,
    warn: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """:func:`build_artifact` then :func:`save_artifact`; returns the compile report."""
    art = build_artifact(
        graph,
        target=target,
        calibration_x=calibration_x,
        profile=profile,
        bias_correction=bias_correction,
        input_bits=input_bits,
        weight_bits=weight_bits,
        run_float=run_float,
        warn=warn,
    )
    save_artifact(art, outdir, files, force=force)
    return art.report


def load_artifact(directory: str | Path) -> Artifact:
    """Check the manifest, then load both graphs and the report."""
    directory = Path(directory)
    manifest = check_artifact(directory)
    resources = directory / RESOURCES
    return Artifact(
        directory=directory,
        manifest=manifest,
        float_graph=load_graph(directory, "ir"),
        quant_graph=load_graph(directory, "quantized"),
        report=json.loads((directory / "compile_report.json").read_text()),
        resources=json.loads(resources.read_text()) if resources.is_file() else None,
    )


def check_model_file(art: Artifact) -> Path | None:
    """The model file (``--model FILE.py``) an artifact was compiled from, checked unchanged
    since compile; None for other sources. One line if it is gone or changed."""
    src = art.float_graph.meta.get("source") or {}
    if src.get("format") != "pytorch-module" or not src.get("model_file"):
        return None
    path = Path(src["model_file"])
    again = "recompile" + (
        "" if art.directory is None else f", or restore it from the copy {art.directory / SOURCE_FILE}"
    )
    if not path.is_file():
        raise ArtifactError(f"{path}: the model file {art.directory} was compiled from is gone; {again}")
    if sha256(path) != src.get("model_file_sha256"):
        raise ArtifactError(
            f"{path}: changed since {art.directory} was compiled from it (SHA-256 differs); {again}"
        )
    return path
