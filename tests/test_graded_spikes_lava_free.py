"""Graded spikes (``max_spikes`` K > 1: sinabs ``MultiSpike``, rockpool ``max_spikes_per_dt``)
and the soma floor (``v_s_min``), the tests that need no Lava: one rule
(:func:`lmh_deploy.semantics.integer.spike_count`) in the float reference and sim/; the quantiser
bounds the next layer's current for counts up to K; the IR checks and round trip; the exports'
refusals. No Lava import, so scripts/mutation.sh can run them (Lava sets the multiprocessing
start method at import); sim == Lava is in tests/test_graded_spikes.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.ir import LMH, QLMH, Dense, Graph, Input, IRError, Readout
from lmh_deploy.ir.serialize import load_graph, save_graph
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.reference import lmh_float_step
from lmh_deploy.sim.simulator import simulate

T = 5


def graded_graph(k1: int = 5, k2: int = 3, seed: int = 0) -> Graph:
    """input 6 -> 8 leaky neurons (K = k1, '>=') -> 7 IF neurons (K = k2, '>') -> 3 logits."""
    rng = np.random.default_rng(seed)
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    g = Graph(meta={"timesteps": T})
    g.add("input", Input(shape=(6,)))
    g.add("d1", Dense(weight=rng.normal(0.6, 0.5, (8, 6))), ("input",))
    g.add(
        "l1",
        LMH(size=8, theta=1.0, mu_d=zero, mu_s=zero, lam_d=one, lam_s=0.9 * one, bias=np.zeros(8),
            v_s_init=0.0, max_spikes=k1),
        ("d1",),
    )  # fmt: skip
    g.add("d2", Dense(weight=rng.normal(0.2, 0.5, (7, 8))), ("l1",))
    g.add(
        "l2",
        LMH(size=7, theta=1.0, mu_d=zero, mu_s=zero, lam_d=one, lam_s=one, bias=np.zeros(7),
            v_s_init=0.0, max_spikes=k2, threshold_test=">"),
        ("d2",),
    )  # fmt: skip
    g.add("d3", Dense(weight=rng.normal(0, 0.5, (3, 7))), ("l2",))
    g.add("out", Readout(bias=np.zeros(3)), ("d3",))
    return g


def graded_inputs(q: Graph) -> np.ndarray:
    """Four samples of six inputs in [0, 1), as integers of ``q``'s input."""
    return fx.quantize_input(np.random.default_rng(1).uniform(0, 1, (4, 6)), q.node("input").scale)


def floored_graph(k1: int) -> Graph:
    """``graded_graph(k1)`` with a soma floor of -0.3 on l1 and d1's weights centred on 0 (the
    negative currents push v_s down to the floor)."""
    g = graded_graph(k1=k1)
    g.nx_graph.nodes["l1"]["node"] = dataclasses.replace(g.node("l1"), v_s_min=-0.3)
    g.nx_graph.nodes["d1"]["node"] = Dense(weight=np.random.default_rng(3).normal(0.0, 1.0, (8, 6)))
    return g


def floored_inputs(q: Graph) -> np.ndarray:
    return fx.quantize_input(np.random.default_rng(4).uniform(0, 1, (4, 6)), q.node("input").scale)


def test_float_reference_counts_and_subtracts() -> None:
    layer = graded_graph().node("l1")
    current = np.array([0.5, 2.7, 9.0, -1.0, 1.0, 0.0, 0.0, 0.0])
    v_d, v_s, spikes = lmh_float_step(layer, 0, np.zeros(8), np.zeros(8), current)
    assert spikes.tolist()[:5] == [0, 2, 5, 0, 1]  # 9.0: 9 thresholds, capped at K = 5
    assert np.allclose(v_s[:5], [0.5, 0.7, 4.0, -1.0, 0.0])


def test_sim_counts_several_spikes_a_step_and_follows_the_float_net() -> None:
    g = graded_graph()
    q, _ = quantize_graph(g)
    # every path out of a graded layer is graded and bounded for K presynaptic counts
    assert [q.node(n).graded for n in ("d1", "d2", "d3")] == [True, True, True]
    ref = simulate(q, graded_inputs(q), T)
    for name in ("l1", "l2"):
        assert ref.spikes[name].dtype == np.int16
        assert int(ref.spikes[name].max()) > 1  # several spikes a step do occur
        assert int(ref.spikes[name].max()) <= q.node(name).max_spikes
    # the integer network follows the float one (8-bit weights: a few counts differ)
    flt = simulate_float(g, np.random.default_rng(1).uniform(0, 1, (4, 6)), T)
    for name in ("l1", "l2"):
        assert np.mean(flt.spikes[name] == ref.spikes[name]) > 0.9


def test_quantiser_bounds_the_current_for_k_counts() -> None:
    """The weight exponent keeps 2 * K * max_i sum_j |m_ij| * 2**e within 2**20 (K = 3 vs 200)."""
    exps = {}
    for k in (3, 200):
        q, _ = quantize_graph(graded_graph(k1=k))
        d2 = q.node("d2")
        worst = 2 * k * int(np.abs(d2.weight_mant).sum(1).max())
        assert worst * 2.0**d2.weight_exp <= 2**20
        exps[k] = d2.weight_exp
    assert exps[200] < exps[3]


def test_max_spikes_round_trips_and_is_checked(tmp_path) -> None:
    q, _ = quantize_graph(graded_graph())
    save_graph(q, tmp_path, "q")
    assert load_graph(tmp_path, "q").node("l1").max_spikes == 5
    node = graded_graph().node("l1")
    with pytest.raises(IRError, match="max_spikes 256 outside"):
        LMH(**{**node.__dict__, "max_spikes": 256}).check("l1")
    with pytest.raises(IRError, match="needs reset_timing 'same-step'"):
        LMH(**{**node.__dict__, "reset_timing": "next-step"}).check("l1")


def test_exports_refuse_graded_layers(tmp_path) -> None:
    """NIR and netx neurons send one spike a step: a graded layer is refused naming it."""
    from lmh_deploy.errors import InteropError
    from lmh_deploy.interop.netx_artifact import artifact_to_netx
    from lmh_deploy.interop.nir_export import graph_to_nir

    with pytest.raises(InteropError, match=r"^l1: graded spikes \(up to 5 a step, max_spikes\) have no NIR"):
        graph_to_nir(graded_graph())
    q, _ = quantize_graph(graded_graph())
    with pytest.raises(InteropError, match=r"^l1: graded spikes \(up to 5 a step, max_spikes\); netx"):
        artifact_to_netx(q, tmp_path / "g.net")
    assert not (tmp_path / "g.net").exists()


@pytest.mark.parametrize("k1", [1, 5])
def test_soma_floor_binds_in_sim(k1: int) -> None:
    """``v_s_min`` (sinabs's ``min_v_mem``) on one and on several spikes a step: negative
    currents push the soma down to the floor, and no lower."""
    q, _ = quantize_graph(floored_graph(k1))
    floor = q.node("l1").v_s_min
    assert floor is not None and floor < 0
    ref = simulate(q, floored_inputs(q), T, record_states=True)
    assert int(ref.state_trace["l1"][1].min()) == floor  # the floor binds


def test_loihi_lif_refuses_a_soma_floor() -> None:
    col = lambda v: np.full((1, 1), v, np.int64)
    lif = QLMH(size=1, theta=64, mu_d=col(0), mu_s=col(0), lam_d=col(4096), lam_s=col(4096),
               bias=np.zeros(1, np.int64), state_scale=1.0, profile="loihi-lif", reset="set",
               threshold_test=">", v_s_init=0, v_s_min=-5)  # fmt: skip
    with pytest.raises(IRError, match="^l: numeric profile loihi-lif cannot express a soma floor"):
        lif.check("l")
