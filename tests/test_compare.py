"""``lmh-deploy compare`` (two deployments side by side) and the run report's rendering fixes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmh_deploy.cli import app
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.pipeline.run import t_sweep
from lmh_deploy.reports.compare import compare_runs, load_run
from lmh_deploy.reports.compare_html import render_compare_html
from lmh_deploy.reports.html import fmt_seconds, render_html
from lmh_deploy.reports.plots import firing_rates_figure
from lmh_deploy.reports.summary import summarize
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate

runner = CliRunner()


def _summary(make_mlp, seed: int, **factors) -> dict:
    """A real run summary (sim/) of a small seeded MLP, with a T sweep."""
    t = 4
    model = make_mlp(seed, n_in=10, hidden=(12, 8), classes=4, timesteps=t, **factors)
    q, _ = quantize_graph(export_model(model, input_shape=(10,), timesteps=t))
    x = np.random.default_rng(seed).uniform(0, 1, (6, 10))
    y = np.arange(6) % 4
    x_int = fx.quantize_input(x, q.node("input").scale)
    summary = summarize(q, simulate(q, x_int, t), y) | {"backend": "sim", "seconds": 0.0026}
    summary["t_sweep"] = t_sweep(q, x_int, y, [1, 2, 4])
    return json.loads(json.dumps(summary))  # as `run --json` writes it


@pytest.fixture
def two_runs(make_mlp, tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "lmh" / "run.json", tmp_path / "lif" / "run.json"
    for path, summary in (
        (a, _summary(make_mlp, 0)),
        (b, _summary(make_mlp, 0, set_factors=dict(mu_d=0.0, mu_s=0.0, lam_d=1.0, lam_s=0.6))),
    ):
        path.parent.mkdir()
        path.write_text(json.dumps(summary))
    return a, b


def test_compare_runs_totals_layers_and_sweep(two_runs) -> None:
    a, b = (load_run(p) for p in two_runs)
    c = compare_runs(a, b, ("lmh", "lif"))
    totals = {r["key"]: r for r in c["totals"]}
    assert totals["energy_joules"]["a"] == a["energy_joules"]
    assert totals["spikes_per_sample"]["b"] == b["totals"]["spikes"] / b["samples"]
    ratio = totals["synops_per_sample"]["ratio"]
    assert ratio == pytest.approx(b["totals"]["synops"] / a["totals"]["synops"])
    # accuracy differs by points, not by a factor
    accuracy = totals["accuracy"]
    assert accuracy["ratio"] is None
    assert accuracy["points"] == pytest.approx(100 * (b["accuracy"] - a["accuracy"]))
    assert [row["name"] for row in c["layers"]] == ["lmh0", "lmh1", "readout"]
    # per-layer energies add up to the total energy of each run
    for key, run in (("a", a), ("b", b)):
        layer_sum = sum(row["energy_joules"][key] for row in c["layers"])
        assert layer_sum == pytest.approx(run["energy_joules"])
    assert c["layers"][2]["spikes_per_sample"]["a"] is None  # the readout does not spike
    assert [r["timesteps"] for r in c["t_sweep"]] == [1, 2, 4]
    assert c["notes"] == []


def test_compare_cli_prints_tables_and_writes_self_contained_html(two_runs, tmp_path: Path) -> None:
    page = tmp_path / "cmp.html"
    res = runner.invoke(
        app, ["compare", str(two_runs[0]), str(two_runs[1]), "--html", str(page)], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    for text in ("A = lmh, B = lif", "energy / sample (Loihi estimate)", "accuracy against T", "lmh1"):
        assert text in res.output
    accuracy_row = next(line for line in res.output.splitlines() if line.strip("│ ").startswith("accuracy "))
    assert re.search(r"\d+\.\d+ % .* [+-]\d+\.\d points", accuracy_row), accuracy_row
    html = page.read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == 2  # bars + T curve
    assert not re.search(r'(src|href)="(http|file|/)', html)  # nothing outside the page
    assert "synops_per_sample" not in html and "synaptic ops / sample" in html


def test_compare_refuses_a_file_that_is_not_a_run(two_runs, tmp_path: Path) -> None:
    bad = tmp_path / "verify.json"
    bad.write_text(json.dumps({"samples": 3, "lava_vs_sim": {}}))
    res = runner.invoke(app, ["compare", str(two_runs[0]), str(bad)])
    assert res.exit_code == 2
    assert f"{bad}: not a run summary (missing layers, totals, energy_joules" in res.output
    res = runner.invoke(app, ["compare", str(two_runs[0]), str(tmp_path / "nope.json")])
    assert res.exit_code == 2 and "nope.json: no such file" in res.output


def test_comparison_notes_differing_runs(two_runs) -> None:
    a, b = (load_run(p) for p in two_runs)
    b["timesteps"], b["t_sweep"] = 8, []
    c = compare_runs(a, b)
    assert c["notes"] == ["the runs differ in timesteps: 4 vs 8"] and c["t_sweep"] == []
    assert "Accuracy against T" not in render_compare_html(c)


def test_run_report_headers_run_time_and_table_width(two_runs) -> None:
    summary = load_run(two_runs[0])
    summary.update(predictions=[3, 1, 4, 1, 5], t_sweep_backend="sim")  # as run --json writes them
    html = render_html(summary)
    headers = re.findall(r"<th[^>]*>(.*?)</th>", html)
    assert "synaptic ops / sample" in headers and "energy / sample" in headers
    assert not [h for h in headers if re.fullmatch(r"[a-z]+(_[a-z]+)+", h)], headers
    assert "spikes_per_step" not in html.split("Other fields")[0]  # lists are plotted, not tabled
    # what a reader sees carries labels, not keys; the raw rest (predictions, ...) is folded away
    seen, folded = html.split("<details>")
    assert not re.findall(r">[a-z]+(?:_[a-z]+)+<", seen), re.findall(r">[a-z]+(?:_[a-z]+)+<", seen)
    assert "predictions" in folded and "predictions" not in seen
    assert "2.6 ms" in html and "0.00 s" not in html
    assert [fmt_seconds(s) for s in (2.6e-5, 0.0026, 3.482, 125.0)] == [
        "26 µs",
        "2.6 ms",
        "3.48 s",
        "2 min 05 s",
    ]


def test_firing_rate_plot_keeps_its_labels_inside_the_image(two_runs) -> None:
    fig = firing_rates_figure(load_run(two_runs[0]))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    ax = fig.axes[0]
    for artist in (ax.yaxis.label, ax.xaxis.label, fig._suptitle):
        box = artist.get_window_extent(renderer)
        assert box.x0 >= 2 and box.y0 >= 0 and box.x1 <= width - 2 and box.y1 <= height, artist


@pytest.mark.parametrize(
    "snn, ann, words",
    [(12.3e-9, 1.5e-9, "8.2 times the energy of the equivalent ANN"), (2e-9, 5e-9, "2.5 times less than")],
)
def test_energy_line_says_which_way_the_ratio_goes(snn: float, ann: float, words: str) -> None:
    from lmh_deploy.reports.summary import energy_sentence

    line = energy_sentence({"energy_joules": snn, "ann_energy_joules": ann})
    assert words in line and "nJ per sample on Loihi" in line and "ratio" not in line
