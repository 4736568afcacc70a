"""Stage 4a: run a lowered network on Lava's CPU simulator (or Loihi 2 when available)."""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.sparse import SparseEfficiencyWarning

import lmh_deploy  # noqa: F401  - installs the Python 3.11 Lava import fix first
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel

from lmh_deploy.ir import Graph, QReadout, Readout
from lmh_deploy.backends.lava.lower import LavaNetwork, Precision, lower
from lmh_deploy.backends.lava.plan import LavaPlan
from lmh_deploy.backends.lava.supervise import lava_session
from lmh_deploy.backends.record import RunRecord, synops_from_spikes
from lmh_deploy.semantics.readout import readout_sum


def _per_sample(trace: np.ndarray, start: int, samples: int, timesteps: int) -> np.ndarray:
    """Per-step values (total, n) -> (T, B, n): sample b step t sits at row start + b*T + t."""
    rows = trace[start : start + samples * timesteps]
    return rows.reshape(samples, timesteps, rows.shape[1]).transpose(1, 0, 2)


def read_back(net: LavaNetwork, readout: QReadout | Readout, integer: bool) -> RunRecord:
    """Collect what a network that has run ``net.total_steps`` steps sent to the host: each
    layer's spikes and final state (the last sample's: each layer freezes after its window),
    and the readout currents."""
    b, t = net.samples, net.timesteps
    rec = RunRecord(logits=np.zeros((b, 0)))
    for name, neuron in net.neurons.items():
        rec.spikes[name] = _per_sample(neuron.recorded_spikes(), 0, b, t)
        v_d, v_s, saturated = neuron.recorded_state()
        rec.final_state[name] = (v_d[None, :], v_s[None, :])
        rec.saturation[name] = saturated
    trace = np.stack([net.readout.receive() for _ in range(net.total_steps)])
    currents = _per_sample(trace, net.start_step["readout"], b, t)
    if integer:  # fixed_pt: Lava's host channels carry the integers as float64
        currents = currents.astype(np.int64)
    rec.readout_trace = currents
    rec.logits = readout_sum(currents, np.asarray(readout.bias), readout.leaky)
    return rec


def _cpu_with_workers() -> float | None:
    """CPU seconds so far of this process and its child processes: the live ones from
    Linux's /proc, the ended ones from ``RUSAGE_CHILDREN`` (None where /proc is unreadable)."""
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + ended.ru_utime + ended.ru_stime
    ticks = os.sysconf("SC_CLK_TCK")
    for child in multiprocessing.active_children():
        try:
            # fields after the command's ")": state is field 3, utime 14, stime 15
            fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # ended since the listing: counted in RUSAGE_CHILDREN from now on
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class _Clock:
    """Wall seconds of consecutive parts into ``phases`` (nothing when it is None), and the
    CPU seconds of this process and its workers in each (``NAME_cpu``)."""

    def __init__(self, phases: dict[str, float] | None) -> None:
        self.phases, self.last = phases, time.perf_counter()
        self.cpu = _cpu_with_workers() if phases is not None else None

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.phases is not None:
            self.phases[name] = now - self.last
            cpu = _cpu_with_workers()
            if cpu is not None and self.cpu is not None:
                self.phases[f"{name}_cpu"] = cpu - self.cpu
            self.cpu = cpu
        self.last = now


def run_lava(
    graph: Graph,
    inputs: np.ndarray,
    timesteps: int,
    precision: Precision = "fixed_pt",
    *,
    phases: dict[str, float] | None = None,
    first_steps: int = 0,
    plan: LavaPlan | None = None,
) -> RunRecord:
    """Lower ``graph`` for ``inputs`` (B, *shape) or frames (T', B, *shape), run it under
    ``Loihi2SimCfg`` and read back.

    Runs under :func:`~lmh_deploy.backends.lava.supervise.lava_session`: a worker's exception
    ends the run with that exception (no hang), and on any error or interruption every
    worker process is killed, so none outlives the call. Fixed-point results are integers
    (cast from the float64 values Lava's host channels carry). ``phases``, if given, receives
    the wall seconds of each part: ``lower`` (our Processes), ``compile`` (Lava's compiler),
    ``start`` (fork the workers, build their ProcessModels), ``steps`` (Lava's run of
    all global steps), ``read_back``, ``stop``; and ``steps_run``, the number of steps
    ``steps`` timed.
    ``first_steps`` > 0 runs the first that many global steps as a call of their own
    (``phases['first_steps']``: what the workers set up on their first step is in it), so
    ``phases['steps']`` times Lava's run of the remaining ``steps_run`` steps alone (the
    record is the same: the run only pauses). ``NAME_cpu`` for each part: the CPU seconds of
    this process and every worker in it (Linux; to 1/100 s per worker). ``plan``: which
    convolutions run on Lava's Conv (:func:`~lmh_deploy.backends.lava.plan.plan_lowering`;
    default its ``auto`` now).
    """
    clock = _Clock(phases)
    net = lower(graph, inputs, timesteps, precision, plan)
    readout = graph.node(graph.order()[-1])
    assert isinstance(readout, (QReadout, Readout))
    clock.lap("lower")
    # Lava's Extractor model carries no precision tag: name it.
    cfg = Loihi2SimCfg(select_tag=precision, exception_proc_model_map={Extractor: PyLoihiExtractorModel})
    with lava_session(net.source), warnings.catch_warnings():
        # Lava's DelaySparse rebuilds its delay-0 matrix by assignment (harmless, noisy).
        warnings.simplefilter("ignore", SparseEfficiencyWarning)
        executable = net.source.compile(cfg)
        clock.lap("compile")
        net.source.create_runtime(executable=executable)
        clock.lap("start")
        remaining = net.total_steps
        if 0 < first_steps < net.total_steps:
            net.source.run(condition=RunSteps(num_steps=first_steps))
            clock.lap("first_steps")
            remaining -= first_steps
        net.source.run(condition=RunSteps(num_steps=remaining))
        clock.lap("steps")
        rec = read_back(net, readout, precision == "fixed_pt")
        clock.lap("read_back")
    clock.lap("stop")
    if phases is not None:
        phases["steps_run"] = remaining
    if precision == "fixed_pt":
        if not readout.leaky.size:  # a leaky readout's logits are float sums of integers
            rec.logits = rec.logits.astype(np.int64)
        rec.final_state = {
            k: (a.astype(np.int64), c.astype(np.int64)) for k, (a, c) in rec.final_state.items()
        }
        rec.synops = synops_from_spikes(graph, inputs, rec.spikes, timesteps)
    return rec
