"""No Lava worker outlives a run, and a worker's exception ends the run with its message.

Lava's CPU runtime forks one OS process per Process (and a runtime service and a shared-memory
server). In lava-nc 0.10, when a ProcessModel raises, the worker reports it, exits, and the
others wait for it for ever: the run hangs without a word. When the main process is killed,
the workers live on. :func:`supervised` closes both holes:

* A watchdog thread polls the workers every 0.1 s. A worker that ends while the run is in
  progress failed: the watchdog interrupts the main thread (``SIGUSR1``), which raises the
  worker's exception there: a :class:`~lmh_deploy.errors.UserError` as it is (one line),
  anything else as :class:`LavaWorkerError` with the worker's traceback (a bug).
* On any way out (return, exception, Ctrl-C, ``SIGTERM`` turned into an exception by the
  CLI) every worker still alive is killed and the shared memory is released.
* Every process forked while a run is supervised sets ``PR_SET_PDEATHSIG`` (``SIGKILL``),
  so the kernel kills it if the main process dies, even by ``SIGKILL``; it ignores
  ``SIGINT`` (a Ctrl-C reaches the whole process group; the main process alone decides).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import util as mp_util
from typing import Any

from lmh_deploy.errors import UserError

POLL_S = 0.1
_PR_SET_PDEATHSIG = 1


class LavaWorkerError(RuntimeError):
    """A Lava worker process raised; the message holds its exception and traceback."""


class _ChildSetup:
    """Run in every process forked by multiprocessing (Lava's workers) after the fork."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __call__(self, _: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the main process's cleanup still runs
            return
        if os.getppid() != self.parent:  # the parent died before prctl took effect
            os._exit(1)


_CHILD_SETUP: _ChildSetup | None = None


def _install_child_setup() -> None:
    global _CHILD_SETUP
    if _CHILD_SETUP is None or _CHILD_SETUP.parent != os.getpid():
        _CHILD_SETUP = _ChildSetup()
        mp_util.register_after_fork(_CHILD_SETUP, _CHILD_SETUP)


def _worker_error(actor: Any) -> BaseException:
    """The exception a finished worker reported (Lava's ``SystemProcess`` pipes it home)."""
    failure = None
    try:
        if actor._pconn.poll():
            failure = actor._pconn.recv()
    except (OSError, EOFError):
        pass
    if failure is None:
        return LavaWorkerError(f"a Lava worker process ended during the run (exit code {actor.exitcode})")
    exc, trace = failure
    if isinstance(exc, UserError):
        return exc
    return LavaWorkerError(f"a Lava worker raised {type(exc).__name__}: {exc}\n\nworker traceback:\n{trace}")


class _Watchdog(threading.Thread):
    def __init__(self, process: Any, main_thread: int) -> None:
        super().__init__(name="lava-watchdog", daemon=True)
        self.process = process  # the Lava Process whose runtime is watched
        self.main_thread = main_thread
        self.failure: BaseException | None = None
        self.stopping = threading.Event()  # workers may end now (stop, cleanup)
        self.done = threading.Event()

    def actors(self) -> list:
        runtime = self.process.runtime
        infrastructure = getattr(runtime, "_messaging_infrastructure", None)
        return list(getattr(infrastructure, "actors", None) or [])

    def run(self) -> None:
        while not self.done.wait(POLL_S):
            if self.stopping.is_set():
                continue
            ended = [a for a in self.actors() if a.exitcode is not None]
            if ended and self.failure is None:
                self.failure = _worker_error(ended[0])
            if self.failure is not None:  # again until the main thread has taken it
                signal.pthread_kill(self.main_thread, signal.SIGUSR1)


def kill_workers(process: Any) -> None:
    """Kill every worker of ``process``'s runtime still alive and free its shared memory."""
    runtime = process.runtime
    infrastructure = getattr(runtime, "_messaging_infrastructure", None)
    if infrastructure is None:
        return
    for actor in list(infrastructure.actors):
        if actor.is_alive():
            actor.kill()
    for actor in list(infrastructure.actors):
        actor._popen and actor._popen.wait(5)  # reap (Popen.wait, not join: no close())
    smm = infrastructure.smm
    if smm is not None:
        smm.shutdown()
    runtime._is_started = runtime._is_running = False  # nothing left for Runtime.__del__ to stop


@contextmanager
def supervised(process: Any) -> Iterator[_Watchdog]:
    """Supervise the Lava runtime that ``process`` creates inside the block (see the module).

    Call ``watchdog.stopping.set()`` before stopping the runtime normally.
    """
    _install_child_setup()
    in_main = threading.current_thread() is threading.main_thread()
    watchdog = _Watchdog(process, threading.get_ident())
    previous = None
    if in_main:

        def raise_failure(signum: int, frame: Any) -> None:
            failure = watchdog.failure
            if failure is not None:
                watchdog.failure = None
                watchdog.done.set()
                raise failure

        previous = signal.signal(signal.SIGUSR1, raise_failure)
        watchdog.start()
    clean = False
    try:
        yield watchdog
        clean = True
    finally:
        watchdog.done.set()
        if watchdog.is_alive():
            watchdog.join()
        if in_main:
            signal.signal(signal.SIGUSR1, previous)
        if not clean:
            kill_workers(process)


@contextmanager
def lava_session(process: Any) -> Iterator[None]:
    """:func:`supervised` around the block, whose Lava runtime (created by ``process.run``) is
    stopped normally when the block succeeds, and its workers killed when it does not."""
    with supervised(process) as watchdog:
        yield
        watchdog.stopping.set()
        process.stop()
