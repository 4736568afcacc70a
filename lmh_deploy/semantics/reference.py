"""The real-valued reference of Eq. 4 with the neuron rules, defined once.

The float IR simulator (:mod:`lmh_deploy.backends.float.ir`), the NIR executor and the
Lava ``floating_pt`` ProcessModel all call :func:`lmh_float_step`, so the float side of
every comparison is one piece of code, as the integer side is
:func:`lmh_deploy.semantics.integer.lmh_step`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from lmh_deploy.semantics.integer import spike_count


class NeuronLayer(Protocol):
    """What the reference reads from a layer (the float ``LMH`` IR node has all of it;
    read-only, as the frozen node's fields are)."""

    @property
    def theta(self) -> float: ...

    @property
    def mu_d(self) -> np.ndarray: ...

    @property
    def mu_s(self) -> np.ndarray: ...

    @property
    def lam_d(self) -> np.ndarray: ...

    @property
    def lam_s(self) -> np.ndarray: ...

    @property
    def bias(self) -> np.ndarray: ...

    @property
    def reset(self) -> str: ...

    @property
    def reset_value(self) -> float: ...

    @property
    def threshold_test(self) -> str: ...

    @property
    def reset_timing(self) -> str: ...

    @property
    def v_d_init(self) -> float | np.ndarray: ...

    @property
    def v_s_init(self) -> float | None: ...

    @property
    def max_spikes(self) -> int: ...  # K > 1: graded spikes (spike_count)

    @property
    def v_s_min(self) -> float | None: ...  # a soma floor, or None


def float_initial_state(layer: NeuronLayer, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(v_d, v_s)`` every sample starts from, as float64 arrays of ``shape`` (..., n)
    (``v_d`` per neuron where ``v_d_init`` is an (n,) array)."""
    v_s = layer.theta / 2 if layer.v_s_init is None else layer.v_s_init
    return np.full(shape, np.asarray(layer.v_d_init, np.float64)), np.full(shape, float(v_s))


def lmh_float_step(
    layer: NeuronLayer,
    step: int,
    v_d: np.ndarray,
    v_s: np.ndarray,
    current: np.ndarray,
    s_prev: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One real-valued update of ``layer`` at 0-based ``step``; returns ``(v_d, v_s, spikes)``.

    ``current`` is the synaptic input (bias excluded); ``s_prev`` the previous step's spikes
    (read only under next-step reset timing; None at the first step)::

        v_d' = mu_d v_d + mu_s v_s + (current + bias)
        m_s  = lam_s v_s + lam_d v_d'      (next-step: - theta s_prev, or reset_value where s_prev)
        s    = m_s >= theta  (or >; with max_spikes K > 1 a count up to K, spike_count)
        v_s' = m_s - theta s  (or reset_value where s; next-step timing: m_s)
    """
    k = min(step, layer.mu_d.shape[0] - 1)
    v_d = layer.mu_d[k] * v_d + layer.mu_s[k] * v_s + (current + layer.bias)
    m_s = layer.lam_s[k] * v_s + layer.lam_d[k] * v_d
    next_step = layer.reset_timing == "next-step"
    if next_step and s_prev is not None:
        if layer.reset == "subtract":
            m_s = m_s - s_prev * layer.theta
        else:
            m_s = np.where(s_prev, layer.reset_value, m_s)
    spikes = spike_count(m_s, layer.theta, layer.threshold_test, layer.max_spikes)
    if next_step:
        v_s = m_s
    elif layer.reset == "subtract":
        v_s = m_s - spikes * layer.theta
    else:
        v_s = np.where(spikes > 0, layer.reset_value, m_s)
    if layer.v_s_min is not None:
        v_s = np.maximum(v_s, layer.v_s_min)
    return v_d, v_s, spikes
