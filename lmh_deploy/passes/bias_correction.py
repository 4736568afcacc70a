"""Bias correction of weight rounding (a standard post-training quantisation step): the mean
current that a layer's rounded 8-bit weights add on calibration data is taken off its bias
before the bias is quantised.

In float units a layer's integer current is ``sum_j (m_j / s_w) x_j`` (mantissas ``m``, the
layer's weight scale ``s_w``, presynaptic counts ``x``), the source's ``sum_j w_j x_j``. For
a given net the difference is a fixed error per neuron times the presynaptic activity: a
static input repeats it at every step and the neurons integrate it, so it does not average
out over the ``T`` steps, and the spike flips it causes compound layer after layer. Its mean
over the calibration inputs, ``sum_j (m_j / s_w - w_j) E[x_j]``, is subtracted from the
bias. ``E[x_j]`` is the mean count per step of presynaptic neuron ``j`` in the float model
on the calibration inputs (input pixels in counts of ``x_max / 255``). Behind a max pool of
currents the error is the winning tap's; not knowing which tap wins, the pooled neuron takes
its window's mean error.

A readout's correction is a constant per class, also where nothing reaches the readout (a
hidden layer that stays silent on a sample): the source's logits are then its bias alone
(all equal, 0, for a readout without bias: a tie the first class wins), the corrected
integer bias is not, and the tie breaks another way. So a readout is corrected only where
its corrected integer bias predicts, for a silent input, the class the float bias predicts
(:func:`keeps_silent_class`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmh_deploy.ir import LMH, Readout
from lmh_deploy.ir.synapses import DenseChain, apply_synapse
from lmh_deploy.passes.compose import SynapsePath
from lmh_deploy.semantics.pooling import mean_over_windows
from lmh_deploy.semantics.profiles import NumericProfile
from lmh_deploy.semantics.readout import readout_sum


def correctable(node: Any, prof: NumericProfile) -> bool:
    """Whether a bias change acts exactly like a constant input current: always for a readout
    and where the profile adds the bias to the dendrite; a soma bias only without current
    decay (``mu_d = 0``), where the dendrite holds just this step's input."""
    if not isinstance(node, LMH) or prof.bias_to == "dendrite":
        return True
    return not np.any(np.asarray(node.mu_d))


def silent_class(readout: Readout, bias: np.ndarray, timesteps: int) -> int:
    """The class ``readout`` predicts with ``bias`` in place of its own when no current reaches
    it for ``timesteps`` steps (argmax of its logits: the first of equal ones)."""
    silence = np.zeros((timesteps, 1, bias.size))
    return int(np.argmax(readout_sum(silence, np.asarray(bias, np.float64), readout.leaky)[0]))


def keeps_silent_class(readout: Readout, corrected_int: np.ndarray, timesteps: int) -> bool:
    """Whether the corrected integer bias ``corrected_int`` (any positive state scale) predicts,
    for a silent input, the class the float readout predicts."""
    return silent_class(readout, corrected_int, timesteps) == silent_class(readout, readout.bias, timesteps)


def rounding_current(
    paths: list[SynapsePath], mants: list[Any], scale: float, mean_counts: dict[str, np.ndarray]
) -> np.ndarray:
    """Mean current error per postsynaptic neuron (float units) of the rounded weights."""
    total: Any = 0.0
    for path, mant in zip(paths, mants):
        counts = np.asarray(mean_counts[path.source], np.float64).ravel()
        if path.conv is not None:
            error = dataclasses.replace(path.conv, weight=mant / scale - path.weights)
            current = apply_synapse(error, counts[None])[0]
            if path.pool is not None:
                current = mean_over_windows(current, path.pool.windows())
            total = total + current
        elif isinstance(path.weights, DenseChain):
            total = total + _chain_rounding_current(path.weights, mant, scale, counts)
        else:
            error = mant / scale - path.weights
            total = total + np.asarray(error @ counts).ravel()
    return np.asarray(total, np.float64)


def _chain_rounding_current(chain: DenseChain, mant: np.ndarray, scale: float, counts: np.ndarray):
    """``(mant / scale - W) @ counts`` a block of rows at a time, each block's error the CSR
    that the whole composed matrix gave (canonical, zero mantissas dropped), so that every row
    sums the same terms in the same order."""
    out = np.empty(chain.shape[0])
    for rows, w in chain.row_blocks():
        out[rows] = (sp.csr_matrix(mant[rows]) / scale - w) @ counts
    return out
