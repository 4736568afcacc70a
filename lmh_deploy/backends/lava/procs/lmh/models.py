"""ProcessModels of :class:`LMHNeuron`: ``floating_pt`` (reals) and ``fixed_pt`` (integers).

The fixed-point arithmetic is :func:`lmh_deploy.semantics.integer.lmh_step`, the same
function :mod:`sim` calls.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from lmh_deploy.semantics import integer as fx
from lmh_deploy.backends.lava.procs.lmh.process import LMHNeuron


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

    def run_spk(self) -> None:  # noqa: D102
        a_in = self.a_in.recv()
        step = self.local_step()
        if step is None:
            self.s_out.send(np.zeros(self.s_out.shape, dtype=bool))
            return
        if step == 0:  # a new sample starts from the initial state
            self.v_d[:] = 0
            self.v_s[:] = self.initial_soma()
        spikes = self.update(step, a_in)
        self.s_out.send(spikes)

    def initial_soma(self):  # noqa: D102
        raise NotImplementedError

    def update(self, step: int, a_in: np.ndarray) -> np.ndarray:  # noqa: D102
        raise NotImplementedError


@implements(proc=LMHNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLMHModelFloat(AbstractLMHModel):
    """Real-valued Eq. 4, for checking a float IR on Lava against PyTorch."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
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

    def initial_soma(self) -> float:  # noqa: D102
        return self.theta[0] / 2

    def update(self, step: int, a_in: np.ndarray) -> np.ndarray:  # noqa: D102
        k = min(step, self.mu_d.shape[0] - 1)
        theta = self.theta[0]
        self.v_d[:] = self.mu_d[k] * self.v_d + self.mu_s[k] * self.v_s + a_in + self.bias
        m_s = self.lam_s[k] * self.v_s + self.lam_d[k] * self.v_d
        spikes = m_s >= theta
        self.v_s[:] = m_s - spikes * theta
        return spikes


@implements(proc=LMHNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyLMHModelFixed(AbstractLMHModel):
    """Bit-accurate integer model: 24-bit states, 12-bit factors, see lmh_deploy.semantics.integer."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, bool, precision=1)
    v_d: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    v_s: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    theta: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    mu_d: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    mu_s: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    lam_d: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    lam_s: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)
    start_step: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    reset_interval: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    end_step: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)
    saturation_count: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=32)

    def initial_soma(self) -> int:  # noqa: D102
        return int(self.theta[0]) // 2

    def update(self, step: int, a_in: np.ndarray) -> np.ndarray:  # noqa: D102
        params = fx.LMHFixedParams(mu_d=self.mu_d, mu_s=self.mu_s, lam_d_off=self.lam_d,
                                   lam_s_off=self.lam_s, theta=int(self.theta[0]),
                                   bias=self.bias.astype(np.int64))
        v_d, v_s, spikes, saturated = fx.lmh_step(params, step, self.v_d.astype(np.int64),
                                                  self.v_s.astype(np.int64), a_in)
        self.v_d[:] = v_d
        self.v_s[:] = v_s
        self.saturation_count[0] += saturated
        return spikes
