"""The one timing harness of the bench scripts.

Every ratio a bench reports comes from :func:`alternate`: the sides being compared (A, B, ...)
run in turns, A B A B ... (the order reversed every other round, A B B A ..., so neither side
always runs first), after warm-up calls of each; each round gives one time per side and one
ratio per pair of sides, and the reported figure is the **median over the rounds** with its
spread (min, max, interquartile range). A load burst on this shared machine then slows the
sides of the same round alike instead of one side's whole series. :func:`environment`
records what a reader needs to judge the numbers (load average at start and end, threads,
CPU model, versions, git commit); every bench JSON carries it.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Timed:
    """What a side of :func:`alternate` returns when it times itself (e.g. Lava's steps
    without its start-up, or seconds per sample-step): used in place of the call's own wall
    and CPU time. ``cpu_seconds`` None: not measurable (work in other processes)."""

    seconds: float
    cpu_seconds: float | None = None


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` (single-sided timings, no ratio)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def summary(values: list[float]) -> dict[str, float]:
    """Median, min, max and interquartile range of ``values``."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "q1": q1, "q3": q3}


def fastest(warmups: dict[str, list[float]]) -> tuple[str, dict[str, float]]:
    """The variant to time, by its warm-up seconds (``variant -> seconds of each warm-up
    run``, in order): the lowest median over the later half of each variant's runs (the
    first runs compile, pack and measure ways), with those medians. A median, not the
    best: a variant with one lucky warm-up (batch shards on VGG-13, 65 ms once against
    68-79 ms in the timed rounds) is not picked over one that is steadily faster."""
    medians = {name: statistics.median(times[len(times) // 2 :]) for name, times in warmups.items()}
    return min(medians, key=medians.__getitem__), medians


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages (runnable processes, not CPU percent)."""
    return [round(x, 2) for x in os.getloadavg()]


def alternate(
    sides: dict[str, Callable[[], Any]],
    *,
    rounds: int = 5,
    warmup: int = 1,
    ratios: dict[str, tuple[str, str]] | None = None,
    settle: float = 0.0,
) -> dict[str, Any]:
    """Time ``sides`` in alternation; medians and spreads of the times and of ``ratios``.

    ``settle`` seconds pass, untimed, before every timed call, so that no side pays for the
    one before it: an OpenMP team a side leaves spinning (libgomp spins its idle workers for
    a while before it sleeps them) takes a core from the next side for that long.

    ``ratios`` maps a name to ``(slow, fast)``: the ratio of a round is ``time[slow] /
    time[fast]`` (how many times faster ``fast`` is), taken within the round. A side that
    returns a :class:`Timed` gives its own times (a CPU ratio is left out where a side has
    none).
    Returns ``{"seconds": {side: summary}, "ratios": {name: summary}, "rounds": n,
    "per_round": {side: [s, ...]}, "load_per_round": [[1, 5, 15 min], ...]}`` and the same
    for the process's CPU time (``cpu_seconds``, ``cpu_ratios``, ``cpu_per_round``): wall
    time is what a user waits; CPU time leaves out the waits for a core on a loaded
    machine (with one thread per side it is the steadier measure of the code itself).
    """
    if rounds < 1:
        raise ValueError("alternate: rounds must be >= 1")
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name]()
    per_round: dict[str, list[float]] = {name: [] for name in names}
    cpu_per_round: dict[str, list[Any]] = {name: [] for name in names}
    loads = []
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            if settle:
                time.sleep(settle)
            cpu_start, start = time.process_time(), time.perf_counter()
            own = sides[name]()
            wall: float = time.perf_counter() - start
            cpu: float | None = time.process_time() - cpu_start
            if isinstance(own, Timed):
                wall, cpu = own.seconds, own.cpu_seconds
            per_round[name].append(wall)
            cpu_per_round[name].append(cpu)
        loads.append(load_average())
    result: dict[str, Any] = {
        "rounds": rounds,
        "warmup": warmup,
        "order": "A B, B A, A B, ... (alternating, reversed every other round)",
        "settle_s": settle,
        "seconds": {name: summary(ts) for name, ts in per_round.items()},
        "cpu_seconds": {name: summary(ts) for name, ts in cpu_per_round.items() if None not in ts},
        "per_round": per_round,
        "cpu_per_round": cpu_per_round,
        "load_per_round": loads,
        "ratios": {},
        "cpu_ratios": {},
    }
    for label, (slow, fast) in (ratios or {}).items():
        for key, times in (("ratios", per_round), ("cpu_ratios", cpu_per_round)):
            if None in times[slow] or None in times[fast]:
                continue
            values = [s / f for s, f in zip(times[slow], times[fast], strict=True)]
            result[key][label] = summary(values) | {"per_round": values}
    return result


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(threads: int) -> dict[str, Any]:
    """What a reader needs to judge a bench's numbers; call at the start of a run."""
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        # uncommitted changes to tracked code (bench outputs and Markdown do not count)
        "git_dirty": bool(
            _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!*.json", ":!*.md")
        ),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "load_average_start": load_average(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("numpy", "numba", "torch", "lava-nc", "lava-dl")},
    }


def finish(env: dict[str, Any]) -> dict[str, Any]:
    """``env`` with the load average at the end of the run added."""
    return env | {"load_average_end": load_average()}


def command_line() -> str:
    """The command that ran this bench, as a reader would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    where = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return " ".join(["python", str(where), *sys.argv[1:]])


def save(path: str | Path | None, result: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the command and :func:`environment` (end load added) first; written
    as JSON to ``path`` unless it is None. Returns the full record."""
    record = {"command": command_line(), "environment": finish(env)} | result
    if path is not None:
        Path(path).write_text(json.dumps(record, indent=1) + "\n")
    return record


def threaded(fn: Callable[[], Any], threads: int) -> Callable[[], Any]:
    """``fn`` run with torch, BLAS and numba at ``threads`` threads (restored after the call)."""
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    def run() -> Any:
        saved = torch.get_num_threads(), numba.get_num_threads()
        torch.set_num_threads(threads)
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            with threadpool_limits(threads):
                return fn()
        finally:
            torch.set_num_threads(saved[0])
            numba.set_num_threads(saved[1])

    return run


def set_threads(threads: int) -> None:
    """torch, BLAS and numba threads for the whole run (both sides of every ratio alike)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def sim_modules_at(ref: str, where: Path, package: str, modules: tuple[str, ...], entry: str):
    """git revision ``ref``'s ``sim/<name>.py`` for each of ``modules``, written to the package
    ``package`` under ``where`` with their imports of each other pointed there (the rest of
    sim/ is this tree's), and its module ``entry`` imported: the other side of an A/B of
    sim/'s code in one process (bench/chain_ab.py, bench/neuron_layers.py)."""
    root = Path(__file__).resolve().parent.parent
    target = where / package
    target.mkdir()
    (target / "__init__.py").write_text("")
    for name in modules:
        show = ["git", "-C", str(root), "show", f"{ref}:sim/{name}.py"]
        source = subprocess.run(show, capture_output=True, text=True, check=True).stdout
        for other in modules:
            for old, new in (
                (f"from lmh_deploy.sim.{other} import", f"from {package}.{other} import"),
                (f"from lmh_deploy.sim import {other}\n", f"from {package} import {other}\n"),
            ):
                source = source.replace(old, new)
        (target / f"{name}.py").write_text(source)
    sys.path.insert(0, str(where))
    return importlib.import_module(f"{package}.{entry}")
