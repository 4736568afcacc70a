"""A Lava run ends cleanly, whatever happens: a worker's exception ends ``run --backend lava``
within seconds with that exception, Ctrl-C and SIGTERM end it (and a sim/ run) with one line
and exit 130 / 143, and no Lava worker outlives the command, even when the command itself is
SIGKILLed.

Each case runs the real command in a subprocess (its own session, so that a Ctrl-C can go to
its whole process group) under a timeout, so that a hang fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lmh_deploy.models.architectures import mlp
from lmh_deploy.models.checkpoint import save_checkpoint
from lmh_deploy.pipeline.compile import compile_model

ARCH = {"hidden": [16], "timesteps": 4}
DATASET = {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "x_max": 1.0, "seed": 0}

# A driver: `python driver.py MODE ARTIFACT` runs `lmh-deploy run ARTIFACT --backend lava` with
# the LM-H ProcessModel's update replaced (in the main process, so that the forked Lava
# workers inherit it): it raises a bug, raises a user error, or takes 3 s a step.
DRIVER = """
import sys, time
import lmh_deploy
from lmh_deploy.backends.lava.procs.lmh import models
from lmh_deploy.errors import InputError

mode, artifact, marker = sys.argv[1], sys.argv[2], sys.argv[3:]
slow_update = models.PyLMHModelFixed.update
backend = "lava"
if mode == "slow-sim":  # sim/ runs in this process: it signals its start, then takes minutes
    from pathlib import Path
    import lmh_deploy.pipeline.run as pipeline_run

    def slow_sim(*args, **kwargs):
        Path(marker[0]).write_text("started")
        time.sleep(600)

    pipeline_run.simulate_batched = slow_sim
    backend = "sim"

def update(self, step, a_in):
    if mode == "bug":
        raise ValueError("boom in a Lava worker")
    if mode == "user":
        raise InputError("layer lmh0: a value the user can fix")
    time.sleep(3)
    return slow_update(self, step, a_in)

models.PyLMHModelFixed.update = update
from lmh_deploy.cli import app
sys.argv = ["lmh-deploy", "run", artifact, "--backend", backend, "--samples", "2"]
app()
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("supervise")
    torch.manual_seed(0)
    save_checkpoint(work / "m.pt", mlp((1, 8, 8), 10, **ARCH), arch="mlp", arch_kwargs=ARCH, dataset=DATASET)
    compile_model(work / "m.pt", work / "build", calibration_samples=4)
    (work / "driver.py").write_text(textwrap.dedent(DRIVER))
    return work / "driver.py", work / "build"


def _start(driver: tuple[Path, Path], mode: str, *extra: str) -> subprocess.Popen:
    script, artifact = driver
    return subprocess.Popen(
        [sys.executable, str(script), mode, str(artifact), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # a terminal's Ctrl-C: SIGINT at its default, as in a foreground job (a shell without job
        # control starts background jobs, and so this test run, with SIGINT ignored; the child
        # would inherit that and Python would install no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _descendants(pid: int) -> set[int]:
    """Living processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _wait_for_workers(proc: subprocess.Popen, at_least: int = 5, timeout: float = 120) -> set[int]:
    """The command's processes once its Lava run has started (>= ``at_least`` workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _descendants(proc.pid)
        if len(kids) >= at_least:
            time.sleep(1.0)  # let the runtime finish starting all of them
            return _descendants(proc.pid)
        if proc.poll() is not None:
            raise AssertionError(f"the command ended before its Lava run started: {proc.communicate()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the Lava run did not start")


def _assert_gone(pids: set[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _alive(pids)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} Lava processes outlived the command"


@pytest.mark.parametrize("mode", ["bug", "user"])
def test_worker_exception_ends_the_command(driver, mode: str) -> None:
    proc = _start(driver, mode)
    try:
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        pids = _descendants(proc.pid)
        proc.kill()
        _assert_gone(pids)
        raise AssertionError("a Lava worker's exception hung the command") from None
    if mode == "bug":  # a bug: its traceback, from the worker, and exit 1
        assert proc.returncode == 1, err
        assert "ValueError: boom in a Lava worker" in err and "worker traceback" in err
        assert "in update" in err and "internal error" in err
    else:  # the user's fault: one line, exit 2
        assert proc.returncode == 2, err
        assert err.strip() == "error: layer lmh0: a value the user can fix", err
    assert not _descendants(proc.pid)


def _interrupt_ends_with_one_line(proc, how: str, what: str, on_timeout=lambda: None) -> None:
    """Ctrl-C (the terminal sends SIGINT to the whole foreground process group) or SIGTERM:
    the command exits 130 / 143 within 30 s, saying one line and writing nothing."""
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        on_timeout()
        raise AssertionError(f"{how} did not stop {what}") from None
    assert proc.returncode == (130 if how == "ctrl-c" else 143), err
    assert err == "interrupted; nothing written\n" and out == ""


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_stops_lava_with_one_line(driver, how: str) -> None:
    proc = _start(driver, "slow")
    workers = _wait_for_workers(proc)
    start = time.monotonic()
    _interrupt_ends_with_one_line(proc, how, "the Lava run", lambda: _assert_gone(workers))
    assert time.monotonic() - start < 15
    _assert_gone(workers)


def test_no_worker_outlives_a_killed_command(driver) -> None:
    proc = _start(driver, "slow")
    workers = _wait_for_workers(proc)
    proc.kill()  # SIGKILL: no cleanup runs in the main process
    proc.wait(timeout=30)
    _assert_gone(workers)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_stops_the_sim_with_one_line(driver, how: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    proc = _start(driver, "slow-sim", str(started))
    deadline = time.monotonic() + 120
    while not started.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the sim run did not start: {proc.communicate()}")
        time.sleep(0.2)
    _interrupt_ends_with_one_line(proc, how, "the sim run")
