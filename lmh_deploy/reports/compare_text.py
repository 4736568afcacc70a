"""The comparison of two deployments as terminal tables (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from lmh_deploy.reports.compare import LAYER_FIELDS
from lmh_deploy.reports.compare_html import fmt_change, fmt_ratio, fmt_value


def print_comparison(comparison: dict[str, Any], console: Console) -> None:
    """Totals, per-layer and accuracy-vs-T tables of :func:`~.compare.compare_runs`."""
    a, b = comparison["names"]
    totals = Table(title=f"A = {a}, B = {b} (per sample)")
    for col in ("quantity", "A", "B", "B vs A"):
        totals.add_column(col, justify="left" if col == "quantity" else "right")
    for r in comparison["totals"]:
        totals.add_row(r["label"], fmt_value(r["a"], r["unit"]), fmt_value(r["b"], r["unit"]), fmt_change(r))
    console.print(totals)
    layers = Table(title="per layer (per sample): A | B | B / A")
    layers.add_column("layer")
    for _, label in LAYER_FIELDS:
        layers.add_column(label, justify="right")
    for row in comparison["layers"]:
        cells = []
        for key, _ in LAYER_FIELDS:
            unit = "J" if key == "energy_joules" else ""
            v = row[key]
            cells.append(f"{fmt_value(v['a'], unit)} | {fmt_value(v['b'], unit)} | {fmt_ratio(v['ratio'])}")
        layers.add_row(row["name"], *cells)
    console.print(layers)
    if comparison["t_sweep"]:
        sweep = Table(title="accuracy against T")
        for col in ("T", f"A: {a}", f"B: {b}"):
            sweep.add_column(col, justify="right")
        for r in comparison["t_sweep"]:
            sweep.add_row(
                str(r["timesteps"]), fmt_value(r["accuracy_a"], "%"), fmt_value(r["accuracy_b"], "%")
            )
        console.print(sweep)
    for note in comparison["notes"]:
        console.print(f"note: {note}")
