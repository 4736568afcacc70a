"""The readout's logits from its per-step input, defined once (float IR, sim/, Lava).

A plain readout sums its input over the steps. A leaky-integrator readout (norse's
``LICell``: ``leaky = (mu, lam, gain)``) filters it first, ``i = mu i + x``, ``v = lam v +
gain i`` from ``i = v = 0``, and sums the voltage ``v``: the host does this on the per-step
currents that sim/ and Lava both deliver, so Lava == sim holds for the logits as for the
currents.
"""

from __future__ import annotations

import numpy as np


def leaky_voltage(x: np.ndarray, leaky: np.ndarray) -> np.ndarray:
    """``(T, B, n)`` per-step inputs -> the integrator's voltage per step (float64)."""
    mu, lam, gain = (float(v) for v in leaky)
    i = v = 0.0  # from zero; broadcast to the (B, n) inputs at the first step
    out = np.empty(x.shape)
    for t in range(x.shape[0]):
        i = mu * i + x[t]
        v = lam * v + gain * i
        out[t] = v
    return out


def readout_sum(trace: np.ndarray, bias: np.ndarray, leaky: np.ndarray) -> np.ndarray:
    """``sum_t`` of the readout's per-step value, ``trace`` ``(T, B, n)`` without the bias.

    Plain: ``sum_t trace[t] + T bias`` (integers stay integers); leaky: the sum of the
    filtered ``trace[t] + bias`` (float64)."""
    timesteps = trace.shape[0]
    if not np.asarray(leaky).size:
        return trace.sum(0) + timesteps * np.asarray(bias)
    return leaky_voltage(trace + bias, leaky).sum(0)  # float64: the filter's factors are floats
