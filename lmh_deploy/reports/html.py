"""One self-contained HTML page for a run summary: headline, per-layer table, energy, plots.

The page needs nothing but itself: CSS is inline and every image is a base64 ``data:`` URI, so
it can be mailed, attached to an issue or opened offline. It is written atomically.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from pathlib import Path
from typing import Any
from lmh_deploy.errors import InputError, MissingFileError

from lmh_deploy.files import write_text_atomic
from lmh_deploy.reports.summary import energy_sentence, energy_unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Energy fields of a summary and the ``energy_sources`` key that cites each.
ENERGY_FIELDS = (
    ("energy_joules", "snn", "LM-H network on Loihi (estimate)"),
    ("ann_energy_joules", "ann", "equivalent ANN, dense, once per sample"),
    ("snn_energy_45nm_joules", "snn_45nm", "synaptic ops at 45 nm (SNN-paper convention)"),
)
#: Captions of the plots :mod:`lmh_deploy.reports.plots` writes, by name.
CAPTIONS = {
    "spike_raster": "Spike raster of one sample: neuron index against step, one panel per LM-H layer.",
    "firing_rates": "Firing rate per LM-H layer: spikes per neuron per step, over all samples.",
    "accuracy_energy_vs_T": "Accuracy and energy per sample against the number of inference "
    "steps T (integer simulator).",
    "spike_agreement": "Float model vs fixed-point run: fraction of equal spike entries per layer.",
}
#: Summary keys rendered by their own sections (everything else goes to "other fields").
_SHOWN = {
    "backend",
    "samples",
    "accuracy",
    "timesteps",
    "seconds",
    "layers",
    "totals",
    "energy_joules",
    "ann_energy_joules",
    "energy_ratio_ann_over_snn",
    "snn_energy_45nm_joules",
    "energy_sources",
    "t_sweep",
    "t_sweep_backend",
    "plots",
}

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde2ea; --accent:#1f5fa8; --bg:#f6f8fb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1120px; margin:0 auto; padding:28px 24px 48px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:18px; margin:32px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
.sub { color:var(--muted); margin:0 0 18px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 16px;
        min-width:150px; flex:1 1 150px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.scroll { overflow-x:auto; background:#fff; border:1px solid var(--line); border-radius:8px; }
table { border-collapse:collapse; width:100%; font-size:13.5px; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:right;
         white-space:nowrap; font-variant-numeric:tabular-nums; }
th { background:#eef2f8; font-weight:600; white-space:normal; vertical-align:bottom; }
th.group { text-align:center; border-left:1px solid var(--line); }
th:first-child, td:first-child, td.text, th.text { text-align:left; }
.card .vs { color:var(--muted); font-size:14px; font-weight:400; }
.note { color:#8a4b00; }
tbody tr:nth-child(even) { background:#fafbfd; }
td.src { white-space:normal; text-align:left; color:var(--muted); }
figure { margin:18px 0; background:#fff; border:1px solid var(--line); border-radius:8px;
         padding:12px; }
figure img { display:block; max-width:100%; height:auto; margin:0 auto; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; text-align:center; }
footer { color:var(--muted); font-size:12px; margin-top:36px; }
code { font-family:ui-monospace, Menlo, Consolas, monospace; font-size:12.5px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A table cell: thousands separators for ints, 4 significant digits for floats."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        if abs(value) >= 100:
            return f"{value:,.1f}"
        return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.3e}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def fmt_energy(joules: Any) -> str:
    """``2.61e-08`` -> ``26.08 nJ``."""
    if not isinstance(joules, (int, float)) or not math.isfinite(joules):
        return "–"
    unit, factor = energy_unit(joules)
    return f"{joules:.3g} J" if unit == "J" else f"{joules * factor:.2f} {unit}"


def png_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,...`` of a PNG file; ValueError if missing or not a PNG."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    if not data.startswith(PNG_MAGIC):
        raise InputError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def fmt_seconds(seconds: float) -> str:
    """A run time a person reads: ``2.6 ms``, ``3.48 s``, ``2 min 05 s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


#: Per-layer table: summary key -> column header (per sample where the key is a total).
LAYER_COLUMNS = {
    "name": "layer",
    "kind": "kind",
    "neurons": "neurons",
    "fan_in": "fan\u2011in",
    "fan_out": "mean fan\u2011out",
    "input_spikes": "input events / sample",
    "synops_per_sample": "synaptic ops / sample",
    "spikes_per_sample": "spikes / sample",
    "firing_rate": "firing rate",
    "saturation_events": "saturations",
    "energy_joules": "energy / sample",
    "ann_macs": "ANN MACs / sample",
}
#: Keys whose layer value is summed over samples, shown divided by the sample count.
_PER_SAMPLE = {"input_spikes", "ann_macs"}
#: Layer keys not shown as columns: totals shown per sample above, per-step lists (plotted).
_LAYER_HIDDEN = {"synops", "output_spikes", "spikes_per_step", "synapses"}
TOTAL_LABELS = {
    "synops": "synaptic ops",
    "spikes": "spikes",
    "neuron_updates": "neuron updates",
    "saturation_events": "saturation events",
}


def html_table(columns: list[str], rows: list[list[Any]], *, text_cols: int = 1) -> str:
    """A scrollable table; the first ``text_cols`` columns are text (left), the rest numbers
    (:func:`fmt`, right)."""
    head = "".join(
        f'<th class="text">{esc(c)}</th>' if i < text_cols else f"<th>{esc(c)}</th>"
        for i, c in enumerate(columns)
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="text">{esc(fmt(v))}</td>' if i < text_cols else f"<td>{esc(fmt(v))}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _headline(summary: dict[str, Any]) -> str:
    acc = summary.get("accuracy")
    cards = [
        ("backend", summary.get("backend", "–")),
        ("samples", fmt(summary.get("samples"))),
        ("accuracy", f"{100 * acc:.2f} %" if isinstance(acc, (int, float)) else "– (no labels)"),
        ("inference steps T", fmt(summary.get("timesteps"))),
        ("energy / sample", fmt_energy(summary.get("energy_joules"))),
    ]
    if isinstance(summary.get("seconds"), (int, float)):
        cards.append(("run time", fmt_seconds(summary["seconds"])))
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div></div>'
            for k, v in cards
        )
        + "</div>"
    )


def _layers(summary: dict[str, Any]) -> str:
    layers = summary.get("layers") or []
    samples = summary.get("samples") or 1
    keys = [k for k in LAYER_COLUMNS if any(k in layer for layer in layers)]
    for layer in layers:  # fields of newer summaries, shown as they are
        keys += [
            k
            for k, v in layer.items()
            if k not in keys and k not in _LAYER_HIDDEN and not isinstance(v, (list, dict))
        ]

    def cell(layer: dict[str, Any], key: str) -> Any:
        value = layer.get(key)
        if key == "energy_joules":
            return fmt_energy(value) if value is not None else None
        if key in _PER_SAMPLE and isinstance(value, (int, float)):
            return value / samples
        return value

    rows = [[cell(layer, k) for k in keys] for layer in layers]
    headers = [LAYER_COLUMNS.get(k, k.replace("_", " ")) for k in keys]
    return html_table(headers, rows, text_cols=2 if keys[:2] == ["name", "kind"] else 1)


def _totals(summary: dict[str, Any]) -> str:
    totals = summary.get("totals") or {}
    samples = summary.get("samples")
    rows = []
    for key, value in totals.items():
        per = value / samples if isinstance(value, (int, float)) and samples else None
        rows.append([TOTAL_LABELS.get(key, key.replace("_", " ")), value, per])
    return html_table(["quantity", "total", "per sample"], rows)


def _energy(summary: dict[str, Any]) -> str:
    sources = summary.get("energy_sources") or {}
    rows = [
        f'<tr><td class="text">{esc(what)}</td><td>{esc(fmt_energy(summary[field]))}</td>'
        f'<td class="src">{esc(sources.get(source_key, "–"))}</td></tr>'
        for field, source_key, what in ENERGY_FIELDS
        if field in summary
    ]
    sentence = energy_sentence(summary)
    note = (
        f"<p><b>{esc(sentence[:1].upper() + sentence[1:])}</b>. Estimates from counted events "
        "and published per-operation figures, not measurements.</p>"
    )
    return (
        note + '<div class="scroll"><table><thead><tr><th class="text">what</th>'
        '<th>energy / sample</th><th class="text">figures from</th></tr>'
        "</thead><tbody>" + "".join(rows) + "</tbody></table></div>"
    )


def _sweep(sweep: list[dict[str, Any]]) -> str:
    rows = []
    for r in sorted(sweep, key=lambda r: r.get("timesteps", 0)):
        acc = r.get("accuracy")
        rows.append(
            [
                r.get("timesteps"),
                f"{100 * acc:.2f} %" if isinstance(acc, (int, float)) else None,
                fmt_energy(r.get("energy_joules")),
                r.get("synops_per_sample"),
                r.get("spikes_per_sample"),
            ]
        )
    return html_table(["T", "accuracy", "energy / sample", "synaptic ops / sample", "spikes / sample"], rows)


def _others(summary: dict[str, Any]) -> str:
    """Every other field of the summary (predictions, file names, ...), folded away: the raw
    record for whoever needs it, not what a reader looks at first."""
    rows = [[k, v] for k, v in summary.items() if k not in _SHOWN]
    if not rows:
        return ""
    cells = "".join(
        f'<tr><td class="text"><code>{esc(k)}</code></td>'
        f'<td class="src"><code>{esc(_short_json(v))}</code></td></tr>'
        for k, v in rows
    )
    return (
        "<details><summary>Other fields of the run summary (raw JSON values: "
        f"{esc(', '.join(k for k, _ in rows))})</summary>"
        '<div class="scroll"><table><thead><tr><th class="text">'
        f'field</th><th class="text">value</th></tr></thead><tbody>{cells}</tbody>'
        "</table></div></details>"
    )


def _short_json(value: Any, limit: int = 600) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + " …"


def render_html(summary: dict[str, Any], images: dict[str, str] | None = None) -> str:
    """The page as a string (see :func:`write_html`)."""
    from lmh_deploy import __version__

    if not isinstance(summary, dict) or not isinstance(summary.get("layers"), list):
        raise InputError("not a run summary: no 'layers' list")
    title = f"lmh-deploy run report: {summary.get('backend', 'run')}"
    parts = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">{esc(fmt(summary.get("samples")))} samples, '
        f"T = {esc(fmt(summary.get('timesteps')))} inference steps; "
        "counts are summed over samples unless marked per sample.</p>",
        _headline(summary),
    ]
    if images:  # the plots first, under the headline numbers, where a reader looks
        parts.append("<h2>Plots</h2>")
        for name, path in images.items():
            caption = CAPTIONS.get(name, name)
            parts.append(
                f'<figure><img src="{png_data_uri(path)}" alt="{esc(caption)}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    parts += ["<h2>Layers</h2>", _layers(summary)]
    if summary.get("totals"):
        parts += ["<h2>Totals</h2>", _totals(summary)]
    parts += ["<h2>Energy per sample</h2>", _energy(summary)]
    if summary.get("t_sweep"):
        on = summary.get("t_sweep_backend", "sim")
        parts += [f"<h2>Accuracy and energy against T (run on {esc(on)})</h2>", _sweep(summary["t_sweep"])]
    parts.append(_others(summary))
    parts.append(
        f"<footer>Generated by lmh-deploy {esc(__version__)}. Energy figures: see docs/energy.md.</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )


def write_html(summary: dict[str, Any], path: str | Path, *, images: dict[str, str] | None = None) -> Path:
    """Write ONE self-contained HTML report of ``summary`` to ``path`` (atomically).

    ``images`` maps plot names (see :data:`CAPTIONS`) to PNG files, embedded as base64.
    """
    path = Path(path)
    write_text_atomic(path, render_html(summary, images))
    return path


def _find_png(value: Any, base: Path) -> Path | None:
    if not isinstance(value, str):
        return None
    for candidate in (Path(value), base / value):
        try:
            if candidate.is_file() and candidate.read_bytes()[:8] == PNG_MAGIC:
                return candidate
        except OSError:
            continue
    return None


def report_from_json(json_path: str | Path, html_path: str | Path) -> Path:
    """Rebuild the HTML report from a saved summary JSON (``lmh-deploy run --json``).

    Embeds the PNGs listed under ``"plots"`` that still exist (absolute, relative to the working
    folder or to the JSON's folder), re-plots ``firing_rates`` from the layers when its PNG is
    gone, and re-plots the T curve from ``"t_sweep"``. A missing, unreadable or non-summary
    JSON is a UserError naming the file and the cause.
    """
    from lmh_deploy.reports import plots

    json_path = Path(json_path)
    try:
        text = json_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"{json_path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{json_path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{json_path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(summary, dict) or not isinstance(summary.get("layers"), list):
        raise InputError(
            f"{json_path}: not a run summary (no 'layers' list; expected the "
            "output of `lmh-deploy run --json`)"
        )
    images: dict[str, str] = {}
    saved = summary.get("plots")
    if isinstance(saved, dict):
        for name, value in saved.items():
            found = _find_png(value, json_path.parent)
            if found is not None:
                images[name] = str(found)
    with tempfile.TemporaryDirectory(prefix="lmh-report-") as tmp:
        sweep = summary.get("t_sweep")
        try:
            if isinstance(sweep, list) and sweep:
                images["accuracy_energy_vs_T"] = str(
                    plots.accuracy_energy_vs_T(
                        sweep,
                        Path(tmp) / "accuracy_energy_vs_T.png",
                        trained_timesteps=summary.get("timesteps"),
                    )
                )
            if "firing_rates" not in images:
                images["firing_rates"] = str(plots.firing_rates(summary, Path(tmp) / "firing_rates.png"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{json_path}: cannot re-plot the summary ({exc})") from None
        order = [n for n in plots.PLOT_FILES if n in images] + [
            n for n in images if n not in plots.PLOT_FILES
        ]
        try:
            page = render_html(summary, {n: images[n] for n in order})
        except ValueError as exc:
            raise InputError(f"{json_path}: {exc}") from None
    out = Path(html_path)
    write_text_atomic(out, page)
    return out
