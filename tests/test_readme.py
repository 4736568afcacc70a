"""The README's "Commands, in order" blocks run top to bottom, as a new user runs them.

Each fenced ``bash`` block of that section runs in one fresh folder (holding a copy of
``examples/``, as a clone does), in order, under ``bash -e`` with the installed ``lmh-deploy``
and ``python`` first on PATH; every line must succeed. The time of each block is printed
(``-s`` shows it) for the README's figures. ``LMH_README_QUICK=1`` shrinks epochs and sample
counts for a quick look; CI runs the blocks as written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Commands, in order"
QUICK = [(r"--epochs \d+", "--epochs 1"), (r"--samples (360|100)\b", "--samples 20")]


def readme_blocks() -> list[str]:
    """The bash blocks of the section, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + 1)
    return re.findall(r"```bash\n(.*?)```", text[start:end], re.S)


def test_the_section_has_blocks_and_each_names_only_real_commands() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 4
    for block in blocks:
        for line in filter(None, block.splitlines()):
            assert line.split()[0] in ("lmh-deploy", "python"), line


@pytest.mark.slow
def test_readme_blocks_run_top_to_bottom(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    quick = os.environ.get("LMH_README_QUICK", "") not in ("", "0")
    for number, block in enumerate(readme_blocks(), 1):
        if quick:
            for pattern, small in QUICK:
                block = re.sub(pattern, small, block)
        start = time.perf_counter()
        res = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        seconds = time.perf_counter() - start
        print(f"README block {number}: {seconds:.0f} s")
        output = f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        assert res.returncode == 0, f"block {number} failed:\n{block}\n{output}"
