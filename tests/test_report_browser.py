"""The HTML run report in a real browser: headless Chromium loads the page with its plots,
lays it out (a screenshot with ink on it) and shows what a reader should see first: the
headline numbers and the plots, the raw fields folded away. Skipped, with the reason, only
where no Chromium is installed (``.ci/run`` installs Debian's ``chromium``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lmh_deploy.reports.html import write_html

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def _browser(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert BROWSER is not None
    return subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={cwd / 'profile'}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (.ci/run installs Debian's chromium)")
def test_run_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2))
    fig.add_subplot().plot([0, 1, 2], [0, 2, 1])
    plot = tmp_path / "firing_rates.png"
    fig.savefig(plot)
    summary = {
        "backend": "sim",
        "samples": 4,
        "timesteps": 4,
        "accuracy": 0.75,
        "seconds": 0.01,
        "layers": [
            {"name": "lmh0", "kind": "lmh", "neurons": 8, "spikes_per_sample": 3.5, "firing_rate": 0.11},
            {"name": "readout", "kind": "readout", "neurons": 3},
        ],
        "totals": {"synops": 40, "spikes": 14, "neuron_updates": 128, "saturation_events": 0},
        "energy_joules": 2e-9,
        "ann_energy_joules": 5e-9,
        "predictions": [0, 2, 1, 1],
    }
    page = write_html(summary, tmp_path / "report.html", images={"firing_rates": str(plot)})
    dom = _browser("--dump-dom", page.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # the browser parsed the page whole: headline, plot, then the folded raw fields
    assert html.index("<h2>Plots</h2>") < html.index("<h2>Layers</h2>") < html.index("<details>")
    assert re.search(r"<details>\s*<summary>Other fields", html) and "<details open" not in html
    assert "2.5 times less than the equivalent ANN" in html
    shot = tmp_path / "shot.png"
    res = _browser(f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri(), cwd=tmp_path)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (1600, 1200)
    assert (pixels < 128).mean() > 0.002  # text and the plot's ink, not a blank page
