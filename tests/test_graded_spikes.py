"""Graded spikes (``max_spikes`` K > 1) and the soma floor (``v_s_min``) in the Lava
ProcessModels (LMHGradedNeuron, 8-bit count ports): Lava fixed_pt == sim bit for bit, synops
included. The tests that need no Lava (the float reference's counts, sim's, the quantiser's
bound, the IR checks, the exports' refusals) are in tests/test_graded_spikes_lava_free.py."""

from __future__ import annotations

import numpy as np
import pytest

import lmh_deploy  # noqa: F401  - Python 3.11 Lava import fix
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.sim.simulator import simulate

from test_graded_spikes_lava_free import T, floored_graph, floored_inputs, graded_graph, graded_inputs


def test_sim_equals_lava_on_graded_spikes() -> None:
    q, _ = quantize_graph(graded_graph())
    x_int = graded_inputs(q)
    ref = simulate(q, x_int, T)
    got = run_lava(q, x_int, T, "fixed_pt")
    for name in ("l1", "l2"):
        assert got.spikes[name].dtype == ref.spikes[name].dtype
        assert np.array_equal(ref.spikes[name], got.spikes[name]), name
        assert np.array_equal(got.final_state[name][1], ref.final_state[name][1][-1:])
    assert np.array_equal(ref.readout_trace, got.readout_trace)
    assert got.synops == ref.synops


@pytest.mark.parametrize("k1", [1, 5])
def test_soma_floor_sim_equals_lava(k1: int) -> None:
    """``v_s_min`` on one and on several spikes a step (the floor binds:
    test_graded_spikes_lava_free.py): sim == Lava in spikes and final states."""
    q, _ = quantize_graph(floored_graph(k1))
    x_int = floored_inputs(q)
    ref = simulate(q, x_int, T)
    got = run_lava(q, x_int, T, "fixed_pt")
    for name in ("l1", "l2"):
        assert np.array_equal(ref.spikes[name], got.spikes[name]), name
        assert np.array_equal(got.final_state[name][1], ref.final_state[name][1][-1:]), name
