"""Declaration of the current max-pooling Process: ports and Vars only."""

from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class MaxPoolCurrents(AbstractProcess):
    """The max pool of the currents a Dense/Sparse delivers, passed on to a neuron's ``a_in``.

    Sits between a synapse Process and the :class:`~lmh_deploy.backends.lava.procs.lmh.process.LMHNeuron`
    it feeds and adds no time step: at every step it receives ``a_in`` and sends
    ``a_out[i] = max_j a_in[windows[i, j]]`` at once
    (:func:`lmh_deploy.semantics.pooling.max_pool`), so the neuron sees the pooled current at
    the step it would have seen the unpooled one.

    Parameters
    ----------
    windows : (n_out, taps) flat input index of every tap of every output
        (:func:`lmh_deploy.semantics.pooling.pool_windows`).
    in_size : currents arriving per step (the convolution's output size).
    """

    def __init__(self, *, windows: np.ndarray, in_size: int, name: str | None = None) -> None:
        windows = np.asarray(windows, np.int64)
        if windows.ndim != 2 or windows.size == 0 or windows.min() < 0 or windows.max() >= in_size:
            raise ValueError(
                f"MaxPoolCurrents: windows must index 0..{in_size - 1}, got shape {windows.shape}"
            )
        super().__init__(name=name)
        self.a_in = InPort(shape=(int(in_size),))
        self.a_out = OutPort(shape=(windows.shape[0],))
        self.windows = Var(shape=windows.shape, init=windows)
