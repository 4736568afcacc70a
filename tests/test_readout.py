"""The readout's logits (:mod:`lmh_deploy.semantics.readout`), by hand: a plain readout sums its
input and bias over the steps in integers; a leaky-integrator readout (norse's ``LICell``)
filters ``i = mu i + x``, ``v = lam v + gain i`` from zero and sums ``v``. Lava-free, in the
semantics mutation subset (the norse tests that also run it need Lava)."""

from __future__ import annotations

import numpy as np

from lmh_deploy.semantics.readout import leaky_voltage, readout_sum

# (T, B, n) = (3, 1, 2): two channels over three steps
TRACE = np.array([[[1, 2]], [[3, -1]], [[0, 4]]], dtype=np.int64)
LEAKY = np.array([0.5, 0.25, 2.0])  # mu, lam, gain: distinct, so a swap shows


def test_leaky_voltage_by_hand() -> None:
    """mu 0.5, lam 0.25, gain 2 (dyadic: every value exact).
    channel 0, x = 1, 3, 0: i = 1, 0.5 + 3 = 3.5, 1.75 + 0 = 1.75;
    v = 2 * 1 = 2, 0.25 * 2 + 2 * 3.5 = 7.5, 0.25 * 7.5 + 2 * 1.75 = 5.375.
    channel 1, x = 2, -1, 4: i = 2, 1 - 1 = 0, 0 + 4 = 4; v = 4, 1 + 0 = 1, 0.25 + 8 = 8.25."""
    v = leaky_voltage(TRACE.astype(np.float64), LEAKY)
    assert v.shape == (3, 1, 2)
    assert v[:, 0].tolist() == [[2.0, 4.0], [7.5, 1.0], [5.375, 8.25]]


def test_plain_readout_sums_integers_with_the_bias_each_step() -> None:
    """sum_t trace + T bias: channel 0: 1 + 3 + 0 + 3 * 5 = 19; channel 1: 2 - 1 + 4 + 3 * -2 = -1.
    Integers stay int64 (sim/ and Lava compare them bit for bit)."""
    for leaky in (np.zeros(0), np.array([])):
        logits = readout_sum(TRACE, np.array([5, -2], dtype=np.int64), leaky)
        assert logits.dtype == np.int64
        assert logits.tolist() == [[19, -1]]


def test_leaky_readout_filters_input_plus_bias_and_sums_the_voltage() -> None:
    """bias (1, 0) is added to every step's input before the filter: channel 0's input 2, 4, 1
    gives i = 2, 1 + 4 = 5, 2.5 + 1 = 3.5 and v = 4, 1 + 10 = 11, 2.75 + 7 = 9.75: sum 24.75;
    channel 1 as in test_leaky_voltage_by_hand: 4 + 1 + 8.25 = 13.25."""
    logits = readout_sum(TRACE, np.array([1, 0], dtype=np.int64), LEAKY)
    assert logits.dtype == np.float64
    assert logits.tolist() == [[24.75, 13.25]]
