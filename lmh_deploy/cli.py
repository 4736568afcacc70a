"""The ``lmh-deploy`` command line: train, compile, export, verify, run, report, demo."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile LM-H spiking networks from PyTorch to Lava fixed point "
                       "(Lava CPU == sim/, bit for bit; Loihi 2 silicon not verified).")
console = Console(stderr=True)
out = Console()
STATE = {"debug": False}


class CommandFailed(Exception):
    """A check that failed (e.g. Lava != sim): exit code 1 with one line."""


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    """lmh-deploy."""
    STATE["debug"] = debug


@contextmanager
def clean_errors() -> Iterator[None]:
    """One clear line and a non-zero exit for expected errors; a traceback only with --debug."""
    try:
        yield
    except typer.Exit:
        raise
    except CommandFailed as exc:
        console.print(f"[red]failed:[/red] {exc}", highlight=False)
        raise typer.Exit(1)
    except (ValueError, FileNotFoundError, OSError, KeyError, RuntimeError) as exc:
        if STATE["debug"]:
            raise
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


@contextmanager
def spinner(text: str) -> Iterator[None]:
    """A rich spinner for anything that takes more than a moment."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        progress.add_task(text, total=None)
        yield


def _write_json(path: Optional[Path], data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)


@app.command()
def train(dataset: str = typer.Option("digits", help="digits | mnist5k | cifar10 | cifar100 | events"),
          data_dir: Optional[str] = typer.Option(None, help="Folder of on-disk datasets."),
          arch: str = typer.Option("mlp", help="mlp | cnn | vgg13 | resnet19 | resnet20"),
          neuron: str = typer.Option("lmh", help="lmh | lif | qcfs (an ANN, for --hybrid-from)"),
          factors: str = typer.Option("progressive", help="progressive | radical"),
          timesteps: int = typer.Option(4), epochs: int = typer.Option(10),
          batch_size: int = typer.Option(64), lr: float = typer.Option(0.025),
          weight_decay: float = typer.Option(5e-4),
          loss: str = typer.Option("ce", help="ce | tet"), width_mult: float = typer.Option(1.0),
          norm: str = typer.Option("auto", help="auto | tdbn | bn | none (auto: none for mlp)"),
          time_slice: int = typer.Option(0, help="Online training: k steps per slice (0: BPTT)."),
          qcfs_levels: int = typer.Option(4, help="L of the QCFS activation."),
          hybrid_from: Optional[Path] = typer.Option(None, help="A QCFS ANN checkpoint to "
                                                     "convert to LM-H and fine-tune."),
          device: str = typer.Option("cpu", help="cpu | cuda (under torchrun: one GPU per "
                                     "process, cuda:LOCAL_RANK)"),
          amp: bool = typer.Option(False, "--amp", help="Mixed precision (autocast + "
                                   "GradScaler); CUDA only."),
          seed: int = typer.Option(0), out_path: Path = typer.Option(Path("model.pt"), "--out"),
          json_path: Optional[Path] = typer.Option(None, "--json")) -> None:
    """Train a spiking network (or a QCFS ANN) and write a self-describing checkpoint.

    Under torchrun (e.g. ``torchrun --nproc-per-node=2 $(which lmh-deploy) train ...``) the
    job trains with DistributedDataParallel; --batch-size is the global batch; only rank 0
    writes and reports (docs/distributed.md).
    """
    from lmh_deploy.models.distributed import is_main_process
    from lmh_deploy.models.training_job import TrainJob, run_training_job

    job = TrainJob(dataset=dataset, data_dir=data_dir, arch=arch, neuron=neuron, factors=factors,
                   timesteps=timesteps, epochs=epochs, batch_size=batch_size, lr=lr,
                   weight_decay=weight_decay, loss=loss, width_mult=width_mult, norm=norm,
                   time_slice=time_slice, qcfs_levels=qcfs_levels,
                   hybrid_from=str(hybrid_from) if hybrid_from else None, device=device,
                   amp=amp, seed=seed, out=str(out_path),
                   json_path=str(json_path) if json_path else None)
    main_rank = is_main_process()  # torchrun: RANK 0 (True without torchrun)
    with clean_errors(), Progress(TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.completed}/{task.total} epochs"),
                                  TimeElapsedColumn(), console=console,
                                  disable=not main_rank) as progress:
        task = progress.add_task(f"training {arch}/{neuron} on {dataset}", total=epochs)

        def on_epoch(epoch: int, total: int, acc: float) -> None:
            progress.update(task, completed=epoch,
                            description=f"training {arch}/{neuron} on {dataset} (acc {acc:.3f})")

        metrics = run_training_job(job, progress=on_epoch)
    if not main_rank:
        return
    if metrics.get("warning"):
        console.print(f"[yellow]warning:[/yellow] {metrics['warning']}", soft_wrap=True)
    out.print(f"trained: test accuracy {metrics['accuracy']:.4f} after {epochs} epochs "
              f"({metrics['seconds_per_epoch']:.2f} s/epoch) -> {out_path}")


@app.command()
def compile(model: Path = typer.Argument(..., help="A checkpoint from lmh-deploy train, or a "
                                                     "LIF/CubaLIF .nir file made elsewhere."),
            target: str = typer.Option("lava-sim", help="lava-sim | loihi2"),
            outdir: Path = typer.Option(Path("build"), "-o", "--outdir"),
            calibration_samples: int = typer.Option(64),
            dataset: Optional[str] = typer.Option(None, help="NIR input only: dataset to "
                                                  "calibrate and evaluate on."),
            timesteps: Optional[int] = typer.Option(None, help="NIR input only: steps per sample."),
            dt: Optional[float] = typer.Option(None, help="NIR input only: Euler step (default: "
                                               "the file's metadata dt)."),
            model_spec: Optional[str] = typer.Option(None, "--model", help="Your own PyTorch "
                                                     "model: FILE.py:FACTORY; MODEL is then its "
                                                     "state_dict (docs/interop.md)."),
            model_kwargs: Optional[str] = typer.Option(None, help="--model: JSON keyword "
                                                       "arguments for FACTORY."),
            input_shape: Optional[str] = typer.Option(None, help="--model: one sample's shape, "
                                                      "e.g. 1,8,8 or 64."),
            calibration: Optional[Path] = typer.Option(None, help="--model: a .npy of inputs to "
                                                       "calibrate on (instead of --dataset)."),
            profile: str = typer.Option("lmh", help="numeric profile: lmh (LM-H as trained) | "
                                        "loihi-lif (Lava's bit-accurate LIF)")) -> None:
    """Export, validate and quantise a model into an artifact directory."""
    from lmh_deploy.pipeline.compile import compile_model
    from lmh_deploy.pipeline.compile_torch import compile_model_file, parse_shape

    warn = lambda m: console.print(f"[yellow]warning:[/yellow] {m}")  # noqa: E731
    with clean_errors(), spinner(f"compiling {model} for {target}"):
        start = time.perf_counter()
        if model_spec is not None:
            if input_shape is None or timesteps is None:
                raise ValueError("--model needs --input-shape C,H,W and --timesteps T")
            report = compile_model_file(model, model_spec, outdir, model_kwargs=model_kwargs,
                                        input_shape=parse_shape(input_shape),
                                        timesteps=timesteps, dataset=dataset,
                                        calibration=calibration, target=target,
                                        calibration_samples=calibration_samples, profile=profile,
                                        warn=warn)
        else:
            report = compile_model(model, outdir, target=target,
                                   calibration_samples=calibration_samples, dataset=dataset,
                                   timesteps=timesteps, dt=dt, profile=profile, warn=warn)
    table = Table(title=f"compiled {model.name} -> {outdir} ({time.perf_counter() - start:.2f} s, "
                        f"profile {report['profile']['name']})")
    for col in ("layer", "kind", "exp / theta", "max quant. error", "state headroom (bits)"):
        table.add_column(col)
    calib = report.get("calibration", {}).get("layers", {})
    for layer in report["layers"]:
        if layer["kind"] == "dense":
            table.add_row(layer["name"], "dense", str(layer["weight_exp"]),
                          f"{layer['max_weight_error_rel']:.2%} of max|W|", "")
        else:
            head = calib.get(layer["name"], {}).get("headroom_bits")
            table.add_row(layer["name"], "lmh", str(layer["theta"]),
                          f"{layer['max_factor_error']:.1e} (factors)",
                          f"{head:.1f}" if head is not None else "")
    out.print(table)
    if target == "loihi2":
        res = json.loads((outdir / "resources.json").read_text())
        out.print(f"Loihi 2: {res['cores']} cores on {res['chips']} chip(s); see "
                  f"{outdir / 'resources.json'}")


@app.command()
def export(model: Path = typer.Argument(..., help="A checkpoint from lmh-deploy train, or (netx) "
                                                   "a compiled artifact directory."),
           format: str = typer.Option(..., "--format", help="nir | netx"),
           out_path: Path = typer.Option(..., "-o", "--out"),
           dt: float = typer.Option(1e-4, help="NIR: Euler time step in seconds, written into "
                                    "the file (1e-4: snnTorch's import_from_nir assumes it)."),
           lossy: bool = typer.Option(False, "--lossy", help="NIR: approximate a general LM-H "
                                      "net by LIF (drops the dendrite) and print its error."),
           samples: int = typer.Option(100, help="Test samples for measuring the error.")) -> None:
    """Export a LIF-compatible network to NIR (other tools) or lava-dl netx HDF5."""
    from lmh_deploy.frontends.pytorch import export_model
    from lmh_deploy.models.checkpoint import load_checkpoint

    with clean_errors():
        if format not in ("nir", "netx"):
            raise ValueError(f"unknown format {format!r}; supported: nir, netx")
        if model.is_dir():  # a compiled artifact: write exactly its integers
            from lmh_deploy.interop.netx_artifact import artifact_to_netx
            from lmh_deploy.pipeline.compile import load_artifact

            if format != "netx":
                raise ValueError(f"{model}: an artifact directory exports to netx only")
            result = artifact_to_netx(load_artifact(model).quant_graph, out_path)
            out.print(f"wrote {out_path}: {len(result['layers'])} netx layers with the "
                      f"artifact's integers (profile loihi-lif)")
            return
        net, payload = load_checkpoint(model)
        ds = payload["dataset"]
        graph = export_model(net, input_shape=tuple(ds["input_shape"]),
                             x_max=float(ds.get("x_max", 1.0)),
                             timesteps=int(payload["arch_kwargs"].get("timesteps", 4)))
        if format == "netx":
            from lmh_deploy.interop.netx_io import graph_to_netx

            from lmh_deploy.interop.netx_io import netx_usage

            result = graph_to_netx(graph, out_path)
            out.print(f"wrote {out_path}: {len(result.get('layers', []))} netx layers "
                      "(CUBA neurons: reset to zero, see docs/interop.md). Load and run it "
                      "with input_message_bits=8 (netx's default 0 leaves the net silent):")
            out.print(netx_usage(out_path, result), highlight=False, soft_wrap=True)
            return
        from lmh_deploy.interop.nir_export import write_nir
        from lmh_deploy.models.data import load_dataset

        _, test, _ = load_dataset(ds["name"], ds.get("data_dir"), seed=int(ds.get("seed", 0)))
        x = test.tensors[0][:samples].numpy()
        result = write_nir(graph, out_path, dt=dt, allow_lossy=lossy, inputs=x)
        out.print(f"wrote {out_path}: {'exact' if result['exact'] else 'LOSSY approximation'}")
        for name, info in result["nodes"].items():
            if info.get("approximation"):
                out.print(f"  {name}: {info['approximation']}")
        for semantics, err in (result.get("error") or {}).items():
            if isinstance(err, dict) and "spike_disagreement" in err:
                out.print(f"  {semantics} on {len(x)} test samples: "
                          f"{err['spike_disagreement']:.1%} of spikes differ, predictions agree "
                          f"{err['prediction_agreement']:.1%}")


@app.command()
def verify(artifact: Path = typer.Argument(..., help="A directory from lmh-deploy compile."),
           samples: int = typer.Option(100), json_path: Optional[Path] = typer.Option(None, "--json"),
           batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Samples "
                                                    "per mini-batch (default: sized from free "
                                                    "memory)."),
           max_accuracy_drop: Optional[float] = typer.Option(
               None, "--max-accuracy-drop", metavar="PP", help="Fail when fixed-point accuracy "
               "is more than PP percentage points below the source model's.")) -> None:
    """Float model vs fixed-point sim vs Lava fixed_pt on the same samples; fails on any mismatch.

    Under torchrun each rank runs a contiguous shard of the samples; rank 0 reports.
    """
    from contextlib import nullcontext

    from lmh_deploy.pipeline.compile import load_artifact
    from lmh_deploy.pipeline.verify import lava_sim_disagree, verify_artifact
    from lmh_deploy.parallel import distributed_context

    with clean_errors(), distributed_context("cpu") as dctx:
        art = load_artifact(artifact)
        with (spinner(f"running {samples} samples on float, sim and Lava fixed_pt")
              if dctx.is_main else nullcontext()):
            result = verify_artifact(art, samples, batch_size=batch_size,
                                     max_accuracy_drop=max_accuracy_drop)
        if not dctx.is_main:
            return
        _write_json(json_path, result)
        lv, ff = result["lava_vs_sim"], result["float_vs_fixed"]
        out.print(f"Lava vs sim: {lv['mismatched_spikes']} of {lv['spikes_compared']} spikes differ, "
                  f"{lv['state_mismatches']} state and {lv['readout_mismatches']} readout mismatches")
        out.print(f"accuracy: float {ff['accuracy_float']:.4f}, fixed {ff['accuracy_fixed']:.4f}, "
                  f"Lava {ff['accuracy_lava']:.4f}; float/fixed spike agreement "
                  f"{ff['spike_agreement']:.4f}, prediction agreement "
                  f"{ff['prediction_agreement']:.4f} (float = {ff['float_reference']})")
        out.print(f"logits: {lv['logit_mismatches']} of {lv['logits_compared']} differ, "
                  f"{lv['prediction_mismatches']} predictions differ (Lava vs sim)")
        if lava_sim_disagree(result):
            raise CommandFailed("Lava fixed_pt and sim/ disagree (see above)")
        gate = result.get("accuracy_gate")
        if gate is not None and not gate["passed"]:
            raise CommandFailed(f"fixed-point accuracy is {gate['drop_points']:.2f} points below "
                                f"the source model's (--max-accuracy-drop {max_accuracy_drop:g})")


@app.command()
def run(artifact: Path = typer.Argument(...), backend: str = typer.Option("sim", help="sim | lava | loihi2"),
        samples: int = typer.Option(100), json_path: Optional[Path] = typer.Option(None, "--json"),
        inputs: Optional[Path] = typer.Option(None, help="Own inputs: a .npy of (N, *input_shape) "
                                              "floats in [0, x_max] (default: the test split)."),
        labels: Optional[Path] = typer.Option(None, help="A .npy of N integer labels for --inputs."),
        plots_dir: Optional[Path] = typer.Option(None, "--plots", help="Write PNG plots into this folder."),
        html: Optional[Path] = typer.Option(None, "--html", help="Write one self-contained HTML report."),
        sweep: Optional[str] = typer.Option(None, "--sweep", help="T values for the accuracy/energy "
                                            "curve, e.g. 1,2,4,8 (default 1,2,4..4T; 'none' skips)."),
        stream: bool = typer.Option(False, "--stream", help="sim: keep only spike counts, so "
                                    "memory does not grow with T (no raster plot)."),
        device: Optional[str] = typer.Option(None, "--device", help="sim: run on a torch "
                                             "device (cpu, cuda; under torchrun cuda means "
                                             "cuda:LOCAL_RANK), integer-exact; default numpy."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Samples per "
                                                 "mini-batch (default: sized from free memory)."),
        save_spikes: Optional[Path] = typer.Option(None, "--save-spikes", help="Write the integer "
                                                   "input and every spiking layer's (T, N, "
                                                   "neurons) raster to this .npz.")) -> None:
    """Run the deployed model on a backend; report accuracy, spikes, synaptic ops, energy."""
    from contextlib import nullcontext

    from lmh_deploy.pipeline.compile import load_artifact
    from lmh_deploy.semantics import integer as fx
    from lmh_deploy.reports.summary import summarize
    from lmh_deploy.parallel import distributed_context

    # under torchrun each rank runs a contiguous shard of the samples; the records are
    # merged (bit-exact for sim/ and Lava) and rank 0 alone summarises, plots and writes
    with clean_errors(), distributed_context("cpu") as dctx:
        if backend not in ("sim", "lava", "loihi2"):
            raise ValueError(f"unknown backend {backend!r}; supported: sim, lava, loihi2")
        art = load_artifact(artifact)
        if backend == "loihi2":
            from lmh_deploy.passes.loihi2_map import LAVA_LOIHI_HINT, lava_loihi_available

            if not lava_loihi_available():
                raise CommandFailed(LAVA_LOIHI_HINT)
            raise CommandFailed("lava-loihi is installed, but the LMHNeuron Process has CPU "
                                "ProcessModels only; Loihi 2 needs a neuro-core (microcode) "
                                "model of it, built with lava-loihi's tools. Nothing ran.")
        x, y = load_inputs(inputs, labels, art) if inputs else art.dataset_split("test")
        x, y = x[:samples], (y[:samples] if y is not None else None)
        q = art.quant_graph
        x_int = fx.quantize_input(x, q.node("input").scale)
        with (spinner(f"running {len(x)} samples on {backend}") if dctx.is_main
              else nullcontext()):
            start = time.perf_counter()
            from lmh_deploy.pipeline.run import run_backend

            rec = run_backend(q, x_int, art.timesteps, backend, batch_size=batch_size,
                              record_spikes=not stream, device=_rank_device(device))
            seconds = time.perf_counter() - start
        if not dctx.is_main:
            return
        summary = summarize(q, rec, y) | {"backend": backend, "seconds": seconds,
                                          "timesteps": art.timesteps,
                                          "processes": dctx.world_size,
                                          "predictions": rec.predictions.tolist()}
        if save_spikes is not None:
            from lmh_deploy.pipeline.run import save_spike_rasters

            written = save_spike_rasters(save_spikes, x_int, rec, tuple(q.node("input").shape))
            out.print(f"wrote {written}")
        if plots_dir is not None or html is not None:
            from lmh_deploy.reports import plots as P
            from lmh_deploy.pipeline.run import t_sweep
            from lmh_deploy.reports.html import write_html
            from lmh_deploy.backends.torch_ref import run_float

            with spinner("T sweep (sim), float run and plots"):
                t_values = _parse_sweep(sweep, art.timesteps)
                if t_values:  # always on sim/, the bit-exact twin of the Lava model
                    summary["t_sweep"] = t_sweep(q, x_int, y, t_values, batch_size=batch_size)
                    summary["t_sweep_backend"] = "sim"
                model = art.load_model()
                rec_float = run_float(model, x, art.timesteps) if model is not None else None
                with tempfile.TemporaryDirectory(prefix="lmh-plots-") as tmp:
                    images = P.make_plots(summary, rec, plots_dir or tmp,
                                          sweep=summary.get("t_sweep"), rec_float=rec_float)
                    if plots_dir is not None:
                        summary["plots"] = images
                    if html is not None:
                        write_html(summary, html, images=images)
            for target in filter(None, (plots_dir, html)):
                out.print(f"wrote {target}")
        _write_json(json_path, summary)  # after the plots: carries "t_sweep" and "plots"
        _print_summary(summary)


def _rank_device(device: Optional[str]) -> Optional[str]:
    """``cuda`` under torchrun means this process's GPU, ``cuda:LOCAL_RANK``."""
    import os

    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def _parse_sweep(text: Optional[str], timesteps: int) -> list[int]:
    from lmh_deploy.reports.plots import default_t_values

    if text is None:
        return default_t_values(timesteps)
    if text.strip().lower() in ("", "none", "off"):
        return []
    try:
        values = sorted({int(v) for v in text.split(",")})
    except ValueError:
        raise ValueError(f"--sweep {text!r}: expected comma-separated integers such as 1,2,4,8") from None
    if values[0] < 1:
        raise ValueError(f"--sweep {text!r}: inference steps must be >= 1")
    return values


@app.command()
def report(summary_json: Path = typer.Argument(..., help="A --json file written by lmh-deploy run."),
           html: Path = typer.Option(..., "--html", help="Where to write the HTML report.")) -> None:
    """Rebuild the self-contained HTML report from a saved run summary."""
    from lmh_deploy.reports.html import report_from_json

    with clean_errors():
        path = report_from_json(summary_json, html)
    out.print(f"report -> {path}")


def load_inputs(inputs: Path, labels: Optional[Path], art) -> tuple[Any, Any]:
    """User inputs for ``run``: checked against the artifact's input shape, never unpickled."""
    import numpy as np

    def read(path: Path):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable .npy array ({exc})") from None

    x = read(inputs)
    shape = tuple(art.quant_graph.node("input").shape)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"{inputs}: inputs have shape {tuple(x.shape)}, the model expects "
                         f"(N, {', '.join(map(str, shape))})")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{inputs}: inputs contain NaN or inf")
    y = read(labels) if labels else None
    if y is not None and (y.ndim != 1 or len(y) != len(x)):
        raise ValueError(f"{labels}: labels have shape {tuple(y.shape)}, expected ({len(x)},)")
    return x, y


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['backend']}: {summary['samples']} samples, "
                        f"accuracy {summary.get('accuracy', float('nan')):.4f} (per-sample counts)")
    for col in ("layer", "kind", "neurons", "input spikes", "synops", "output spikes",
                "firing rate", "saturations"):
        table.add_column(col, justify="right")
    b = summary["samples"]
    for layer in summary["layers"]:
        spiking = layer["kind"] == "lmh"
        table.add_row(layer["name"], layer["kind"], str(layer["neurons"]),
                      f"{layer['input_spikes'] / b:.1f}", f"{layer['synops_per_sample']:.0f}",
                      f"{layer['spikes_per_sample']:.1f}" if spiking else "-",
                      f"{layer['firing_rate']:.3f}" if spiking else "-",
                      str(layer["saturation_events"]) if spiking else "-")
    out.print(table)
    out.print(f"energy estimate per sample: {summary['energy_joules'] * 1e9:.2f} nJ on Loihi "
              f"(Davies 2018 figures) vs {summary['ann_energy_joules'] * 1e9:.2f} nJ for the "
              f"equivalent ANN (Horowitz 2014): ratio {summary['energy_ratio_ann_over_snn']:.1f}x")


@app.command()
def demo(workdir: Optional[Path] = typer.Option(None, help="Where to write model and artifact."),
         epochs: int = typer.Option(8), timesteps: int = typer.Option(4),
         samples: int = typer.Option(100)) -> None:
    """Train a small LM-H MLP on digits, compile it, run it on Lava and sim, print the report."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="lmh-deploy-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "model.pt"
    artifact = workdir / "build"
    console.rule("1/4 train an LM-H MLP on scikit-learn digits")
    train(dataset="digits", data_dir=None, arch="mlp", neuron="lmh", factors="progressive",
          timesteps=timesteps, epochs=epochs, batch_size=64, lr=0.025, weight_decay=5e-4,
          loss="ce", width_mult=1.0, norm="auto", time_slice=0, qcfs_levels=4, hybrid_from=None,
          device="cpu", amp=False, seed=0, out_path=model, json_path=workdir / "train.json")
    console.rule("2/4 compile for Lava (fixed point)")
    compile(model=model, target="lava-sim", outdir=artifact, calibration_samples=64,
            dataset=None, timesteps=None, dt=None, model_spec=None, model_kwargs=None,
            input_shape=None, calibration=None, profile="lmh")
    console.rule(f"3/4 verify: float vs sim vs Lava fixed_pt on {samples} test samples")
    verify(artifact=artifact, samples=samples, json_path=workdir / "verify.json", batch_size=None,
           max_accuracy_drop=None)
    console.rule("4/4 report (our simulator)")
    run(artifact=artifact, backend="sim", samples=samples, json_path=workdir / "run.json",
        inputs=None, labels=None, plots_dir=workdir / "plots", html=workdir / "report.html",
        sweep=None, stream=False, device=None, batch_size=None, save_spikes=None)
    out.print(f"files in {workdir}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
