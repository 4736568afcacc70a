"""ProcessModels of :class:`LMHNeuron`: ``floating_pt`` (reals) and ``fixed_pt`` (integers).

The fixed-point arithmetic is :func:`lmh_deploy.semantics.integer.lmh_step`, the same
function :mod:`sim` calls, under the layer's numeric profile and rules; the real-valued one
is :func:`lmh_deploy.semantics.reference.lmh_float_step`, the float IR simulator's.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from lmh_deploy.semantics import integer as fx
from lmh_deploy.backends.lava.procs.lmh.process import LMHGradedNeuron, LMHNeuron
from lmh_deploy.semantics.reference import lmh_float_step


class AbstractLMHModel(PyLoihiProcessModel):
    """Timing shared by both precisions: idle window, per-sample reset, then one update."""

    def local_step(self) -> int | None:
        """0-based step within the current sample, or None while the neuron is idle."""
        start, end = int(self.start_step[0]), int(self.end_step[0])
        if self.time_step <= start or (end and self.time_step > end):
            return None
        step = self.time_step - start - 1
        interval = int(self.reset_interval[0])
        return step % interval if interval else step

    def run_spk(self) -> None:
        a_in = self.a_in.recv()
        step = self.local_step()
        if step is None:
            graded = self.proc_params["max_spikes"] > 1
            spikes = np.zeros(self.s_out.shape, dtype=np.int32 if graded else bool)
        else:
            if step == 0:  # a new sample starts from the initial state
                self.v_d[:] = self.v_d_init
                self.v_s[:] = self.v_s_init[0]
            spikes = self.update(step, a_in)
            self.s_prev[:] = spikes
        self.s_out.send(spikes)
        if self.proc_params["output_delay"]:
            self.s_out_delayed.send(self.delay_line[0])
            self.delay_line[:-1] = self.delay_line[1:]
            self.delay_line[-1] = spikes
        if step is not None and self.proc_params["record"]:
            self.spikes_to_host.send(spikes)
            if self.time_step == int(self.end_step[0]):
                self.state_to_host.send(np.concatenate([self.v_d, self.v_s, self.saturation_count]))

    def rule(self, key: str) -> str:
        """A neuron rule from the process parameters."""
        return self.proc_params[key]

    def update(self, step: int, a_in: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _LMHFloat(AbstractLMHModel):
    """The real-valued update of :class:`PyLMHModelFloat` and :class:`PyLMHGradedModelFloat`."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
    s_out_delayed: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
    delay_line: np.ndarray = LavaPyType(np.ndarray, bool, precision=1)
    spikes_to_host: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
    state_to_host: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v_d: np.ndarray = LavaPyType(np.ndarray, float)
    v_s: np.ndarray = LavaPyType(np.ndarray, float)
    theta: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    mu_d: np.ndarray = LavaPyType(np.ndarray, float)
    mu_s: np.ndarray = LavaPyType(np.ndarray, float)
    lam_d: np.ndarray = LavaPyType(np.ndarray, float)
    lam_s: np.ndarray = LavaPyType(np.ndarray, float)
    start_step: np.ndarray = LavaPyType(np.ndarray, int)
    reset_interval: np.ndarray = LavaPyType(np.ndarray, int)
    end_step: np.ndarray = LavaPyType(np.ndarray, int)
    saturation_count: np.ndarray = LavaPyType(np.ndarray, int)
    s_prev: np.ndarray = LavaPyType(np.ndarray, bool)
    reset_value: np.ndarray = LavaPyType(np.ndarray, float)
    v_d_init: np.ndarray = LavaPyType(np.ndarray, float)
    v_s_init: np.ndarray = LavaPyType(np.ndarray, float)

    def update(self, step: int, a_in: np.ndarray) -> np.ndarray:
        layer = SimpleNamespace(
            theta=float(self.theta[0]),
            mu_d=self.mu_d,
            mu_s=self.mu_s,
            lam_d=self.lam_d,
            lam_s=self.lam_s,
            bias=self.bias,
            reset=self.rule("reset"),
            reset_value=float(self.reset_value[0]),
            threshold_test=self.rule("threshold_test"),
            reset_timing=self.rule("reset_timing"),
            max_spikes=int(self.proc_params["max_spikes"]),
            v_s_min=self.proc_params["v_s_min"],
        )
        v_d, v_s, spikes = lmh_float_step(
            layer, step, self.v_d, self.v_s, a_in, self.s_prev.astype(bool) if step else None
        )
        self.v_d[:] = v_d
        self.v_s[:] = v_s
        return spikes


class _LMHFixed(AbstractLMHModel):
    """The integer update of :class:`PyLMHModelFixed` and :class:`PyLMHGradedModelFixed`."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
    s_out_delayed: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
    delay_line: np.ndarray = LavaPyType(np.ndarray, bool, precision=1)
    spikes_to_host: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
    state_to_host: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=32)
    v_d: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_s: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    theta: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    # Full multipliers over 4096 (lam up to 6143 under the lmh profile: 13 bits here; the
    # hardware encoding of each profile is 12 bits, see semantics/profiles.py).
    mu_d: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    mu_s: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    lam_d: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    lam_s: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=13)
    start_step: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    reset_interval: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    end_step: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    saturation_count: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    s_prev: np.ndarray = LavaPyType(np.ndarray, bool, precision=1)
    reset_value: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_d_init: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_s_init: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def update(self, step: int, a_in: np.ndarray) -> np.ndarray:
        layer = SimpleNamespace(
            mu_d=self.mu_d,
            mu_s=self.mu_s,
            lam_d=self.lam_d,
            lam_s=self.lam_s,
            theta=int(self.theta[0]),
            bias=self.bias.astype(np.int64),
            profile=self.rule("profile"),
            reset=self.rule("reset"),
            reset_value=int(self.reset_value[0]),
            threshold_test=self.rule("threshold_test"),
            reset_timing=self.rule("reset_timing"),
            v_d_init=self.v_d_init.astype(np.int64),
            v_s_init=int(self.v_s_init[0]),
            max_spikes=int(self.proc_params["max_spikes"]),
            v_s_min=self.proc_params["v_s_min"],
        )
        v_d, v_s, spikes, saturated = fx.lmh_step(
            fx.layer_params(layer),
            step,
            self.v_d.astype(np.int64),
            self.v_s.astype(np.int64),
            a_in.astype(np.int64),
            self.s_prev.astype(bool) if step else None,
        )
        self.v_d[:] = v_d
        self.v_s[:] = v_s
        self.saturation_count[0] += saturated
        return spikes


@implements(proc=LMHNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLMHModelFloat(_LMHFloat):
    """Real-valued Eq. 4, for checking a float IR on Lava against PyTorch."""


@implements(proc=LMHNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")  # not Lava's "bit_accurate_loihi": no Loihi 2 silicon has checked these bits
class PyLMHModelFixed(_LMHFixed):
    """Integer model: 24-bit states, 12-bit factors, lmh_deploy.semantics.integer's step; equal to
    sim/ bit for bit (tests), not verified against Loihi 2 hardware (README)."""


# Graded spikes (max_spikes > 1): the same models with integer count ports, read downstream by
# Dense/Sparse with num_message_bits = SPIKE_COUNT_BITS (Loihi 2's graded spikes).
_COUNT = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=fx.SPIKE_COUNT_BITS)
_COUNT_LINE = LavaPyType(np.ndarray, np.int32, precision=fx.SPIKE_COUNT_BITS)


@implements(proc=LMHGradedNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLMHGradedModelFloat(_LMHFloat):
    """:class:`PyLMHModelFloat` sending spike counts."""

    s_out: PyOutPort = _COUNT
    s_out_delayed: PyOutPort = _COUNT
    delay_line: np.ndarray = _COUNT_LINE
    spikes_to_host: PyOutPort = _COUNT
    s_prev: np.ndarray = _COUNT_LINE


@implements(proc=LMHGradedNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyLMHGradedModelFixed(_LMHFixed):
    """:class:`PyLMHModelFixed` sending spike counts."""

    s_out: PyOutPort = _COUNT
    s_out_delayed: PyOutPort = _COUNT
    delay_line: np.ndarray = _COUNT_LINE
    spikes_to_host: PyOutPort = _COUNT
    s_prev: np.ndarray = _COUNT_LINE
