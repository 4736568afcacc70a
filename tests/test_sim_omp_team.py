"""sim/'s split kernels on torch's OpenMP team (sim/omp_team.py): found, used, exact, and
never started where it could hang (a forked child)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
from lmh_deploy.sim import neuron as N
from lmh_deploy.sim import omp_team, simulate
from lmh_deploy.sim.way_costs import WayCosts
from shared import threads_at_any_size


def _torch_team():
    """torch's runtime, after one op at two threads has started its team."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.nn.functional.conv2d(torch.ones(2, 4, 8, 8), torch.ones(4, 4, 3, 3))
    finally:
        torch.set_num_threads(saved)
    return omp_team.team()


def test_torchs_own_openmp_runtime_is_found() -> None:
    """The CPU wheel's torch runs intra-op work on GNU OpenMP, its own copy under torch/lib:
    that copy is the team, and it exports what run_on_team calls."""
    assert "parallel backend: OpenMP" in torch.__config__.parallel_info()
    lib = _torch_team()
    assert lib is not None
    assert lib._name.startswith(os.path.dirname(torch.__file__) + os.sep), lib._name
    assert os.path.basename(lib._name).startswith("libgomp")


def test_parts_run_on_the_team_in_order_the_first_on_the_caller() -> None:
    """The first range on the calling thread, the others on threads Python did not start
    (the team's workers), each range once, results in the ranges' order; the same workers
    again on the next call (the team is kept, not started anew)."""
    lib = _torch_team()
    python_threads = {t.native_id for t in threading.enumerate()}
    here = threading.get_native_id()

    def where(lo: int, hi: int) -> tuple[int, int, int]:
        return lo, hi, threading.get_native_id()

    parts = [(0, 2), (2, 5), (5, 6)]
    got = omp_team.run_on_team(lib, where, parts)
    assert [g[:2] for g in got] == parts and got[0][2] == here
    workers = {g[2] for g in got[1:]}
    assert len(workers) == 2 and not workers & python_threads
    again = omp_team.run_on_team(lib, where, parts)
    assert {g[2] for g in again[1:]} == workers


def test_run_in_threads_times_the_team_one_thread_and_python_threads_and_takes_the_cheapest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per function and work: the team (its first use untimed, then timed), all parts in
    this thread one after the other on calls 8 (untimed) and 12 (timed), the Python threads
    on calls 16 and 20, then the cheapest per unit of ``work``, the runner-up again on call
    32 and every 64th (sim/way_costs.py); the parts marked as parts every way (a split
    inside runs in place) and their results in order."""
    assert _torch_team() is not None
    monkeypatch.setattr(N, "_DISPATCH", {})
    here = threading.get_native_id()
    python_threads = lambda: {t.native_id for t in threading.enumerate()}

    def where(lo: int, hi: int) -> tuple[int, int, bool]:
        return lo, threading.get_native_id(), N._IN_PARTS.active

    def way(work: int = 10) -> str:
        got = N.run_in_threads(where, [(0, 1), (1, 2)], work=work)
        assert [lo for lo, _, _ in got] == [0, 1] and all(marked for _, _, marked in got)
        assert got[0][1] == here
        other = got[1][1]
        return "one thread" if other == here else "threads" if other in python_threads() else "team"

    # seconds per unit as measured: the team cheapest, then one thread (the schedule alone)
    fixed = {"team": 1e-9, "one thread": 3e-9, "threads": 5e-9}
    record = WayCosts.record
    monkeypatch.setattr(
        WayCosts, "record", lambda self, w, units, _: record(self, w, units, fixed[w] * units)
    )
    first = [way() for _ in range(20)]
    assert {i + 1: w for i, w in enumerate(first) if w != "team"} == {
        8: "one thread",
        12: "one thread",
        16: "threads",
        20: "threads",
    }
    costs = N._DISPATCH[where.__code__, 10, 2, False]
    assert set(costs.cost) == {"team", "one thread", "threads"}
    assert costs.cost == pytest.approx(fixed)
    monkeypatch.setattr(costs, "record", lambda *args: None)  # the costs below held fixed
    picks = [way() for _ in range(114)]  # calls 21 to 134
    assert {i + 21: w for i, w in enumerate(picks) if w != "team"} == {
        32: "one thread",
        64: "one thread",
        128: "one thread",
    }
    costs.cost.update(team=1e-3, threads=1e-9, **{"one thread": 1e-3})
    assert all(way() == "threads" for _ in range(10))
    costs.cost.update(team=1e-3, threads=1e-3, **{"one thread": 1e-9})
    assert all(way() == "one thread" for _ in range(10))
    assert way(work=20) == "team" and len(N._DISPATCH) == 2  # another size: timed on its own


def test_a_failing_part_reaches_the_caller_after_the_others_ended() -> None:
    """An exception in a part on a worker is raised in the caller, once every part has
    returned; the caller's own part ran to its end."""
    lib = _torch_team()
    done: list[int] = []

    def part(lo: int, hi: int) -> int:
        if lo == 1:
            raise ValueError(f"part {lo} failed")
        done.append(lo)
        return lo

    with pytest.raises(ValueError, match="part 1 failed"):
        omp_team.run_on_team(lib, part, [(0, 1), (1, 2)])
    assert done == [0]


def test_a_team_started_inside_a_part_runs_every_part_in_that_thread() -> None:
    """GNU OpenMP gives a team started inside a parallel region one thread: run_on_team then
    runs all of its parts there, in order (a nested call does not lose or repeat a part)."""
    lib = _torch_team()

    def inner(lo: int, hi: int) -> tuple[int, int]:
        return lo, threading.get_native_id()

    def outer(lo: int, hi: int) -> list:
        return omp_team.run_on_team(lib, inner, [(lo, lo + 1), (lo + 1, lo + 2), (lo + 2, hi)])

    results = omp_team.run_on_team(lib, outer, [(0, 3), (3, 6)])
    assert [[lo for lo, _ in inner_parts] for inner_parts in results] == [[0, 1, 2], [3, 4, 5]]
    assert all(len({tid for _, tid in inner_parts}) == 1 for inner_parts in results)


def test_the_team_and_python_threads_give_the_same_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A residual conv net split over 3 threads at every layer: the same record on torch's
    team as on Python threads (spikes, states, counts), and both equal the one-thread run."""
    from test_sim_paths import _net

    q = _net("resnet20", (3, 8, 8))
    x = np.random.default_rng(4).integers(0, 256, (5, 3, 8, 8))
    one = simulate(q, x, 5)
    with threads_at_any_size(3):
        on_team = simulate(q, x, 5)
        monkeypatch.setattr(N, "team", lambda: None)
        on_pool = simulate(q, x, 5)
    for run in (on_team, on_pool):
        assert np.array_equal(run.logits, one.logits)
        for name, spikes in one.spikes.items():
            assert np.array_equal(run.spikes[name], spikes), name
            assert all(np.array_equal(a, b) for a, b in zip(run.final_state[name], one.final_state[name]))
        assert run.saturation == one.saturation


CHILD = textwrap.dedent(
    """
    import multiprocessing, os, sys
    import torch
    from lmh_deploy.sim import neuron, omp_team

    torch.set_num_threads(2)
    torch.nn.functional.conv2d(torch.ones(2, 4, 8, 8), torch.ones(4, 4, 3, 3))
    assert omp_team.team() is not None
    neuron.run_in_threads(lambda lo, hi: lo, [(0, 1), (1, 2)])  # the parent's team is started

    def child_run(queue):
        queue.put((omp_team.team() is None, neuron.run_in_threads(lambda lo, hi: hi, [(0, 1), (1, 2)])))

    pid = os.fork()
    if pid == 0:  # a plain fork: the at-fork hook turns the team off here
        ok = omp_team.team() is None and neuron.run_in_threads(lambda lo, hi: hi, [(0, 1), (1, 2)]) == [1, 2]
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    queue = multiprocessing.get_context("fork").Queue()
    worker = multiprocessing.get_context("fork").Process(target=child_run, args=(queue,))
    worker.start()
    assert queue.get(timeout=60) == (True, [1, 2])
    worker.join(60)
    print("children ran")
    """
)


def test_forked_children_keep_python_threads_and_do_not_hang(tmp_path) -> None:
    """A child forked after the parent's team ran (GNU OpenMP's team does not survive a fork:
    starting it again there hangs) splits on Python threads: by os.fork and by a
    multiprocessing fork, each finishing its split run."""
    script = tmp_path / "fork_child.py"
    script.write_text(CHILD)
    # its own process group: a child hung in the team would outlive a plain kill of the script
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0 and "children ran" in out, out + err


def test_no_team_without_torch_openmp_or_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """None where torch's intra-op backend is not OpenMP, in a multiprocessing child, and
    with LMH_DEPLOY_SIM_NO_OMP_TEAM set (read at import: the flag itself here)."""
    native = "ATen parallel backend: native thread pool"
    monkeypatch.setattr(omp_team, "_FOUND", {})
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: native)
    assert omp_team.team() is None
    monkeypatch.undo()
    import multiprocessing

    monkeypatch.setattr(omp_team, "_FOUND", {})
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    assert omp_team.team() is None
    monkeypatch.undo()
    monkeypatch.setattr(omp_team, "_FOUND", {})
    monkeypatch.setattr(omp_team, "_OFF_BY_ENV", True)
    assert omp_team.team() is None
    monkeypatch.setattr(omp_team, "_OFF_BY_ENV", False)
    assert omp_team.team() is not None
