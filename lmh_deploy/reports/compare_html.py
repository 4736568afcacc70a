"""The comparison of two deployments as one self-contained HTML page, with its plots.

Plots are drawn with matplotlib (Agg, no pyplot) into PNGs embedded as base64, and the page
reuses the run report's style (:mod:`lmh_deploy.reports.html`), so it opens offline.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from lmh_deploy.files import write_text_atomic
from lmh_deploy.reports.compare import LAYER_FIELDS
from lmh_deploy.reports.html import CSS, esc, fmt, fmt_energy, html_table
from lmh_deploy.reports.plots import BLUE, DPI, ORANGE, STYLE
from lmh_deploy.reports.summary import energy_unit


def fmt_value(value: float | None, unit: str) -> str:
    """A compared value: percent, energy with its unit, or a plain number."""
    if value is None:
        return "–"
    if unit == "%":
        return f"{100 * value:.2f} %"
    if unit == "J":
        return fmt_energy(value)
    return fmt(value)


def fmt_compact(value: float | None, unit: str = "") -> str:
    """A headline number: ``8.25 M``, ``28.1 k``, percent and energy as :func:`fmt_value`."""
    if value is None or unit in ("%", "J"):
        return fmt_value(value, unit)
    for limit, scale, suffix in ((1e9, 1e9, " G"), (1e6, 1e6, " M"), (1e4, 1e3, " k")):
        if abs(value) >= limit:
            return f"{value / scale:.3g}{suffix}"
    return fmt(value)


def fmt_change(row: dict[str, Any]) -> str:
    """B against A: a difference in points for a percentage, else the ratio B / A."""
    if row.get("points") is not None:
        return f"{row['points']:+.1f} points"
    return fmt_ratio(row.get("ratio"))


def fmt_ratio(ratio: float | None) -> str:
    """B / A as ``0.62×``."""
    return "–" if ratio is None or not math.isfinite(ratio) else f"{ratio:.3g}×"


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def layer_bars_figure(comparison: dict[str, Any]) -> Figure:
    """Grouped bars per layer (A vs B): spikes, synaptic ops and energy per sample."""
    name_a, name_b = comparison["names"]
    layers = comparison["layers"]
    panels = [
        ("spikes_per_sample", "spikes / sample", 1.0, ""),
        ("synops_per_sample", "synaptic ops / sample", 1.0, ""),
        ("energy_joules", "energy / sample", None, "J"),
    ]
    # a quantity neither run recorded (e.g. per-layer energy of an older summary) is left out
    panels = [p for p in panels if any(row[p[0]][k] is not None for row in layers for k in "ab")]
    with matplotlib.rc_context(STYLE):
        fig = Figure(
            figsize=(max(8.0, 1.6 * len(layers) + 3.0), 1.0 + 2.5 * len(panels)), layout="constrained"
        )
        axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
        x = np.arange(len(layers))
        for ax, (key, label, scale, unit) in zip(axes, panels):
            va = np.array([row[key]["a"] or 0.0 for row in layers])
            vb = np.array([row[key]["b"] or 0.0 for row in layers])
            if unit == "J":
                unit_name, scale = energy_unit(max(va.max(initial=0), vb.max(initial=0)) or 1e-9)
                label = f"{label} ({unit_name})"
            ax.bar(x - 0.2, va * scale, width=0.4, color=BLUE, label=name_a)
            ax.bar(x + 0.2, vb * scale, width=0.4, color=ORANGE, label=name_b)
            ax.set_ylabel(label)
            ax.grid(True, axis="y")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_compact(v)))
        axes[0].legend(loc="upper right", frameon=False, ncols=2)
        what = {True: "outputs", False: "neurons"}
        axes[-1].set_xticks(
            x, [f"{row['name']}\n{row['neurons']} {what[row['kind'] == 'readout']}" for row in layers]
        )
        fig.suptitle(f"Per layer: {name_a} vs {name_b}")
    return fig


def accuracy_vs_t_figure(comparison: dict[str, Any]) -> Figure:
    """Accuracy (top) and energy per sample (bottom) against T, both runs."""
    name_a, name_b = comparison["names"]
    sweep = comparison["t_sweep"]
    ts = [r["timesteps"] for r in sweep]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7.5, 6.2), layout="constrained")
        ax_acc, ax_e = fig.subplots(2, 1, sharex=True)
        for key, name, color in (("a", name_a, BLUE), ("b", name_b, ORANGE)):
            acc = [r[f"accuracy_{key}"] for r in sweep]
            if any(a is not None for a in acc):
                ax_acc.plot(
                    ts,
                    [100 * a if a is not None else np.nan for a in acc],
                    "o-",
                    color=color,
                    lw=2,
                    label=name,
                )
        top = max((r[f"energy_{k}"] or 0.0) for r in sweep for k in "ab")
        unit, factor = energy_unit(top or 1e-9)
        for key, name, color in (("a", name_a, BLUE), ("b", name_b, ORANGE)):
            ax_e.plot(
                ts,
                [(r[f"energy_{key}"] or np.nan) * factor for r in sweep],
                "o-",
                color=color,
                lw=2,
                label=name,
            )
        ax_acc.set_ylabel("accuracy (%)")
        ax_acc.grid(True)
        ax_acc.legend(frameon=False)
        ax_e.set_ylabel(f"energy / sample ({unit})")
        ax_e.set_xlabel("inference steps T")
        ax_e.set_xticks(ts)
        ax_e.grid(True)
        fig.suptitle("Accuracy and energy against T (integer simulator)")
    return fig


def _totals_table(comparison: dict[str, Any]) -> str:
    name_a, name_b = comparison["names"]
    rows = [
        [r["label"], fmt_value(r["a"], r["unit"]), fmt_value(r["b"], r["unit"]), fmt_change(r)]
        for r in comparison["totals"]
    ]
    return html_table(["quantity (per sample)", name_a, name_b, f"{name_b} vs {name_a}"], rows)


def _layers_table(comparison: dict[str, Any]) -> str:
    name_a, name_b = comparison["names"]
    top = "".join(f'<th colspan="3" class="group">{esc(label)}</th>' for _, label in LAYER_FIELDS)
    sub = "".join(f"<th>{esc(name_a)}</th><th>{esc(name_b)}</th><th>ratio</th>" for _ in LAYER_FIELDS)
    body = []
    for row in comparison["layers"]:
        cells = [
            f'<td class="text">{esc(row["name"])}</td>',
            f'<td class="text">{esc(row["kind"])}</td>',
            f"<td>{esc(fmt(row['neurons']))}</td>",
        ]
        for key, _ in LAYER_FIELDS:
            unit = "J" if key == "energy_joules" else ""
            cells += [
                f"<td>{esc(fmt_value(row[key]['a'], unit))}</td>",
                f"<td>{esc(fmt_value(row[key]['b'], unit))}</td>",
                f"<td>{esc(fmt_ratio(row[key]['ratio']))}</td>",
            ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        '<div class="scroll"><table><thead><tr><th rowspan="2">layer</th>'
        '<th rowspan="2">kind</th><th rowspan="2">neurons</th>'
        + top
        + "</tr><tr>"
        + sub
        + f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _sweep_table(comparison: dict[str, Any]) -> str:
    name_a, name_b = comparison["names"]
    rows = [
        [
            r["timesteps"],
            fmt_value(r["accuracy_a"], "%"),
            fmt_value(r["accuracy_b"], "%"),
            fmt_energy(r["energy_a"]),
            fmt_energy(r["energy_b"]),
        ]
        for r in comparison["t_sweep"]
    ]
    columns = ["T", f"accuracy {name_a}", f"accuracy {name_b}", f"energy {name_a}", f"energy {name_b}"]
    return html_table(columns, rows)


def render_compare_html(comparison: dict[str, Any]) -> str:
    """The comparison page as a string."""
    from lmh_deploy import __version__

    name_a, name_b = comparison["names"]
    title = f"lmh-deploy comparison: {name_a} vs {name_b}"
    cards = []
    for r in comparison["totals"][:4]:
        cards.append(
            f'<div class="card"><div class="k">{esc(r["label"])}</div>'
            f'<div class="v">{esc(fmt_compact(r["a"], r["unit"]))} '
            f'<span class="vs">vs</span> {esc(fmt_compact(r["b"], r["unit"]))}</div></div>'
        )
    runs = [
        f"{k} = <b>{esc(name)}</b> ({esc(comparison['samples'][i])} samples, "
        f"T = {esc(comparison['timesteps'][i])}, {esc(comparison['backends'][i])})"
        for i, (k, name) in enumerate((("A", name_a), ("B", name_b)))
    ]
    parts = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{", ".join(runs)}. Values per sample; B vs A is B / A, '
        "or B - A in points for accuracy.</p>",
        f'<div class="cards">{"".join(cards)}</div>',
    ]
    parts += [f'<p class="note">Note: {esc(n)}.</p>' for n in comparison["notes"]]
    bars = (
        f'<figure><img src="{_png(layer_bars_figure(comparison))}" alt="per-layer bars">'
        "<figcaption>Spikes, synaptic ops and Loihi energy estimate per sample, per layer "
        "(the readout's row: its synaptic ops).</figcaption></figure>"
    )
    parts += [
        "<h2>Totals</h2>",
        _totals_table(comparison),
        "<h2>Per layer</h2>",
        _layers_table(comparison),
        bars,
    ]
    if comparison["t_sweep"]:
        curve = (
            f'<figure><img src="{_png(accuracy_vs_t_figure(comparison))}" '
            'alt="accuracy and energy against T"><figcaption>Both runs at every T of '
            "their sweeps.</figcaption></figure>"
        )
        parts += ["<h2>Accuracy against T</h2>", _sweep_table(comparison), curve]
    parts.append(
        f"<footer>Generated by lmh-deploy {esc(__version__)}. Energy: estimates from "
        "counted events and published per-operation figures (docs/energy.md), not "
        "measurements.</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


def write_compare_html(comparison: dict[str, Any], path: str | Path) -> Path:
    """Write the comparison page to ``path`` atomically."""
    path = Path(path)
    write_text_atomic(path, render_compare_html(comparison))
    return path
