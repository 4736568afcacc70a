"""Golden vectors of the real-valued LM-H step (``semantics.reference.lmh_float_step``), the
float side of every comparison: each neuron rule derived by hand on numbers that are exact in
binary floating point, the threshold met with equality, radical factor rows by step."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lmh_deploy.semantics.reference import float_initial_state, lmh_float_step


def _layer(reset="subtract", threshold_test=">=", reset_timing="same-step", **kw) -> SimpleNamespace:
    fields = dict(
        mu_d=np.array([[0.5], [0.0]]),  # radical: row 0 at step 0, row 1 from step 1 on
        mu_s=np.array([[0.25], [0.0]]),
        lam_d=np.array([[1.0], [0.5]]),
        lam_s=np.array([[0.5], [0.25]]),
        theta=3.0,
        bias=np.array([0.125]),
        reset=reset,
        reset_value=-0.5,
        threshold_test=threshold_test,
        reset_timing=reset_timing,
        v_d_init=-1.0,
        v_s_init=None,
        max_spikes=1,
        v_s_min=None,
    )
    return SimpleNamespace(**{**fields, **kw})


# v_d' = 0.5 * 1 + 0.25 * 0.5 + (2 + 0.125) = 2.75;  m_s = 0.5 * 0.5 + 1 * 2.75 = 3.0 = theta
RULES = [
    # reset, test, timing, s_prev, spike, v_s'
    ("subtract", ">=", "same-step", None, True, 0.0),
    ("subtract", ">", "same-step", None, False, 3.0),
    ("set", ">=", "same-step", None, True, -0.5),
    ("set", ">", "same-step", None, False, 3.0),
    ("subtract", ">=", "same-step", True, True, 0.0),  # s_prev only matters next-step
    ("set", ">=", "same-step", True, True, -0.5),
    ("subtract", ">=", "next-step", None, True, 3.0),  # first step: nothing to reset yet
    ("subtract", ">=", "next-step", False, True, 3.0),
    ("subtract", ">=", "next-step", True, False, 0.0),  # m_s = 3 - theta * 1 = 0
    ("subtract", ">", "next-step", True, False, 0.0),
    ("set", ">=", "next-step", True, False, -0.5),  # m_s = reset_value where s_prev
    ("set", ">=", "next-step", False, True, 3.0),
    ("set", ">", "next-step", None, False, 3.0),
]


@pytest.mark.parametrize("reset, test, timing, s_prev, spike, v_s", RULES)
def test_float_step_rules_golden(reset, test, timing, s_prev, spike, v_s) -> None:
    layer = _layer(reset, test, timing)
    prev = None if s_prev is None else np.array([s_prev])
    v_d_new, v_s_new, spikes = lmh_float_step(
        layer, 0, np.array([1.0]), np.array([0.5]), np.array([2.0]), prev
    )
    assert v_d_new.tolist() == [2.75]
    assert spikes.tolist() == [spike]
    assert v_s_new.tolist() == [v_s]


@pytest.mark.parametrize("step", [1, 2, 7])
def test_float_step_reads_the_last_radical_row_from_step_one_on(step: int) -> None:
    # row 1: v_d' = 0 + 0 + 2.125 = 2.125;  m_s = 0.25 * 0.5 + 0.5 * 2.125 = 1.1875 < theta
    layer = _layer()
    v_d, v_s, s = lmh_float_step(layer, step, np.array([1.0]), np.array([0.5]), np.array([2.0]))
    assert (v_d.tolist(), v_s.tolist(), s.tolist()) == ([2.125], [1.1875], [False])


def test_float_step_broadcasts_per_neuron_factors_over_a_batch() -> None:
    layer = _layer(
        mu_d=np.array([[0.5, -0.25]]),
        mu_s=np.array([[0.0, 0.5]]),
        lam_d=np.array([[1.0, 1.5]]),
        lam_s=np.array([[1.0, 0.0]]),
        theta=1.0,
        bias=np.array([0.0, -1.0]),
    )
    v_d = np.array([[2.0, 4.0], [0.0, 0.0]])
    v_s = np.array([[0.5, 1.0], [0.0, 0.0]])
    current = np.array([[0.0, 0.0], [0.75, 2.0]])
    v_d, v_s, s = lmh_float_step(layer, 0, v_d, v_s, current)
    # neuron 0: v_d' = 0.5 v_d + i; m_s = v_s + v_d'.  neuron 1: v_d' = -0.25 v_d + 0.5 v_s + i - 1;
    # m_s = 1.5 v_d'
    assert v_d.tolist() == [[1.0, -1.5], [0.75, 1.0]]
    assert s.tolist() == [[True, False], [False, True]]
    assert v_s.tolist() == [[0.5, -2.25], [0.75, 0.5]]


def test_float_initial_state() -> None:
    v_d, v_s = float_initial_state(_layer(), (2, 3))
    assert v_d.shape == v_s.shape == (2, 3)
    assert v_d.tolist() == [[-1.0] * 3] * 2 and v_s.tolist() == [[1.5] * 3] * 2  # theta / 2
    v_d, v_s = float_initial_state(_layer(v_s_init=0.25, v_d_init=0.0), (1,))
    assert v_d.tolist() == [0.0] and v_s.tolist() == [0.25]
    assert v_d.dtype == v_s.dtype == np.float64
    # per neuron, from integers (an imported file's): float64 all the same
    v_d, _ = float_initial_state(_layer(v_d_init=np.array([1, -2])), (2, 2))
    assert v_d.dtype == np.float64 and v_d.tolist() == [[1.0, -2.0], [1.0, -2.0]]


def test_float_step_clips_the_soma_at_its_floor_after_the_reset() -> None:
    """``v_s_min`` -1 (sinabs's ``min_v_mem``), step 0 from v_d 1, v_s 0.5:
    current -4: v_d' = 0.5 + 0.125 - 4 + 0.125 = -3.25, m_s = 0.25 - 3.25 = -3: no spike, the floor
    binds: v_s' = -1 (-3 without it); current 2: m_s = 3 >= theta, subtracted to 0, above the floor;
    current -1.5: m_s = 0.25 + (0.625 - 1.375) = -0.5, above the floor, unchanged."""
    layer = _layer(v_s_min=-1.0)
    current = np.array([-4.0, 2.0, -1.5])
    v_d, v_s, s = lmh_float_step(layer, 0, np.full(3, 1.0), np.full(3, 0.5), current)
    assert v_d.tolist() == [-3.25, 2.75, -0.75]
    assert s.tolist() == [False, True, False]
    assert v_s.tolist() == [-1.0, 0.0, -0.5]
    _, v_s, _ = lmh_float_step(_layer(), 0, np.full(3, 1.0), np.full(3, 0.5), current)
    assert v_s.tolist() == [-3.0, 0.0, -0.5]  # no floor


def test_float_step_counts_graded_spikes() -> None:
    """``max_spikes`` 2, theta 3: current 5 gives v_d' = 0.625 + 5.125 = 5.75, m_s = 6 = 2 theta:
    two spikes, subtracted to 0 (one spike under K = 1, leaving 3)."""
    v_d = np.array([1.0])
    _, v_s, s = lmh_float_step(_layer(max_spikes=2), 0, v_d, np.array([0.5]), np.array([5.0]))
    assert (s.tolist(), v_s.tolist()) == ([2], [0.0])
    _, v_s, s = lmh_float_step(_layer(), 0, v_d, np.array([0.5]), np.array([5.0]))
    assert (s.tolist(), v_s.tolist()) == ([True], [3.0])
