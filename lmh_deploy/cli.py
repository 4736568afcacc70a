"""The ``lmh-deploy`` command line: a thin typer layer over :mod:`lmh_deploy.api`.

Each command parses its options, calls one API function and prints the result. Errors
(:class:`_Commands`): a :class:`~lmh_deploy.errors.UserError` is one line and exit 2, a
:class:`~lmh_deploy.errors.CommandFailed` one line and exit 1; anything else is a bug in
lmh-deploy and shows its traceback with a request to report it (exit 1). Ctrl-C (SIGINT) and
SIGTERM end a command through the same cleanup as an error (Lava's workers are killed, no
output is half-written) with one line, ``interrupted; nothing written``, and exit 130 / 143.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperArgument, TyperGroup

from lmh_deploy import api
from lmh_deploy.choices import (
    Arch,
    Backend,
    Dataset,
    Device,
    ExportFormat,
    Factors,
    Loss,
    Neuron,
    Norm,
    Target,
)
from lmh_deploy import options as O
from lmh_deploy.errors import CommandFailed, UserError
from lmh_deploy.pipeline.results import RunResult
from lmh_deploy.files import check_outputs, write_json_atomic
from lmh_deploy.models.job import DEFAULT_JOB as JOB

console = Console(stderr=True)
out = Console(soft_wrap=True)  # sentences unwrapped: piped output greps whole; a terminal wraps them itself
STATE = {"debug": False}
REPORT_BUG = (
    "this is a bug in lmh-deploy, not a problem with your input; please report it "
    "with the traceback above and the command you ran"
)


def _typer_param(param: object) -> Any:
    """typer's parameter classes (help, metavar, type_descriptor), untyped for mypy."""
    return param


def _metavar(param: Any) -> str:
    """What a value looks like in help (``PATH``, ``N``, ``lava-sim|loihi2``), not typer's
    ``<path>`` / ``{model}``: a choice lists its values, a name says what to give."""
    kind = param.type_descriptor  # typer's parameters describe their annotation here
    if kind.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in kind.choices)
    if kind.is_path:
        return "PATH"
    if kind.annotation is int:
        return "N"
    if kind.annotation is float:
        return "X"
    return str(param.name or "value").upper()


class _Terminated(KeyboardInterrupt):
    """SIGTERM as an exception in the main thread, so that cleanup runs as for Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


class _Commands(TyperGroup):
    """Runs every command (also those added later) inside the error policy above, and gives
    every option and argument a metavar that says what to type (:func:`_metavar`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            for param in map(_typer_param, command.params):
                if getattr(param, "is_flag", False) or getattr(param, "count", False) or param.metavar:
                    continue
                if isinstance(param, TyperArgument):
                    # its name (ARTIFACT) says what it is; typer would add "{...}" and "<path>"
                    name = param.metavar = str(param.name).upper()
                    vars(param).update(
                        display_type_rich=lambda ctx: None, _usage_display_name=lambda name=name: name
                    )
                else:
                    param.metavar = _metavar(param)
                    if len(param.metavar) > 30:  # a long choice list goes into the help text
                        param.help = f"{param.help or ''} One of: {param.metavar.replace('|', ', ')}.".strip()
                        param.metavar = str(param.name).upper()

    def invoke(self, ctx: Any) -> Any:  # typer's click Context
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
            return result
        except typer.TyperException as exc:
            # a bad option value or a missing argument of a command: one line, as every refusal
            if getattr(exc, "exit_code", None) != 2 or not hasattr(exc, "format_message") or STATE["debug"]:
                raise
            console.print(
                f"[red]error:[/red] {exc.format_message()} (lmh-deploy {ctx.invoked_subcommand} --help)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (_Terminated)
            if STATE["debug"]:
                raise
            console.print("interrupted; nothing written", highlight=False)
            raise typer.Exit(143 if isinstance(exc, _Terminated) else 130) from None
        except BrokenPipeError:  # the reader closed the pipe (``| head``): stop without a word
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None  # 128 + SIGPIPE, as a tool killed by the signal reports
        except CommandFailed as exc:
            if STATE["debug"]:
                raise
            console.print(f"[red]failed:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except UserError as exc:
            if STATE["debug"]:
                raise
            console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception:
            if STATE["debug"]:
                raise
            console.print(traceback.format_exc(), highlight=False, soft_wrap=True, markup=False)
            console.print(f"[red]internal error:[/red] {REPORT_BUG}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Compile LM-H spiking networks from PyTorch to Lava fixed point "
    "(Lava CPU == sim/, bit for bit; Loihi 2 silicon not verified).",
)


@app.callback()
def main(
    debug: bool = typer.Option(
        False, "--debug", help="Raise errors with their traceback instead of one line."
    ),
) -> None:
    """lmh-deploy."""
    STATE["debug"] = debug


def option(opt: O.Option, default: Any = ..., **extra: Any) -> Any:
    """The typer option of a shared option (:mod:`lmh_deploy.options`), declared there once;
    ``default`` overrides its default for one command."""
    value = opt.default if default is ... else default
    if isinstance(value, bool):  # --flag/--no-flag
        return typer.Option(value, f"{opt.flag}/--no-{opt.flag[2:]}", help=opt.help, **extra)
    return typer.Option(value, opt.flag, help=opt.help, metavar=opt.metavar, **extra)


def with_defaults(command: Callable[..., Any], **given: Any) -> Any:
    """Call another command as its command line would: its own default for every option not given."""
    defaults = {
        name: getattr(param.default, "default", param.default)
        for name, param in inspect.signature(command).parameters.items()
        if name not in given
    }
    return command(**defaults, **given)


def forward(function: Callable[..., Any], options: dict[str, Any], **given: Any) -> Any:
    """Call the API's ``function`` with each of its parameters that the command has, by name
    (a command's options are its API call's, plus what the CLI alone does: ``--json``)."""
    names = inspect.signature(function).parameters
    return function(**{**{k: v for k, v in options.items() if k in names}, **given})


@contextmanager
def spinner(text: str) -> Iterator[Any]:
    """A rich spinner for anything that takes more than a moment; yields ``update(text)``."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(text, total=None)
        yield lambda new: progress.update(task, description=new)


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        write_json_atomic(path, data)


@app.command()
def train(
    dataset: Dataset = typer.Option(Dataset(JOB.dataset)),
    data_dir: Path | None = typer.Option(JOB.data_dir, help="Folder of on-disk datasets."),
    arch: Arch = typer.Option(Arch(JOB.arch)),
    neuron: Neuron = typer.Option(Neuron(JOB.neuron), help="qcfs: an ANN, for --hybrid-from."),
    factors: Factors = typer.Option(Factors(JOB.factors)),
    timesteps: int | None = typer.Option(
        JOB.timesteps, help="Steps per sample (default 4; event datasets: their frames per sample)."
    ),
    epochs: int = typer.Option(JOB.epochs),
    batch_size: int = typer.Option(JOB.batch_size),
    lr: float = typer.Option(JOB.lr),
    weight_decay: float = typer.Option(JOB.weight_decay),
    loss: Loss = typer.Option(Loss(JOB.loss)),
    width_mult: float = typer.Option(JOB.width_mult),
    norm: Norm = typer.Option(Norm(JOB.norm), help="auto: none for mlp, bn otherwise."),
    time_slice: int = typer.Option(JOB.time_slice, help="Online training: k steps per slice (0: BPTT)."),
    qcfs_levels: int = typer.Option(JOB.qcfs_levels, help="L of the QCFS activation."),
    lif_decay: float = typer.Option(JOB.lif_decay, help="lam_s of --neuron lif."),
    hybrid_from: Path | None = typer.Option(
        JOB.hybrid_from, help="A QCFS ANN checkpoint to convert to LM-H and fine-tune."
    ),
    device: Device = typer.Option(
        Device(JOB.device), help="Under torchrun: one GPU per process, cuda:LOCAL_RANK."
    ),
    amp: bool = typer.Option(JOB.amp, "--amp", help="Mixed precision (autocast + GradScaler); CUDA only."),
    seed: int = typer.Option(JOB.seed),
    out_path: Path = typer.Option(Path(JOB.out), "--out"),
    json_path: Path | None = typer.Option(JOB.json_path, "--json"),
    train_samples: int = typer.Option(
        JOB.train_samples,
        help="Train on the first N samples of the training split only (0: all); a quick run.",
    ),
) -> None:
    """Train a spiking network (or a QCFS ANN) and write a self-describing checkpoint.

    Under torchrun (e.g. ``torchrun --nproc-per-node=2 $(which lmh-deploy) train ...``) the
    job trains with DistributedDataParallel; --batch-size is the global batch; only rank 0
    writes and reports (docs/distributed.md).
    """
    options = dict(locals())  # every option goes to the API as given
    from lmh_deploy.parallel import is_main_process

    # outputs first: a refusal is one line, before the progress bar draws anything
    check_outputs(
        {"--out": (out_path, "file"), "--json": (json_path, "file")}, inputs=[hybrid_from, data_dir]
    )
    main_rank = is_main_process()  # torchrun: RANK 0 (True without torchrun)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} epochs"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not main_rank,
    ) as progress:
        task = progress.add_task(f"training {arch}/{neuron} on {dataset}", total=epochs)

        def on_epoch(epoch: int, total: int, acc: float) -> None:
            progress.update(
                task, completed=epoch, description=f"training {arch}/{neuron} on {dataset} (acc {acc:.3f})"
            )

        metrics = forward(api.train, options, out=out_path, progress=on_epoch)
    if main_rank and metrics.get("warning"):
        console.print(f"[yellow]warning:[/yellow] {metrics['warning']}", soft_wrap=True)
    if main_rank:
        out.print(
            f"trained: test accuracy {metrics['accuracy']:.4f} after {epochs} epochs "
            f"({metrics['seconds_per_epoch']:.2f} s/epoch) -> {out_path}"
        )


@app.command()
def compile(
    model: Path = typer.Argument(
        ..., help="A checkpoint from lmh-deploy train, or a LIF/CubaLIF .nir file made elsewhere."
    ),
    target: Target = typer.Option(Target.LAVA_SIM),
    outdir: Path = typer.Option(Path("build"), "-o", "--outdir"),
    calibration_samples: int = option(O.CALIBRATION_SAMPLES),
    dataset: Dataset | None = typer.Option(
        None, help="NIR input only: dataset to calibrate and evaluate on."
    ),
    timesteps: int | None = option(O.TIMESTEPS),
    dt: float | None = option(O.DT),
    model_spec: str | None = typer.Option(
        None,
        "--model",
        metavar="FILE.py:FACTORY",
        help="Your own PyTorch model: FILE.py:FACTORY; MODEL is then its state_dict (docs/interop.md).",
    ),
    model_kwargs: str | None = typer.Option(
        None, metavar="JSON", help="--model: JSON keyword arguments for FACTORY."
    ),
    input_shape: str | None = typer.Option(
        None, metavar="C,H,W", help="--model: one sample's shape, e.g. 1,8,8 or 64."
    ),
    calibration: Path | None = typer.Option(
        None,
        help="a .npy of inputs (N, *shape) to calibrate on (instead of --dataset); negative values "
        "(normalised images) are sent as signed inputs (16-bit messages under --profile lmh).",
    ),
    profile: str | None = option(O.PROFILE),
    input_bits: int | None = option(O.INPUT_BITS),
    weight_bits: str = option(O.WEIGHT_BITS),
    bias_correction: bool = option(O.BIAS_CORRECTION),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace an -o folder that is not an lmh-deploy artifact (never a file, never an input).",
    ),
) -> None:
    """Export, validate and quantise a model into an artifact directory."""
    start = time.perf_counter()
    with spinner(f"compiling {model} for {target}"):
        report = api.compile(
            model,
            outdir,
            target=target,
            calibration_samples=calibration_samples,
            dataset=dataset,
            timesteps=timesteps,
            dt=dt,
            model_factory=model_spec,
            model_kwargs=model_kwargs,
            input_shape=input_shape,
            calibration=calibration,
            profile=profile,
            bias_correction=bias_correction,
            input_bits=input_bits,
            weight_bits=weight_bits,
            force=force,
            warn=lambda m: console.print(f"[yellow]warning:[/yellow] {m}"),
        )
    _print_compile(
        report,
        f"compiled {model.name} -> {outdir} "
        f"({time.perf_counter() - start:.2f} s, "
        f"profile {report['profile']['name']})",
    )
    if report.get("profile_choice"):
        out.print(report["profile_choice"])
    fine = [row["fine_path"] for row in report["layers"] if row.get("fine_path")]
    if report.get(O.WEIGHT_BITS_NOTE):
        out.print(report[O.WEIGHT_BITS_NOTE])
    if fine:
        out.print(
            f"--weight-bits {report['weight_bits']}: {len(fine)} synapse paths split into two 8-bit "
            f"halves (about 15-bit weights, twice the synapses)"
        )
    if report.get("dt"):
        out.print(
            f"NIR time constants read with dt = {report['dt']['seconds']:g} s "
            f"({report['dt']['origin']}); change it with --dt SECONDS"
        )
    if target == Target.LOIHI2:
        res = json.loads((outdir / "resources.json").read_text())
        out.print(f"Loihi 2: {res['cores']} cores on {res['chips']} chip(s); see {outdir / 'resources.json'}")


def _print_compile(report: dict[str, Any], title: str) -> None:
    from lmh_deploy.deployment import compile_rows

    rows = compile_rows(report)
    table = Table(title=title)
    for col in rows[0] if rows else ():
        table.add_column(col)
    for row in rows:
        table.add_row(*row.values())
    out.print(table)
    from lmh_deploy.passes.quant_report import weight_error_notes

    for note in weight_error_notes(report):
        out.print(f"note: {note}", highlight=False)


@app.command()
def export(
    model: Path = typer.Argument(
        ..., help="A checkpoint from lmh-deploy train, or (netx) a compiled artifact directory."
    ),
    format: ExportFormat = typer.Option(..., "--format"),
    out_path: Path = typer.Option(..., "-o", "--out"),
    dt: float | None = option(O.DT),
    samples: int = option(O.EXPORT_SAMPLES),
) -> None:
    """Export a LIF-compatible network to NIR (other tools) or lava-dl netx HDF5."""
    result = api.export(model, out_path, format=format, dt=dt, samples=samples)
    if format == ExportFormat.NETX:
        from lmh_deploy.interop.netx_artifact import artifact_netx_usage

        convs = f" ({len(result['conv_layers'])} conv)" if result.get("conv_layers") else ""
        source = (
            "the artifact's integers (profile loihi-lif)"
            if result.get("from_artifact")
            else "the integers `compile --profile loihi-lif` gives it"
        )
        out.print(
            f"wrote {out_path}: {len(result['layers'])} netx layers{convs} with {source}. "
            f"Load it with input_message_bits={result['input_message_bits']} "
            f"(netx's default 0 leaves the net silent) and "
            f"netx's per-sample reset:"
        )
        out.print(artifact_netx_usage(out_path, result), highlight=False, soft_wrap=True)
        return
    if result["exact"]:
        out.print(f"wrote {out_path}: exact (every layer is a NIR neuron)")
    else:
        out.print(
            f"wrote {out_path}: NIR has no LM-H neuron; other NIR tools run the layers below as "
            f"their nearest LIF, lmh-deploy reads the exact layers back (lmh_factors metadata)"
        )
    # norse's from_nir steps with its own default dt (1e-3) unless told the file's
    out.print(
        f"  dt = {result['dt']:g} s (metadata['dt']; snnTorch's import_from_nir assumes 1e-4); in "
        f"norse: norse.torch.from_nir(nir.read('{out_path}'), dt={result['dt']:g}) (its default dt, "
        f"1e-3, runs another network)",
        highlight=False,
    )
    for name, info in result["nodes"].items():
        if info.get("approximation"):
            out.print(f"  {name}: {info['approximation']}")
    for semantics, err in (result.get("error") or {}).items():
        if isinstance(err, dict) and "spike_disagreement" in err:
            out.print(
                f"  {semantics} on {result['samples']} test samples: "
                f"{err['spike_disagreement']:.1%} of spikes differ, predictions agree "
                f"{err['prediction_agreement']:.1%}"
            )
    if result.get("sums"):
        from lmh_deploy.interop.nir_export import residual_nir_note

        out.print(f"  {residual_nir_note(len(result['sums']), result['depth_first_order_runs'])}")


@app.command()
def verify(
    artifact: Path = typer.Argument(..., help="A directory from lmh-deploy compile."),
    samples: int | None = option(O.SAMPLES),
    inputs: Path | None = option(O.INPUTS),
    labels: Path | None = option(O.LABELS),
    lava_samples: int | None = option(O.LAVA_SAMPLES),
    json_path: Path | None = typer.Option(None, "--json"),
    batch_size: int | None = option(O.BATCH_SIZE),
    max_accuracy_drop: float | None = option(O.MAX_ACCURACY_DROP),
    lava_conv: str = option(O.LAVA_CONV),
) -> None:
    """Float source vs fixed-point sim on every sample, Lava fixed_pt vs sim on the first
    --lava-samples; fails on any Lava/sim mismatch.

    Under torchrun each rank runs a contiguous shard of the samples; rank 0 reports.
    """
    options = dict(locals())
    check_outputs({"--json": (json_path, "file")}, inputs=[artifact, inputs, labels])
    with spinner("verifying: float vs sim on every sample, Lava vs sim on the first --lava-samples"):
        result = forward(api.verify, options)
    if result is None:  # a torchrun rank other than 0
        return
    _write_json(json_path, result.to_dict())
    _print_verify(result.to_dict())
    if not result.ok:
        raise CommandFailed("; ".join(result.failures))


def _fraction(value: float | None) -> str:
    return "n/a (no labels)" if value is None else f"{value:.4f}"


def _print_verify(result: dict[str, Any]) -> None:
    lv, ff, ran = result["lava_vs_sim"], result["float_vs_fixed"], result["ran"]
    out.print(f"float vs fixed: {ran['float_vs_fixed']}")
    out.print(
        f"  accuracy: float {_fraction(ff['accuracy_float'])}, fixed {_fraction(ff['accuracy_fixed'])}; "
        f"float/fixed spike agreement {ff['spike_agreement']:.4f}, prediction agreement "
        f"{ff['prediction_agreement']:.4f}"
        + (
            f" ({ff['disagreements_tied_in_source']} of the {ff['disagreements']} that differ tie "
            "for the top in the source itself)"
            if ff.get("disagreements_tied_in_source")
            else ""
        )
    )
    out.print(f"Lava vs sim: {ran['lava_vs_sim']}")
    if lv["samples"]:
        out.print(
            f"  {lv['mismatched_spikes']} of {lv['spikes_compared']} spikes differ, "
            f"{lv['state_mismatches']} state and {lv['readout_mismatches']} readout mismatches; "
            f"logits: {lv['logit_mismatches']} of {lv['logits_compared']} differ, "
            f"{lv['prediction_mismatches']} predictions differ; Lava accuracy "
            f"{_fraction(ff['accuracy_lava'])}"
        )
    if result.get("advice"):
        out.print(f"note: {result['advice']}")


@app.command()
def run(
    artifact: Path = typer.Argument(...),
    backend: Backend = typer.Option(Backend.SIM),
    samples: int | None = option(O.SAMPLES),
    json_path: Path | None = typer.Option(None, "--json"),
    inputs: Path | None = option(O.INPUTS),
    labels: Path | None = option(O.LABELS),
    plots_dir: Path | None = typer.Option(None, "--plots", help="Write PNG plots into this folder."),
    html: Path | None = typer.Option(None, "--html", help="Write one self-contained HTML report."),
    sweep: str | None = typer.Option(
        None,
        "--sweep",
        help="T values for the accuracy/energy curve, e.g. 1,2,4,8 (default 1,2,4..4T; 'none' skips).",
    ),
    stream: bool = typer.Option(
        False,
        "--stream",
        help="sim: keep only spike counts, so memory does not grow with T (no raster plot).",
    ),
    device: Device | None = typer.Option(
        None,
        "--device",
        help="sim: run on a torch "
        "device, integer-exact (under torchrun cuda means "
        "cuda:LOCAL_RANK); default numpy.",
    ),
    batch_size: int | None = option(O.BATCH_SIZE),
    save_spikes: Path | None = typer.Option(
        None,
        "--save-spikes",
        help="Write the integer input and every spiking layer's (T, N, neurons) raster to this .npz.",
    ),
    lava_conv: str = option(O.LAVA_CONV),
) -> None:
    """Run the deployed model on a backend; report accuracy, spikes, synaptic ops, energy."""
    options = dict(locals())
    check_outputs(
        {
            "--json": (json_path, "file"),
            "--plots": (plots_dir, "folder"),
            "--html": (html, "file"),
            "--save-spikes": (save_spikes, "file"),
        },
        inputs=[artifact, inputs, labels],
    )
    with spinner(f"running {samples or 'the'} samples on {backend}") as status:
        result = forward(api.run, options, device=device.value if device else None, status=status)
    if result is None:  # a torchrun rank other than 0
        return
    for target in filter(None, (save_spikes, plots_dir, html)):
        out.print(f"wrote {target}")
    _write_json(json_path, result.to_dict())  # after the plots: carries "t_sweep" and "plots"
    _print_summary(result)


@app.command()
def report(
    summary_json: Path = typer.Argument(..., help="A --json file written by lmh-deploy run."),
    html: Path = typer.Option(..., "--html", help="Where to write the HTML report."),
) -> None:
    """Rebuild the self-contained HTML report from a saved run summary."""
    out.print(f"report -> {api.report(summary_json, html)}")


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="A --json file of lmh-deploy run (A)."),
    run_b: Path = typer.Argument(..., help="Another one (B), e.g. the same net with LIF."),
    html: Path | None = typer.Option(
        None, "--html", help="Also write a self-contained HTML page with plots."
    ),
) -> None:
    """Two deployments side by side: accuracy, spikes, synaptic ops, energy (total, per layer)."""
    check_outputs({"--html": (html, "file")}, inputs=[run_a, run_b])
    from lmh_deploy.reports.compare_text import print_comparison

    comparison = api.compare(run_a, run_b, html=html)
    print_comparison(comparison, out)
    if html is not None:
        out.print(f"wrote {comparison['html']}")


def _print_summary(result: RunResult) -> None:
    table = Table(
        title=f"{result.backend}: {result.samples} samples, accuracy "
        f"{result.accuracy if result.accuracy is not None else float('nan'):.4f} (per-sample counts)"
    )
    for col in (
        "layer",
        "kind",
        "neurons",
        "input spikes",
        "synops",
        "output spikes",
        "firing rate",
        "saturations",
    ):
        table.add_column(col, justify="right")
    b = result.samples
    for layer in result.layers:
        spiking = layer["kind"] == "lmh"
        table.add_row(
            layer["name"],
            layer["kind"],
            str(layer["neurons"]),
            f"{layer['input_spikes'] / b:.1f}",
            f"{layer['synops_per_sample']:.0f}",
            f"{layer['spikes_per_sample']:.1f}" if spiking else "-",
            f"{layer['firing_rate']:.3f}" if spiking else "-",
            str(layer["saturation_events"]) if spiking else "-",
        )
    out.print(table)
    from lmh_deploy.reports.summary import energy_sentence

    out.print(energy_sentence(result.to_dict()))


@app.command()
def demo(
    workdir: Path | None = typer.Option(None, help="Where to write model and artifact."),
    epochs: int = typer.Option(JOB.epochs),
    timesteps: int | None = typer.Option(JOB.timesteps),
    samples: int = typer.Option(100),
) -> None:
    """Train a small LM-H MLP on digits, compile it, run it on Lava and sim, print the report."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="lmh-deploy-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "model.pt"
    artifact = workdir / "build"
    console.rule("1/4 train an LM-H MLP on scikit-learn digits")
    with_defaults(train, out_path=model, json_path=workdir / "train.json", epochs=epochs, timesteps=timesteps)
    console.rule("2/4 compile for Lava (fixed point)")
    with_defaults(compile, model=model, target=Target.LAVA_SIM, outdir=artifact)
    console.rule(f"3/4 verify: float vs sim vs Lava fixed_pt on {samples} test samples")
    with_defaults(verify, artifact=artifact, samples=samples, json_path=workdir / "verify.json")
    console.rule("4/4 report (our simulator)")
    run_files = {
        "json_path": workdir / "run.json",
        "plots_dir": workdir / "plots",
        "html": workdir / "report.html",
    }
    with_defaults(run, artifact=artifact, backend=Backend.SIM, samples=samples, **run_files)
    out.print(f"files in {workdir}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
