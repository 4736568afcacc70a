"""ProcessModels of :class:`MaxPoolCurrents`: ``floating_pt`` (reals) and ``fixed_pt`` (integers).

Both call :func:`lmh_deploy.semantics.pooling.max_pool`, the function :mod:`sim` and the float
reference call; receive then send in one step, so the pool adds no delay.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from lmh_deploy.backends.lava.procs.maxpool.process import MaxPoolCurrents
from lmh_deploy.semantics.pooling import max_pool


class AbstractMaxPoolModel(PyLoihiProcessModel):
    """One step: the currents in, their window maxima out."""

    def run_spk(self) -> None:
        self.a_out.send(max_pool(self.a_in.recv(), self.windows))


@implements(proc=MaxPoolCurrents, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyMaxPoolModelFloat(AbstractMaxPoolModel):
    """Real-valued currents (a float IR on Lava)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    windows: np.ndarray = LavaPyType(np.ndarray, np.int64)


@implements(proc=MaxPoolCurrents, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyMaxPoolModelFixed(AbstractMaxPoolModel):
    """Integer currents as the LM-H neuron's ``a_in`` takes them (24-bit in int32)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    windows: np.ndarray = LavaPyType(np.ndarray, np.int64)
