"""Two deployments side by side (``lmh-deploy compare RUN_A.json RUN_B.json``).

The inputs are run summaries (``lmh-deploy run --json``), e.g. the same architecture trained
with LM-H and with LIF neurons. :func:`compare_runs` puts accuracy, spikes, synaptic ops and
the Loihi energy estimate next to each other, in total and per layer (layers matched by
name), plus accuracy against T where both runs carry a T sweep. Values are per sample;
``ratio`` is B / A, and for accuracy ``points`` is B - A in percentage points.
:mod:`lmh_deploy.reports.compare_html` renders the HTML page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmh_deploy.errors import InputError, MissingFileError

#: Totals compared, as ``(key, label, unit)``; every value is per sample.
TOTALS = (
    ("accuracy", "accuracy", "%"),
    ("spikes_per_sample", "spikes / sample", ""),
    ("synops_per_sample", "synaptic ops / sample", ""),
    ("energy_joules", "energy / sample (Loihi estimate)", "J"),
    ("ann_energy_joules", "energy / sample, equivalent ANN", "J"),
)
#: Per-layer quantities compared, as ``(key, label)``.
LAYER_FIELDS = (
    ("spikes_per_sample", "spikes / sample"),
    ("firing_rate", "firing rate"),
    ("synops_per_sample", "synaptic ops / sample"),
    ("energy_joules", "energy / sample"),
)


def load_run(path: str | Path) -> dict[str, Any]:
    """A run summary from ``path``; InputError naming the file and the cause otherwise."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    missing = [
        k
        for k in ("samples", "layers", "totals", "energy_joules")
        if not isinstance(doc, dict) or k not in doc
    ]
    if missing:
        raise InputError(
            f"{path}: not a run summary (missing {', '.join(missing)}; expected "
            "the output of `lmh-deploy run --json`)"
        )
    if not isinstance(doc["samples"], int) or doc["samples"] < 1:
        raise InputError(f"{path}: 'samples' must be a positive integer, got {doc['samples']!r}")
    return doc


def _totals(run: dict[str, Any]) -> dict[str, float | None]:
    n = run["samples"]
    return {
        "accuracy": run.get("accuracy"),
        "spikes_per_sample": run["totals"]["spikes"] / n,
        "synops_per_sample": run["totals"]["synops"] / n,
        "energy_joules": run["energy_joules"],
        "ann_energy_joules": run.get("ann_energy_joules"),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return b / a


def _points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else 100 * (b - a)


def _layer_value(layer: dict[str, Any], key: str) -> float | None:
    value = layer.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def compare_runs(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("A", "B")) -> dict[str, Any]:
    """The comparison of two run summaries (see the module docstring for the schema)."""
    ta, tb = _totals(a), _totals(b)
    totals = [
        {
            "key": key,
            "label": label,
            "unit": unit,
            "a": ta[key],
            "b": tb[key],
            # a share (accuracy) changes by points; a count or an energy by a factor
            "ratio": None if unit == "%" else _ratio(ta[key], tb[key]),
            "points": _points(ta[key], tb[key]) if unit == "%" else None,
        }
        for key, label, unit in TOTALS
    ]
    by_name_a = {layer["name"]: layer for layer in a["layers"]}
    by_name_b = {layer["name"]: layer for layer in b["layers"]}
    order = list(by_name_a) + [n for n in by_name_b if n not in by_name_a]
    layers = []
    for name in order:
        la, lb = by_name_a.get(name, {}), by_name_b.get(name, {})
        row: dict[str, Any] = {
            "name": name,
            "kind": la.get("kind") or lb.get("kind"),
            "neurons": la.get("neurons", lb.get("neurons")),
        }
        for key, _ in LAYER_FIELDS:
            va, vb = _layer_value(la, key), _layer_value(lb, key)
            row[key] = {"a": va, "b": vb, "ratio": _ratio(va, vb)}
        layers.append(row)
    sweep = []
    sa = {r["timesteps"]: r for r in a.get("t_sweep") or []}
    sb = {r["timesteps"]: r for r in b.get("t_sweep") or []}
    for t in sorted(set(sa) & set(sb)):
        sweep.append(
            {
                "timesteps": t,
                "accuracy_a": sa[t].get("accuracy"),
                "accuracy_b": sb[t].get("accuracy"),
                "energy_a": sa[t].get("energy_joules"),
                "energy_b": sb[t].get("energy_joules"),
            }
        )
    notes = []
    for key in ("timesteps", "samples", "backend"):
        if a.get(key) != b.get(key):
            notes.append(f"the runs differ in {key}: {a.get(key)} vs {b.get(key)}")
    return {
        "names": list(names),
        "samples": [a["samples"], b["samples"]],
        "timesteps": [a.get("timesteps"), b.get("timesteps")],
        "backends": [a.get("backend"), b.get("backend")],
        "totals": totals,
        "layers": layers,
        "t_sweep": sweep,
        "notes": notes,
    }


def compare_files(path_a: str | Path, path_b: str | Path) -> dict[str, Any]:
    """:func:`compare_runs` of two ``run --json`` files, named after their files.

    A file in a folder of its own (``lmh/run.json``) is named after the folder.
    """
    paths = [Path(path_a), Path(path_b)]
    names = [p.parent.name if p.stem == "run" and p.parent.name else p.stem for p in paths]
    if names[0] == names[1]:
        names = [str(p) for p in paths]
    return compare_runs(load_run(paths[0]), load_run(paths[1]), (names[0], names[1]))
