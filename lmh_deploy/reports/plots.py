"""Figures for a run: spike rasters, firing rates, accuracy/energy against T, float vs fixed spikes.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot,
no global figure state, no display needed. PNGs are written atomically (temp file + rename).
The ``*_figure`` functions return the figure itself so that callers (and tests) can inspect
what was drawn; the plain names write the PNG and return its path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

from lmh_deploy.files import atomic_write
from lmh_deploy.backends.record import RunRecord, spike_agreement_by_layer
from lmh_deploy.reports.summary import energy_unit

DPI = 130
#: Readable defaults for every figure in this module (applied locally, never globally).
STYLE: Any = {  # rc parameters (matplotlib types the keys as literals)
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "figure.titlesize": 13,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
}
BLUE, ORANGE, GREY, RED = "#1f5fa8", "#d9731a", "#7a7a7a", "#c0392b"

#: File names :func:`make_plots` writes, by plot name.
PLOT_FILES = {
    "spike_raster": "spike_raster.png",
    "firing_rates": "firing_rates.png",
    "accuracy_energy_vs_T": "accuracy_energy_vs_T.png",
    "spike_agreement": "spike_agreement.png",
}


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically; creates the parent folder."""
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return path


# --------------------------------------------------------------------------- spike raster


def raster_data(rec: RunRecord, sample: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per LM-H layer, ``(steps, neurons)`` of every spike of ``sample``; steps are 1-based."""
    if not rec.spikes:
        raise ValueError("the run record holds no spikes (no LM-H layer was recorded)")
    batch = next(iter(rec.spikes.values())).shape[1]
    if not -batch <= sample < batch:
        raise ValueError(f"sample {sample} is out of range: the run has {batch} samples")
    out = {}
    for name, s in rec.spikes.items():
        steps, neurons = np.nonzero(s[:, sample, :])  # s is (T, B, n)
        out[name] = (steps + 1, neurons)
    return out


def raster_figure(rec: RunRecord, sample: int = 0) -> Figure:
    """One panel per LM-H layer (input side on top): neuron index against step for ``sample``.

    Panel heights follow the layer sizes (with a floor, so small layers stay visible); each
    spike is a square sized to fill its (step, neuron) cell when the grid is coarse.
    """
    data = raster_data(rec, sample)
    names = list(data)
    steps_total = next(iter(rec.spikes.values())).shape[0]
    sizes = [rec.spikes[n].shape[2] for n in names]
    ratios = [max(s, 0.25 * max(sizes)) for s in sizes]
    height = min(11.0, 1.3 + 1.9 * len(names) + 0.004 * sum(sizes))
    width = 9.0
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(len(names), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": ratios})[
            :, 0
        ]
        plot_h_pt = (height - 1.1) * 72 / sum(ratios)
        plot_w_pt = (width - 2.2) * 72
        for ax, name, ratio, n in zip(axes, names, ratios, sizes):
            steps, neurons = data[name]
            # each spike fills most of its (step, neuron) cell: a wide bar when T is small
            cell_h = ratio * plot_h_pt / n
            cell_w = plot_w_pt / steps_total
            w, h = max(1.0, 0.75 * cell_w), min(max(0.8, 0.8 * cell_h), 0.75 * cell_w)
            bar = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2), (-w / 2, -h / 2)]
            ax.scatter(steps, neurons, s=max(w, h) ** 2, marker=bar, c=BLUE, linewidths=0, label=name)
            ax.set_ylim(-0.5, n - 0.5)
            ax.invert_yaxis()
            ax.yaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            ax.set_ylabel(f"{name}\nneuron")
            count = len(steps)
            rate = count / max(n * steps_total, 1)
            ax.set_title(
                f"{name}: {n} neurons, {count} spikes (rate {rate:.3f})",
                loc="left",
                fontsize=10,
                color="#333333",
            )
        axes[-1].set_xlim(0.5, steps_total + 0.5)
        axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(steps_total, 12)))
        axes[-1].set_xlabel("inference step t")
        pred = int(rec.predictions[sample]) if rec.logits.size else None
        suffix = f", predicted class {pred}" if pred is not None else ""
        fig.suptitle(f"Spike raster of sample {sample}{suffix} (T = {steps_total} steps)")
    return fig


def spike_raster(rec: RunRecord, sample: int, path: str | Path) -> Path:
    """Raster of every LM-H layer for one sample (neuron index vs step, layers stacked)."""
    return _save(raster_figure(rec, sample), path)


# --------------------------------------------------------------------------- firing rates


def _spiking_layers(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [layer for layer in summary.get("layers", []) if "firing_rate" in layer]


def _bar_figure(bars: int, empty_text: str):
    """A figure sized for ``bars`` per-layer bars; with none, an axis-less note instead."""
    fig = Figure(figsize=(max(5.5, 1.1 * bars + 2.5), 4.2), layout="constrained")
    # room around the axes labels: a two-line y label must not touch the image edge
    engine = fig.get_layout_engine()
    assert isinstance(engine, ConstrainedLayoutEngine)  # layout="constrained" above
    engine.set(w_pad=0.12, h_pad=0.08)
    ax = fig.subplots()
    if not bars:
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    return fig, ax


def firing_rates_figure(summary: dict[str, Any]) -> Figure:
    """Bar per LM-H layer: spikes per neuron per step, averaged over the run's samples."""
    layers = _spiking_layers(summary)
    with matplotlib.rc_context(STYLE):
        fig, ax = _bar_figure(len(layers), "no spiking (LM-H) layers in this run")
        if layers:
            rates = [layer["firing_rate"] for layer in layers]
            x = np.arange(len(layers))
            bars = ax.bar(x, rates, color=BLUE, width=0.6)
            ax.bar_label(bars, labels=[f"{r:.3f}" for r in rates], padding=3, fontsize=10)
            ax.set_xticks(x, [f"{layer['name']}\n{layer['neurons']} neurons" for layer in layers])
            ax.set_ylim(0, max(max(rates) * 1.18, 0.05))
            ax.set_ylabel("firing rate (spikes per neuron per step)")
            ax.grid(True, axis="y")
            for xi, layer in zip(x, layers):
                if layer.get("saturation_events"):
                    ax.annotate(
                        f"{layer['saturation_events']} saturations",
                        (xi, 0),
                        xytext=(0, 4),
                        textcoords="offset points",
                        ha="center",
                        color=RED,
                        fontsize=9,
                    )
        where = f" on {summary['backend']}" if summary.get("backend") else ""
        fig.suptitle(
            f"Firing rate per layer{where} ({summary.get('samples', '?')} samples, "
            f"T = {summary.get('timesteps', '?')})"
        )
    return fig


def firing_rates(summary: dict[str, Any], path: str | Path) -> Path:
    """Bar chart of the firing rate of every LM-H layer of a run summary."""
    return _save(firing_rates_figure(summary), path)


# --------------------------------------------------------------------------- T sweep


def default_t_values(timesteps: int, *, most: int = 64) -> list[int]:
    """Powers of two up to ``4 * timesteps`` (at most ``most``), plus ``timesteps`` itself."""
    top = min(max(4 * timesteps, 2), most)
    values = {1 << k for k in range(int(math.log2(top)) + 1)} | {int(timesteps)}
    return sorted(v for v in values if v >= 1)


def accuracy_energy_figure(
    sweep: Sequence[dict[str, Any]], *, trained_timesteps: int | None = None
) -> Figure:
    """Accuracy (top, if known) and energy per sample (bottom) against inference steps T."""
    if not sweep:
        raise ValueError("the T sweep is empty: nothing to plot")
    try:
        rows = sorted(sweep, key=lambda r: int(r["timesteps"]))
        ts = np.array([int(r["timesteps"]) for r in rows])
        energy = np.array([float(r["energy_joules"]) for r in rows])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"T sweep rows need 'timesteps' and 'energy_joules' ({exc!r})") from None
    acc = [r.get("accuracy") for r in rows]
    has_acc = any(a is not None for a in acc)
    ann = [float(r["ann_energy_joules"]) for r in rows if r.get("ann_energy_joules") is not None]
    unit, factor = energy_unit(max(energy.max(), max(ann, default=0.0)))
    log_x = ts.max() / max(ts.min(), 1) >= 8
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7.5, 6.2 if has_acc else 3.8), layout="constrained")
        axes = fig.subplots(2 if has_acc else 1, 1, sharex=True, squeeze=False)[:, 0]
        if has_acc:
            ax = axes[0]
            pts = [(t, a) for t, a in zip(ts, acc) if a is not None]
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", color=BLUE, lw=2, label="accuracy")
            for t, a in pts:
                ax.annotate(
                    f"{100 * a:.1f}",
                    (t, 100 * a),
                    xytext=(0, 7),
                    textcoords="offset points",
                    ha="center",
                    fontsize=9,
                )
            ax.set_ylabel("accuracy (%)")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
            lo = math.floor(max(0.0, min(100 * p[1] for p in pts) - 5) / 5) * 5
            ax.set_ylim(lo, 100 + 0.08 * (100 - lo))
            ax.set_yticks([v for v in ax.get_yticks() if lo <= v <= 100])
            ax.grid(True)
            ax.set_title("accuracy", loc="left", fontsize=10, color="#333333")
        ax = axes[-1]
        ax.plot(ts, energy * factor, "s-", color=ORANGE, lw=2, label="LM-H on Loihi (estimate)")
        if ann:
            ax.axhline(
                ann[0] * factor,
                color=GREY,
                ls="--",
                lw=1.5,
                label="equivalent ANN, 45 nm fp32 (once per sample)",
            )
        ax.set_ylabel(f"energy per sample ({unit})")
        ax.set_ylim(0, None)
        ax.grid(True)
        ax.legend(loc="upper left", frameon=False)
        ax.set_title("energy per inference", loc="left", fontsize=10, color="#333333")
        ax.set_xlabel("inference steps T")
        for a in axes:
            if trained_timesteps is not None:
                a.axvline(trained_timesteps, color=GREY, ls=":", lw=1.2)
            if log_x:
                a.set_xscale("log", base=2)
            a.set_xticks(ts)
            a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            a.xaxis.set_minor_locator(NullLocator())
        if trained_timesteps is not None:
            axes[0].annotate(
                f"deployed T = {trained_timesteps}",
                (trained_timesteps, 1),
                xycoords=("data", "axes fraction"),
                xytext=(4, -12),
                textcoords="offset points",
                fontsize=9,
                color=GREY,
            )
        fig.suptitle(
            "Accuracy and energy against inference steps T" if has_acc else "Energy against inference steps T"
        )
    return fig


def accuracy_energy_vs_T(
    sweep: Sequence[dict[str, Any]], path: str | Path, *, trained_timesteps: int | None = None
) -> Path:
    """The "long-range reward" curve: accuracy and energy per sample against T."""
    return _save(accuracy_energy_figure(sweep, trained_timesteps=trained_timesteps), path)


# --------------------------------------------------------------------------- float vs fixed


def spike_agreement_values(rec_float: RunRecord, rec_fixed: RunRecord) -> dict[str, float]:
    """Per layer of ``rec_fixed``: the fraction of (step, sample, neuron) spike entries equal."""
    return spike_agreement_by_layer(rec_float.spikes, rec_fixed.spikes)[0]


def spike_agreement_figure(rec_float: RunRecord, rec_fixed: RunRecord) -> Figure:
    """Bar per LM-H layer of float-vs-fixed spike agreement, with the exact value on each bar."""
    values = spike_agreement_values(rec_float, rec_fixed)
    names = list(values)
    with matplotlib.rc_context(STYLE):
        fig, ax = _bar_figure(len(names), "no spiking layers to compare")
        if names:
            agree = np.array([values[n] for n in names])
            x = np.arange(len(names))
            bars = ax.bar(x, 100 * agree, color=BLUE, width=0.6)
            ax.bar_label(bars, labels=[f"{100 * a:.2f}%" for a in agree], padding=3, fontsize=10)
            ax.set_xticks(x, [f"{n}\n{rec_fixed.spikes[n].shape[2]} neurons" for n in names])
            lo = math.floor(max(0.0, 100 * agree.min() - 5) / 5) * 5
            ax.set_ylim(lo, 100 + 0.08 * (100 - lo))
            ax.set_yticks([v for v in ax.get_yticks() if lo <= v <= 100])
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
            ax.set_ylabel(
                "equal spike entries (%)" if lo == 0 else f"equal spike entries (%)\naxis from {lo:g}%"
            )
            ax.grid(True, axis="y")
        t, b = next(iter(rec_fixed.spikes.values())).shape[:2] if names else ("?", "?")
        fig.suptitle(f"Float vs fixed-point spike agreement ({b} samples, T = {t})")
    return fig


def spike_agreement(rec_float: RunRecord, rec_fixed: RunRecord, path: str | Path) -> Path:
    """Bar chart of float vs fixed spike agreement per layer."""
    return _save(spike_agreement_figure(rec_float, rec_fixed), path)


# --------------------------------------------------------------------------- all of them


def make_plots(
    summary: dict[str, Any],
    rec: RunRecord | None,
    plots_dir: str | Path,
    *,
    sweep: Sequence[dict[str, Any]] | None = None,
    rec_float: RunRecord | None = None,
    sample: int = 0,
) -> dict[str, str]:
    """Write every plot the inputs allow into ``plots_dir``; returns ``{name: path}``.

    Always ``firing_rates``; ``spike_raster`` (of ``sample``) when ``rec`` has spikes;
    ``accuracy_energy_vs_T`` with ``sweep``; ``spike_agreement`` with ``rec_float``.
    """
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    if rec is not None and rec.spikes:
        out["spike_raster"] = str(spike_raster(rec, sample, plots_dir / PLOT_FILES["spike_raster"]))
    out["firing_rates"] = str(firing_rates(summary, plots_dir / PLOT_FILES["firing_rates"]))
    if sweep:
        out["accuracy_energy_vs_T"] = str(
            accuracy_energy_vs_T(
                sweep,
                plots_dir / PLOT_FILES["accuracy_energy_vs_T"],
                trained_timesteps=summary.get("timesteps"),
            )
        )
    if rec_float is not None and rec is not None:
        out["spike_agreement"] = str(
            spike_agreement(rec_float, rec, plots_dir / PLOT_FILES["spike_agreement"])
        )
    return out
