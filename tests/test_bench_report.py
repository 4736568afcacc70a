"""BENCHMARKS.md's tables are exactly what ``bench/report.py`` renders from ``bench/*.json``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmarks_tables_match_their_json() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    assert _report().render(text) == text, "run: python bench/report.py"


def test_every_table_block_names_a_renderer_and_a_json() -> None:
    report = _report()
    names = [m["name"] for m in report.BLOCK.finditer((ROOT / "BENCHMARKS.md").read_text())]
    assert names
    for name in names:
        assert name in report.RENDER, name
        record = json.loads((ROOT / "bench" / f"{name.split('-')[0]}.json").read_text())
        assert {"command", "environment"} <= set(record), name
