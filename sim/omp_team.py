"""torch's own OpenMP team as the threads of sim/'s split kernels.

sim/ splits a compiled kernel's batch rows over threads (:func:`lmh_deploy.sim.neuron.run_in_threads`;
the kernels release the GIL). Between those kernels torch runs the convolutions on its OpenMP
team, and GNU OpenMP's workers do not sleep when a parallel region ends: they spin, waiting for
the next one, for about 10 ms (measured on this project's 2-core machines: a process burnt 8-11 ms
of CPU in a 10-300 ms sleep after a 2-thread conv). A Python thread that then runs the other half
of a neuron kernel shares its core with a spinning worker, and the split gained nothing: VGG-13
(bench/sim_vs_float.py's row, 2 threads) spent 20-24 ms in its neuron kernels split over Python
threads, 15-17 ms on one thread.

Here the parts run on that team instead: one ``GOMP_parallel`` call (the entry point GCC emits for
``#pragma omp parallel``, part of libgomp's ABI) starts the team of the calling thread, whose
spinning workers take their part at once, each calling back into Python (ctypes takes the GIL for
the call; the kernel itself releases it). Same parts, same results, bit for bit: only which
threads run them changes (VGG-13's neuron kernels: 14-17 ms instead of 19-24 ms).

Used only where it is safe and helps: torch is imported and runs its intra-op work on OpenMP
(``torch.__config__.parallel_info()``), the process maps exactly one OpenMP runtime that exports
``GOMP_parallel`` (torch's own copy is preferred), and this process has not been forked from
one that may have started a team: GNU OpenMP is not fork-safe (a forked child that starts a team
its parent had hangs; so does torch's own next parallel op there), so a fork after this module's
import turns the team off in the child (:func:`os.register_at_fork`), and so does running in a
child of :mod:`multiprocessing` (Lava's processes, a DataLoader's workers), however started.
Elsewhere :func:`team` is None and sim/ keeps its Python threads.
``LMH_DEPLOY_SIM_NO_OMP_TEAM=1`` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import Any

_OFF_BY_ENV = os.environ.get("LMH_DEPLOY_SIM_NO_OMP_TEAM", "") not in ("", "0")
_RUNTIME_PREFIXES = ("libgomp", "libiomp5")  # libiomp5 exports the GOMP_ entry points too

#: the runtime found for this process (pid -> library or None), looked up once
_FOUND: dict[int, Any] = {}
_FORKED = [False]

_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _forked_child() -> None:
    _FORKED[0] = True


os.register_at_fork(after_in_child=_forked_child)


def team():
    """The OpenMP runtime torch runs on (a ctypes library), or None where sim/ keeps its own
    Python threads (module docstring)."""
    if _OFF_BY_ENV or _FORKED[0]:
        return None
    pid = os.getpid()
    if pid not in _FOUND:
        _FOUND.clear()
        _FOUND[pid] = _torch_runtime()
    return _FOUND[pid]


def _torch_runtime():
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        return None
    torch = sys.modules.get("torch")
    if torch is None or "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    path = _mapped_runtime(os.path.dirname(torch.__file__))
    if path is None:
        return None
    lib = ctypes.CDLL(path)  # the mapped copy itself: dlopen of a loaded file returns it
    try:
        lib.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        lib.GOMP_parallel.restype = None
        lib.omp_get_thread_num.restype = ctypes.c_int
        lib.omp_get_num_threads.restype = ctypes.c_int
    except AttributeError:  # a runtime without the GNU entry points
        return None
    return lib


def _mapped_runtime(torch_dir: str) -> str | None:
    """The OpenMP runtime file mapped into this process: torch's own copy where there is one,
    else the only one mapped; None where none or several others are (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as maps:
            fields = [line.split(maxsplit=5) for line in maps]
    except OSError:  # not Linux
        return None
    paths = {f[5].strip() for f in fields if len(f) == 6}
    runtimes = sorted(p for p in paths if os.path.basename(p).startswith(_RUNTIME_PREFIXES))
    own = [p for p in runtimes if p.startswith(torch_dir + os.sep)]
    if len(own) == 1:
        return own[0]
    return runtimes[0] if len(runtimes) == 1 else None


def run_on_team(lib, fn: Callable[..., Any], parts: list[tuple[int, int]]) -> list:
    """``fn(lo, hi)`` for every range on the calling thread's OpenMP team of ``len(parts)``
    threads (the caller is thread 0), results in order. Where the team has fewer threads (a
    call from inside a parallel region gets one), each thread runs every ``team``-th part. An
    exception in a part is raised here, after every thread has returned; the thread it
    happened on runs no further part."""
    results: list = [None] * len(parts)
    errors: list[BaseException] = []

    def body(_data) -> None:
        me, size = lib.omp_get_thread_num(), lib.omp_get_num_threads()
        for i in range(me, len(parts), size):
            try:
                results[i] = fn(*parts[i])
            except BaseException as error:  # re-raised in the calling thread
                errors.append(error)
                return

    callback = _BODY(body)  # referenced until the call returns
    lib.GOMP_parallel(ctypes.cast(callback, ctypes.c_void_p), None, len(parts), 0)
    if errors:
        raise errors[0]
    return results
