"""Every option shared by commands, declared once: its flag, default, metavar, help and check.

The CLI builds its typer options from these (:func:`lmh_deploy.cli.option`), the API takes
their defaults, and the pipeline checks values with :meth:`Option.check` (one
:class:`~lmh_deploy.errors.InputError` naming the flag): ``verify_path``, ``run_artifact``
and ``export_checkpoint`` check their options, outputs and artifact first, before anything
heavy is imported, and the API passes the values on unchecked; ``compile``'s are checked by
:func:`lmh_deploy.api.compile` alone (a module and a file start there, before torch loads), and
the pipeline takes them as checked. ``tests/test_options.py``
checks that the CLI and the API agree with this table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from dataclasses import dataclass
from typing import Any

from lmh_deploy.bounds import check_float, check_int, check_samples, check_timesteps
from lmh_deploy.choices import LavaConv, choice
from lmh_deploy.errors import InputError

#: The Euler step snnTorch's ``import_from_nir`` assumes (seconds).
NIR_DEFAULT_DT = 1e-4


@dataclass(frozen=True)
class Option:
    """One option: ``name`` (the Python keyword), ``flag`` (the CLI's), ``default``,
    ``metavar``, ``help`` and the function that checks a value (``None`` always passes)."""

    name: str
    flag: str
    default: Any
    help: str
    metavar: str | None = None
    checker: Callable[[Any, str], Any] | None = None

    def check(self, value: Any) -> Any:
        """``value`` checked and normalised (``None`` passes: "not given")."""
        if value is None or self.checker is None:
            return value
        return self.checker(value, self.flag)


def _dt(value: Any, flag: str) -> float:
    return check_float(flag, value, lo=0.0, lo_open=True, hi=1.0)


def _drop(value: Any, flag: str) -> float:
    return check_float(flag, value, lo=-100.0, hi=100.0)


def _count(lo: int) -> Callable[[Any, str], int]:
    return lambda value, flag: check_samples(value, flag, lo=lo)


def _timesteps(value: Any, flag: str) -> int:
    return check_timesteps(value, flag)


DT = Option(
    "dt",
    "--dt",
    None,
    "NIR: Euler step in seconds (compile: default the file's metadata dt; export: written into "
    f"the file, default {NIR_DEFAULT_DT:g}, what snnTorch's import_from_nir assumes).",
    "SECONDS",
    _dt,
)
TIMESTEPS = Option("timesteps", "--timesteps", None, "Steps per sample.", "T", _timesteps)
SAMPLES = Option(
    "samples",
    "--samples",
    None,
    "Samples to use (default: 100 of the test split, or all of --inputs).",
    "N",
    _count(1),
)
LAVA_SAMPLES = Option(
    "lava_samples",
    "--lava-samples",
    None,
    "Run Lava (== sim/ check) on the first K samples only; 0: none. Default: as many as fit "
    "12M neuron-steps (all samples of a small net; 15 of a CIFAR ResNet-20, ~1.5 min); "
    "none where Lava's weight matrices would not fit the free memory (the output says so).",
    "K",
    _count(0),
)
LAVA_CONV = Option(
    "lava_conv",
    "--lava-conv",
    "auto",
    "Lava: which convolutions run on Lava's Conv (kernel only; slower per step) instead of a "
    "Sparse matrix, among those it computes exactly. auto: Sparse while the run's estimated "
    "memory fits min(4 GiB, half the free memory), Conv beyond it for those saving the most; "
    "always; never. Results are the same bit for bit.",
    "auto|always|never",
    lambda value, flag: choice(LavaConv, value, flag).value,
)
BATCH_SIZE = Option(
    "batch_size",
    "--batch-size",
    None,
    "Samples per mini-batch (default: sized from free memory).",
    "N",
    _count(1),
)
CALIBRATION_SAMPLES = Option(
    "calibration_samples",
    "--calibration-samples",
    64,
    "Calibration inputs to measure the state ranges on.",
    "N",
    _count(0),
)
PROFILE = Option(
    "profile",
    "--profile",
    None,
    "Numeric profile: lmh (LM-H as trained) | loihi-lif (Lava's bit-accurate LIF) | cuba "
    "(lmh with synaptic current decays up to 4095/4096: rockpool LIFTorch, norse LIFCell; and "
    "membrane decays down to 0: SpikingJelly tau < 2, snnTorch beta < 0.5). Default: lmh, or "
    "cuba where only it holds a layer's current or membrane decay (the summary says so).",
    "lmh|loihi-lif|cuba",
)
#: Widest graded input message: semantics.integer.INPUT_BITS_MAX (Lava's 24-bit graded spike
#: payload), repeated here because options come before semantics (tests/test_options.py).
INPUT_BITS_MAX = 24
INPUT_BITS = Option(
    "input_bits",
    "--input-bits",
    None,
    "Width of the graded input messages, 1..24 bits (default: 8 for inputs >= 0, 16 for signed "
    "inputs under profile lmh, 8 under loihi-lif; docs/fixed-point.md §7).",
    "N",
    lambda value, flag: check_int(flag, value, lo=1, hi=INPUT_BITS_MAX),
)


#: ``--weight-bits auto`` (the default): 8 bits, or the split where 8 falls short on the
#: calibration inputs (:func:`lmh_deploy.pipeline.weight_choice.choose_weight_bits`)
AUTO = "auto"
#: The report key of the one line ``compile`` prints about the ``auto`` choice; not saved in
#: the artifact (its compile_report.json stays what ``--weight-bits 8`` writes).
WEIGHT_BITS_NOTE = "weight_bits_note"


def _weight_bits(value: object, flag: str) -> int | str:
    """``auto``, 8 or 16, else an InputError naming the flag."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if not text.isdigit():
            raise InputError(f"{flag}: must be auto, 8 or 16, got {value!r}")
        value = int(text)
    bits = check_int(flag, value, lo=8, hi=16)
    if bits not in (8, 16):
        raise InputError(f"{flag}: must be auto, 8 or 16, got {bits}")
    return bits


WEIGHT_BITS = Option(
    "weight_bits",
    "--weight-bits",
    AUTO,
    "Weight mantissa: 8 (one 8-bit synapse per weight, Loihi 2's width), 16 (each weight split "
    "across two 8-bit synapses at exponents e and e - 8, about 15 bits, twice the synapses: for "
    "deep nets whose 8-bit rounding compounds over the layers; docs/fixed-point.md §5) or auto "
    "(8, unless the 8-bit net's predictions agree with the source's on fewer than 98 % of the "
    "calibration inputs and 16 agrees on more; compile says what it chose and why).",
    "auto|8|16",
    _weight_bits,
)
BIAS_CORRECTION = Option(
    "bias_correction",
    "--bias-correction",
    True,
    "Take each layer's mean weight-rounding current on the calibration inputs off its bias.",
)
MAX_ACCURACY_DROP = Option(
    "max_accuracy_drop",
    "--max-accuracy-drop",
    None,
    "Fail when fixed-point accuracy is more than PP percentage points below the source model's.",
    "PP",
    _drop,
)
EXPORT_SAMPLES = Option(
    "samples", "--samples", 100, "export: test samples to measure a NIR file's LIF layers on.", "N", _count(1)
)
INPUTS = Option(
    "inputs",
    "--inputs",
    None,
    "Own inputs instead of the test split: a .npy of (N, *input_shape) or time-varying frames "
    "(T, N, *input_shape), the shape the network was compiled for.",
    "X.npy",
)
LABELS = Option(
    "labels",
    "--labels",
    None,
    "A .npy of N integer labels for --inputs (optional for verify: agreement needs none).",
    "Y.npy",
)

ALL = (
    DT,
    TIMESTEPS,
    SAMPLES,
    EXPORT_SAMPLES,
    LAVA_SAMPLES,
    LAVA_CONV,
    BATCH_SIZE,
    CALIBRATION_SAMPLES,
    PROFILE,
    INPUT_BITS,
    WEIGHT_BITS,
    BIAS_CORRECTION,
    MAX_ACCURACY_DROP,
    INPUTS,
    LABELS,
)


def check_sweep(sweep: str | None, plots_dir: str | Path | None, html: str | Path | None) -> None:
    """``--sweep`` draws a curve into ``--plots`` or ``--html``; alone it would do nothing."""
    if sweep is not None and sweep.strip().lower() != "none" and not (plots_dir or html):
        raise InputError("--sweep draws its curve into --plots or --html: add one of them, or drop --sweep")
