"""Plots and the self-contained HTML report of a run (lmh_deploy.reports.plots, lmh_deploy.reports.html)."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from lmh_deploy.errors import UserError
import torch
from matplotlib import image as mpimg
from PIL import Image

import lmh_deploy  # noqa: F401  - Lava import fix first
from lmh_deploy.semantics import integer as fx
from lmh_deploy.reports import plots
from lmh_deploy.pipeline.run import t_sweep
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.reports.html import CAPTIONS, esc, report_from_json, write_html
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.backends.record import RunRecord
from lmh_deploy.reports.summary import summarize
from lmh_deploy.backends.float.torch_model import run_float
from lmh_deploy.models.architectures import mlp
from lmh_deploy.sim import simulate

N_IN, HIDDEN, CLASSES, T, SAMPLES = 10, (24, 12), 4, 5, 24
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run():
    """A random LM-H MLP, simulated in fixed point and run in float on the same inputs."""
    torch.manual_seed(3)
    model = mlp((N_IN,), CLASSES, hidden=HIDDEN, timesteps=T, factors="progressive")
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(3.0)  # default init is too weak to make the second layer fire
    model.eval()
    graph = export_model(model, input_shape=(N_IN,), x_max=1.0, timesteps=T)
    qgraph, _ = quantize_graph(graph)
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (SAMPLES, N_IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, SAMPLES)
    x_int = fx.quantize_input(x, qgraph.node("input").scale)
    rec = simulate(qgraph, x_int, T)
    summary = summarize(qgraph, rec, y) | {"backend": "sim", "seconds": 0.01, "timesteps": T}
    rec_float = run_float(model, x, T)
    return {"qgraph": qgraph, "x_int": x_int, "y": y, "rec": rec, "summary": summary, "rec_float": rec_float}


@pytest.fixture(scope="module")
def sweep(run):
    return t_sweep(run["qgraph"], run["x_int"], run["y"], [1, 2, 4, 8])


@pytest.fixture(scope="module")
def made(run, sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("plots")
    paths = plots.make_plots(run["summary"], run["rec"], out, sweep=sweep, rec_float=run["rec_float"])
    return out, paths


def _check_png(path: str | Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100, im.size
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.std() > 0.01  # not a blank canvas


def test_network_fires_in_every_layer(run) -> None:
    # the plots below are only meaningful if both hidden layers spike
    assert all(s.sum() > 0 for s in run["rec"].spikes.values())
    assert list(run["rec"].spikes) == ["lmh0", "lmh1"]


def test_make_plots_writes_every_plot_as_a_readable_png(made) -> None:
    out, paths = made
    assert set(paths) == {"spike_raster", "firing_rates", "accuracy_energy_vs_T", "spike_agreement"}
    for name, path in paths.items():
        assert Path(path).parent == out and Path(path).name == plots.PLOT_FILES[name]
        _check_png(path)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_make_plots_without_optional_inputs(run, tmp_path) -> None:
    paths = plots.make_plots(run["summary"], run["rec"], tmp_path / "sub" / "dir")
    assert set(paths) == {"spike_raster", "firing_rates"}
    for path in paths.values():
        _check_png(path)


def test_raster_has_one_panel_per_layer_and_one_point_per_spike(run) -> None:
    rec = run["rec"]
    for sample in (0, 5):
        fig = plots.raster_figure(rec, sample)
        assert len(fig.axes) == len(rec.spikes)
        for ax, (name, spikes) in zip(fig.axes, rec.spikes.items()):
            assert ax.get_ylabel().startswith(name)
            (points,) = ax.collections
            xy = np.asarray(points.get_offsets())
            steps, neurons = np.nonzero(spikes[:, sample, :])
            assert len(xy) == spikes[:, sample, :].sum() > 0
            assert sorted(zip(xy[:, 0].astype(int), xy[:, 1].astype(int))) == sorted(
                zip((steps + 1).tolist(), neurons.tolist())
            )
        assert fig.axes[-1].get_xlabel() == "inference step t"
    # the two samples really differ, so the test above checks the sample is honoured
    assert not np.array_equal(rec.spikes["lmh0"][:, 0], rec.spikes["lmh0"][:, 5])
    with pytest.raises(ValueError, match="sample 99"):
        plots.raster_figure(rec, 99)


def test_firing_rate_bars_match_summary(run) -> None:
    fig = plots.firing_rates_figure(run["summary"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    expected = [layer["firing_rate"] for layer in run["summary"]["layers"] if layer["kind"] == "lmh"]
    assert heights == pytest.approx(expected) and len(heights) == 2
    assert "spikes per neuron per step" in fig.axes[0].get_ylabel()


def test_t_sweep_one_row_per_T_and_energy_grows(run, sweep) -> None:
    assert [row["timesteps"] for row in sweep] == [1, 2, 4, 8]
    energies = [row["energy_joules"] for row in sweep]
    assert all(b > a for a, b in zip(energies, energies[1:])), energies
    synops = [row["synops_per_sample"] for row in sweep]
    assert all(b > a for a, b in zip(synops, synops[1:])), synops
    for row in sweep:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert {"energy_joules", "synops_per_sample", "ann_energy_joules"} <= set(row)
    # the row for the run's own T agrees with the run's summary
    (row5,) = t_sweep(run["qgraph"], run["x_int"], run["y"], [T])
    assert row5["energy_joules"] == pytest.approx(run["summary"]["energy_joules"])
    assert row5["accuracy"] == run["summary"]["accuracy"]
    assert t_sweep(run["qgraph"], run["x_int"], None, [2])[0]["accuracy"] is None
    with pytest.raises(ValueError):
        t_sweep(run["qgraph"], run["x_int"], run["y"], [0, 2])
    with pytest.raises(ValueError):
        t_sweep(run["qgraph"], run["x_int"], run["y"], [])


def test_accuracy_energy_curve_plots_the_sweep(sweep) -> None:
    fig = plots.accuracy_energy_figure(sweep, trained_timesteps=T)
    acc_ax, energy_ax = fig.axes
    acc_line = acc_ax.get_lines()[0]
    assert list(acc_line.get_xdata()) == [1, 2, 4, 8]
    assert list(acc_line.get_ydata()) == pytest.approx([100 * r["accuracy"] for r in sweep])
    unit, factor = plots.energy_unit(max(r["energy_joules"] for r in sweep))
    assert list(energy_ax.get_lines()[0].get_ydata()) == pytest.approx(
        [factor * r["energy_joules"] for r in sweep]
    )
    assert unit in energy_ax.get_ylabel() and energy_ax.get_xlabel() == "inference steps T"
    # without labels: energy only
    no_acc = [dict(r, accuracy=None) for r in sweep]
    assert len(plots.accuracy_energy_figure(no_acc).axes) == 1
    with pytest.raises(ValueError):
        plots.accuracy_energy_figure([])
    assert plots.default_t_values(4) == [1, 2, 4, 8, 16]
    assert plots.default_t_values(5) == [1, 2, 4, 5, 8, 16]


def test_spike_agreement_values(run) -> None:
    rec, rec_float = run["rec"], run["rec_float"]
    values = plots.spike_agreement_values(rec_float, rec)
    for name in rec.spikes:
        assert values[name] == pytest.approx(np.mean(rec_float.spikes[name] == rec.spikes[name]))
    assert plots.spike_agreement_values(rec, rec) == dict.fromkeys(rec.spikes, 1.0)
    flipped = RunRecord(logits=rec.logits, spikes={k: ~v for k, v in rec.spikes.items()})
    assert plots.spike_agreement_values(flipped, rec) == dict.fromkeys(rec.spikes, 0.0)
    fig = plots.spike_agreement_figure(rec_float, rec)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([100 * values[n] for n in rec.spikes])
    with pytest.raises(ValueError, match="lmh1"):
        plots.spike_agreement_values(RunRecord(logits=rec.logits, spikes={"lmh0": rec.spikes["lmh0"]}), rec)


class _Refs(HTMLParser):
    """Every attribute that could load something from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href", "srcset", "data", "poster", "action"):
                self.refs.append((tag, key, value or ""))


def _layer_rows(page: str) -> list[str]:
    layers = page.split("<h2>Layers</h2>", 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr><td[^>]*>([^<]+)</td>", layers)


def test_html_is_self_contained_and_complete(run, made, tmp_path) -> None:
    _, images = made
    summary = run["summary"] | {"t_sweep": []}
    out = write_html(summary, tmp_path / "report.html", images=images)
    page = out.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    parser = _Refs()
    parser.feed(page)
    assert parser.refs, "no images found"
    for tag, key, value in parser.refs:
        assert tag == "img" and key == "src" and value.startswith("data:image/png;base64,"), (
            tag,
            key,
            value[:60],
        )
    assert page.count("data:image/png;base64,") == len(images) == 4
    assert "link" not in parser.tags and "script" not in parser.tags and "style" in parser.tags
    assert _layer_rows(page) == [layer["name"] for layer in summary["layers"]]
    # headers a person reads, not JSON keys; per-sample columns, so the table fits its box
    for header in (
        "input events / sample",
        "mean fan\u2011out",
        "synaptic ops / sample",
        "spikes / sample",
        "firing rate",
        "saturations",
        "energy / sample",
    ):
        assert f"<th>{header}</th>" in page
    assert "<th>synops_per_sample</th>" not in page and "<th>spikes_per_step</th>" not in page
    for source in summary["energy_sources"].values():
        assert source in page
    assert f"{100 * summary['accuracy']:.2f} %" in page and ">sim<" in page
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left"
    # atomic replace of an existing report
    write_html(run["summary"], out)
    assert "data:image/png" not in out.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="not a PNG"):
        write_html(run["summary"], tmp_path / "x.html", images={"bad": str(tmp_path / "report.html")})
    assert not (tmp_path / "x.html").exists()


def test_report_from_json_round_trip(run, sweep, made, tmp_path) -> None:
    out, images = made
    summary = run["summary"] | {"t_sweep": sweep, "plots": images}
    json_path = tmp_path / "run.json"
    json_path.write_text(json.dumps(summary, indent=1))
    html_path = report_from_json(json_path, tmp_path / "out" / "report.html")
    page = html_path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4
    assert _layer_rows(page) == [layer["name"] for layer in summary["layers"]]
    assert "<h2>Accuracy and energy against T (run on sim)</h2>" in page
    for row in sweep:
        assert f"{100 * row['accuracy']:.2f} %" in page

    # plots that are gone are skipped; firing rates and the T curve are re-plotted from the JSON
    gone = {name: str(tmp_path / f"missing_{name}.png") for name in images}
    json_path.write_text(json.dumps(summary | {"plots": gone}))
    page = report_from_json(json_path, html_path).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2
    alt = {name: f'alt="{esc(caption)}"' for name, caption in CAPTIONS.items()}
    assert alt["firing_rates"] in page and alt["accuracy_energy_vs_T"] in page
    assert alt["spike_raster"] not in page

    # plot paths relative to the JSON's folder are found
    rel = {name: os.path.relpath(path, tmp_path) for name, path in images.items()}
    json_path.write_text(json.dumps(summary | {"plots": rel}))
    page = report_from_json(json_path, html_path).read_text(encoding="utf-8")
    assert alt["spike_raster"] in page and alt["spike_agreement"] in page


@pytest.mark.parametrize(
    "content,cause",
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('["a", "list"]', "not a run summary"),
        ('{"samples": 3}', "not a run summary"),
    ],
)
def test_report_from_bad_json_names_the_file(tmp_path, content, cause) -> None:
    json_path = tmp_path / "broken_run.json"
    if content is not None:
        json_path.write_text(content)
    html_path = tmp_path / "report.html"
    with pytest.raises(UserError) as err:  # the user's file: one line naming it
        report_from_json(json_path, html_path)
    assert str(json_path) in str(err.value) and cause in str(err.value)
    assert not html_path.exists()
