"""Lava ``fixed_pt`` versus the integer simulator (sim), bit for bit; Lava ``floating_pt``
versus the PyTorch float model.

Every ``run_lava`` call compiles and runs a real Lava network on the CPU (about a second),
so each test batches several samples into one run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lmh_deploy  # noqa: F401  - Python 3.11 Lava import fix
from lmh_deploy.semantics import integer as fx
from lmh_deploy.ir import LMH, Dense, Graph, Input, QDense, Readout
from lmh_deploy.backends.lava.lower import lower
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.backends.record import RunRecord
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.sim.simulator import simulate
from shared import integer_chain


def assert_bit_exact(qgraph: Graph, x_int: np.ndarray, timesteps: int) -> tuple[RunRecord, RunRecord]:
    """Run sim and Lava fixed_pt on the same inputs; every observable must be identical."""
    ref = simulate(qgraph, x_int, timesteps)
    got = run_lava(qgraph, x_int, timesteps, "fixed_pt")
    batch = x_int.shape[0]
    assert set(got.spikes) == set(ref.spikes) == set(qgraph.of_kind("q_lmh"))
    for name in ref.spikes:
        assert got.spikes[name].shape == ref.spikes[name].shape == (timesteps, batch, qgraph.node(name).size)
        mismatch = np.argwhere(got.spikes[name] != ref.spikes[name])
        assert mismatch.size == 0, f"{name}: first spike mismatch at (t, b, i) = {mismatch[0]}"
        # Lava's final state is the last sample's; sim keeps every sample's.
        for which, lava_v, sim_v in zip(("v_d", "v_s"), got.final_state[name], ref.final_state[name]):
            assert lava_v.dtype == np.int64
            assert np.array_equal(lava_v, sim_v[-1:]), f"{name}: final {which}"
        assert got.saturation[name] == ref.saturation[name], f"{name}: saturation count"
    assert got.readout_trace.dtype == np.int64
    assert np.array_equal(got.readout_trace, ref.readout_trace)
    assert got.logits.dtype == np.int64
    assert np.array_equal(got.logits, ref.logits)
    assert np.array_equal(got.predictions, ref.predictions)
    assert got.synops == ref.synops
    return ref, got


def _firing_rates(rec: RunRecord) -> dict[str, float]:
    return {k: float(v.mean()) for k, v in rec.spikes.items()}


def _inputs(qgraph: Graph, n_in: int, batch: int, seed: int, high: float = 1.2) -> np.ndarray:
    """Random pixels in [0, high] (above x_max = 1 they clip to 255), quantised."""
    x = np.random.default_rng(seed).uniform(0, high, size=(batch, n_in))
    x[0, : n_in // 2] = high  # a saturated-intensity sample part
    return fx.quantize_input(x, qgraph.node("input").scale)


# --------------------------------------------------------------------------- random MLPs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_progressive_mlps(make_mlp, compile_model, seed: int) -> None:
    timesteps = 6
    model = make_mlp(seed, n_in=10, hidden=(14, 9), classes=4, timesteps=timesteps)
    _, q, _ = compile_model(model, n_in=10, timesteps=timesteps)
    ref, _ = assert_bit_exact(q, _inputs(q, 10, batch=4, seed=seed), timesteps)
    rates = _firing_rates(ref)
    assert all(0 < r < 1 for r in rates.values()), rates  # spikes happen, not everywhere


def _factored_mlp(make_mlp, compile_model, seed: int, hidden: tuple, timesteps: int, factors: tuple):
    """The integer graph of an 8-input MLP whose LM-H factors are set to
    ``(mu_d, mu_s, lam_d, lam_s)``."""
    model = make_mlp(
        seed,
        n_in=8,
        hidden=hidden,
        timesteps=timesteps,
        set_factors=dict(zip(("mu_d", "mu_s", "lam_d", "lam_s"), factors)),
    )
    return compile_model(model, n_in=8, timesteps=timesteps)[1]


def test_negative_mu_and_lambda_above_one(make_mlp, compile_model) -> None:
    timesteps = 7
    q = _factored_mlp(make_mlp, compile_model, 11, (12, 10), timesteps, (-0.45, -0.3, 1.45, 1.4))
    lmh0 = q.node("lmh0")
    assert lmh0.mu_d.item() < 0 and lmh0.mu_s.item() < 0
    assert lmh0.lam_d.item() > 4096 and lmh0.lam_s.item() > 4096  # lambda > 1
    ref, _ = assert_bit_exact(q, _inputs(q, 8, batch=4, seed=5), timesteps)
    assert all(0 < r < 1 for r in _firing_rates(ref).values())


def test_radical_per_step_factors(make_mlp, compile_model) -> None:
    timesteps = 5
    model = make_mlp(21, n_in=9, hidden=(13, 7), timesteps=timesteps, factors="radical", factor_std=2.0)
    _, q, _ = compile_model(model, n_in=9, timesteps=timesteps)
    for name in q.of_kind("q_lmh"):
        node = q.node(name)
        for table in (node.mu_d, node.mu_s, node.lam_d, node.lam_s):
            assert table.shape == (timesteps, 1)
            assert len(np.unique(table)) >= timesteps - 1  # rows really differ
    # Run longer than the table: steps >= 5 reuse the last row, in both backends.
    ref, _ = assert_bit_exact(q, _inputs(q, 9, batch=3, seed=8), timesteps + 2)
    assert all(0 < r < 1 for r in _firing_rates(ref).values())


def _per_neuron_float_graph(seed: int, timesteps: int) -> Graph:
    """A float graph with per-neuron (K, n) factors (radical in layer 1) and per-neuron biases."""
    rng = np.random.default_rng(seed)
    n_in, n0, n1, classes = 7, 10, 6, 3
    g = Graph(meta={"timesteps": timesteps})
    g.add("input", Input(shape=(n_in,), x_max=1.0))
    g.add("dense0", Dense(weight=rng.normal(size=(n0, n_in)) * 0.6), ("input",))
    mu = lambda k, n: rng.uniform(-0.5, 0.499, (k, n))
    lam = lambda k, n: rng.uniform(0.5, 1.499, (k, n))
    g.add(
        "lmh0",
        LMH(
            size=n0,
            theta=1.0,
            mu_d=mu(1, n0),
            mu_s=mu(1, n0),
            lam_d=lam(1, n0),
            lam_s=lam(1, n0),
            bias=rng.normal(size=n0) * 0.3,
        ),
        ("dense0",),
    )
    g.add("dense1", Dense(weight=rng.normal(size=(n1, n0)) * 0.8), ("lmh0",))
    g.add(
        "lmh1",
        LMH(
            size=n1,
            theta=0.7,
            mu_d=mu(timesteps, n1),
            mu_s=mu(timesteps, n1),
            lam_d=lam(timesteps, n1),
            lam_s=lam(timesteps, n1),
            bias=rng.normal(size=n1) * 0.3,
        ),
        ("dense1",),
    )
    g.add("dense2", Dense(weight=rng.normal(size=(classes, n1))), ("lmh1",))
    g.add("readout", Readout(bias=rng.normal(size=classes)), ("dense2",))
    return g


@pytest.mark.parametrize("seed", [3, 4])
def test_per_neuron_factors_and_biases(seed: int) -> None:
    timesteps = 6
    q, _ = quantize_graph(_per_neuron_float_graph(seed, timesteps))
    assert q.node("lmh0").mu_d.shape == (1, 10) and q.node("lmh1").lam_s.shape == (6, 6)
    assert len(np.unique(q.node("lmh0").bias)) == 10  # every neuron its own bias
    ref, _ = assert_bit_exact(q, _inputs(q, 7, batch=4, seed=seed), timesteps)
    assert all(0 < r < 1 for r in _firing_rates(ref).values())


# --------------------------------------------------------------------------- saturation


def _saturating_graph(timesteps: int) -> Graph:
    """An integer graph built directly, with currents and biases that drive 24-bit states
    into saturation (both signs), lambda > 1 and per-step, per-neuron factor codes."""
    rng = np.random.default_rng(99)
    codes = lambda: rng.integers(-2048, 2048, (timesteps, 5))
    first = dict(size=12, weight_exp=4, theta=3_000_000, mu_d=np.array([[1500]]), mu_s=np.array([[-800]]))
    first.update(lam_d=np.array([[1800 + 4096]]), lam_s=np.array([[1200 + 4096]]))
    first.update(bias=rng.integers(-2_000_000, 2_000_000, 12))
    second = dict(size=5, weight_exp=14, theta=fx.STATE_MAX - 5, mu_d=codes(), mu_s=codes())
    second.update(lam_d=codes() + 4096, lam_s=codes() + 4096, bias=rng.integers(-3_000_000, 3_000_000, 5))
    return integer_chain(rng, [first, second], timesteps=timesteps, readout_exp=10)


@pytest.mark.parametrize("batch", [1, 3])
def test_saturation_matches(batch: int) -> None:
    timesteps = 6
    q = _saturating_graph(timesteps)
    x = np.random.default_rng(batch).integers(0, 256, (batch, 6))
    x[-1] = 255
    ref, got = assert_bit_exact(q, x, timesteps)
    for name in ("lmh0", "lmh1"):
        assert ref.saturation[name] > 0, name  # the states really hit the 24-bit limits
        assert got.saturation[name] == ref.saturation[name]
    assert any(r > 0 for r in _firing_rates(ref).values())
    # Last-sample final somas pinned at the lower limit (no reset below zero), and somas at
    # STATE_MAX - theta: clipped to the upper limit, then reset by one threshold.
    v_s0 = got.final_state["lmh0"][1]
    assert (v_s0 == fx.STATE_MIN).any()
    assert (v_s0 == fx.STATE_MAX - q.node("lmh0").theta).any()


def test_saturation_through_a_compiled_model(make_mlp, compile_model) -> None:
    """Scaled-up biases of a compiled model: the quantiser accepts them, the states saturate,
    and Lava still agrees with sim bit for bit (one sample, so counts compare one to one)."""
    timesteps = 6
    q = _factored_mlp(make_mlp, compile_model, 31, (10, 6), timesteps, (0.45, -0.45, 1.45, 1.45))
    for name in q.of_kind("q_lmh"):
        size = q.node(name).size
        q.replace(name, bias=np.where(np.arange(size) % 2 == 0, -1, 1) * (fx.STATE_MAX // 2))
    ref, got = assert_bit_exact(q, _inputs(q, 8, batch=1, seed=2), timesteps)
    assert ref.saturation["lmh0"] > 0 and ref.saturation["lmh1"] > 0
    assert got.saturation == ref.saturation


# --------------------------------------------------------------------------- lowering


def test_lowering_offsets_layers_by_dense_delays(make_mlp, compile_model) -> None:
    model = make_mlp(0, n_in=5, hidden=(4, 3), classes=2, timesteps=3)
    _, q, _ = compile_model(model, n_in=5, timesteps=3)
    net = lower(q, np.zeros((2, 5), np.int64), 3)
    # The i-th Dense (0-based) delays by one step each: layer behind it starts at i + 1.
    assert net.start_step == {"lmh0": 1, "lmh1": 2, "readout": 3}
    assert net.total_steps == 2 * 3 + 3
    for name, dense in net.connections.items():
        assert np.array_equal(dense.weights.init, 2 * q.node(name).weight_mant)
        assert dense.proc_params["weight_exp"] == q.node(name).weight_exp
    assert int(net.connections["dense0"].num_message_bits.init) == 8  # graded input
    assert int(net.connections["dense1"].num_message_bits.init) == 0  # binary spikes
    assert int(net.neurons["lmh1"].end_step.init) == 2 + 2 * 3
    assert int(net.neurons["lmh1"].reset_interval.init) == 3


# --------------------------------------------------------------------------- floating point


def test_floating_pt_lava_equals_pytorch(make_mlp) -> None:
    """Lava ``floating_pt`` runs the float graph in float64; so does the model here.

    The two add the same terms in a different order (Lava folds the presynaptic amplitude
    into the weights and adds the Linear bias in the neuron), so states agree to ~1e-12 and
    spikes agree exactly unless a soma potential lands within ~1e-12 of the threshold, which
    does not happen for these fixed seeds.
    """
    from lmh_deploy.frontends.pytorch import export_model

    timesteps, n_in, batch = 6, 10, 4
    model = make_mlp(41, n_in=n_in, hidden=(12, 8), classes=3, timesteps=timesteps).double()
    graph = export_model(model, input_shape=(n_in,), x_max=1.0, timesteps=timesteps)
    x = np.random.default_rng(41).uniform(0, 1, size=(batch, n_in))

    captured: list[torch.Tensor] = []
    hooks = [
        n.register_forward_hook(lambda m, i, o: captured.append(o.detach() != 0)) for n in model.neurons()
    ]
    model.set_stateful(True)
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()  # (T, B, classes)
    for h in hooks:
        h.remove()

    # floating_pt inputs are in units of the input LSB (x * 255 / x_max), unrounded.
    got = run_lava(graph, x / graph.node("input").unit, timesteps, "floating_pt")
    for name, torch_spikes in zip(["lmh0", "lmh1"], captured):
        assert np.array_equal(got.spikes[name], torch_spikes.numpy()), name
        assert 0 < got.spikes[name].mean() < 1
    bias = graph.node("readout").bias
    assert np.allclose(got.readout_trace, out - bias, rtol=0, atol=1e-9)
    assert np.allclose(got.logits, out.sum(0), rtol=0, atol=1e-9)
    for name, neuron in zip(["lmh0", "lmh1"], model.neurons()):
        assert np.allclose(got.final_state[name][0], neuron.v_d[-1:].numpy(), atol=1e-9)
        assert np.allclose(got.final_state[name][1], neuron.v_s[-1:].numpy(), atol=1e-9)


# --------------------------------------------------------------------------- delayed paths


def _skip_graph(timesteps: int) -> Graph:
    """Shortcuts of delay 1 from the input and of delay 2 from a hidden layer."""
    rng = np.random.default_rng(11)
    g = Graph(meta={"timesteps": timesteps})
    g.add("input", Input(shape=(6,), x_max=1.0))

    def f(value: float) -> np.ndarray:
        return np.full((1, 1), value)

    def layer(name: str, n: int, sources: dict[str, int]) -> None:
        for src, n_src in sources.items():
            g.add(f"{src}_to_{name}", Dense(weight=rng.normal(size=(n, n_src)) * 0.9), (src,))
        g.add(
            name,
            LMH(size=n, theta=0.8, mu_d=f(0.2), mu_s=f(0.1), lam_d=f(1.1), lam_s=f(0.9), bias=np.zeros(n)),
            tuple(f"{src}_to_{name}" for src in sources),
        )

    layer("lmh0", 8, {"input": 6})
    layer("lmh1", 8, {"lmh0": 8, "input": 6})  # input path: 1 step late
    layer("lmh2", 8, {"lmh1": 8})
    layer("lmh3", 8, {"lmh2": 8, "lmh0": 8})  # lmh0 path: 2 steps late
    g.add("dense_out", Dense(weight=rng.normal(size=(3, 8))), ("lmh3",))
    g.add("readout", Readout(bias=np.zeros(3)), ("dense_out",))
    return g


def test_delayed_paths_from_delay_lines_and_delay_sparse() -> None:
    """A hidden layer's delayed shortcut leaves through its s_out_delayed (a delay line),
    the input's through Lava's DelaySparse; both equal sim/ bit for bit."""
    from lava.proc.sparse.process import DelaySparse

    q, _ = quantize_graph(_skip_graph(timesteps=5))
    net = lower(q, np.zeros((1, 6), np.int64), 5)
    assert isinstance(net.connections["input_to_lmh1"], DelaySparse)
    assert not isinstance(net.connections["lmh0_to_lmh3"], DelaySparse)
    assert net.neurons["lmh0"].proc_params["output_delay"] == 2
    ref, _ = assert_bit_exact(q, _inputs(q, 6, batch=3, seed=2), 5)
    assert all(0 < r < 1 for r in _firing_rates(ref).values())


def test_a_run_split_after_its_first_steps_is_the_same_run(make_mlp, compile_model) -> None:
    # bench/sim_vs_lava.py times Lava's steps apart from its first ones (first_steps)
    timesteps = 5
    model = make_mlp(3, n_in=10, hidden=(14, 9), classes=4, timesteps=timesteps)
    _, q, _ = compile_model(model, n_in=10, timesteps=timesteps)
    x_int = _inputs(q, 10, batch=3, seed=3)
    ref, _ = assert_bit_exact(q, x_int, timesteps)
    phases: dict[str, float] = {}
    got = run_lava(q, x_int, timesteps, phases=phases, first_steps=3)
    for name in ref.spikes:
        assert np.array_equal(got.spikes[name], ref.spikes[name]), name
        assert np.array_equal(got.final_state[name][1], ref.final_state[name][1][-1:]), name
    assert np.array_equal(got.logits, ref.logits)
    total = 3 * timesteps + 3  # samples x T plus the depth of the readout
    assert phases["steps_run"] == total - 3 and phases["first_steps"] > 0 and phases["steps"] > 0
    assert phases["steps_cpu"] >= 0  # this process and every worker (Linux /proc)


def test_conv_weights_go_to_lava_in_int32_only_where_no_sum_can_overflow() -> None:
    from lmh_deploy.backends.lava.memory import accumulator_dtype
    from lmh_deploy.ir.synapses import qdense_matrix

    def conv(c_in: int, k: int, graded: bool) -> QDense:
        return QDense(
            weight_mant=np.full((2, c_in, k, k), 127),
            weight_exp=0,
            graded=graded,
            weight_scale=1.0,
            conv_input_shape=(c_in, k, k),
            conv_padding=(k // 2, k // 2),
        )

    small, huge = conv(3, 3, graded=True), conv(300, 11, graded=True)  # 2*127*255*36300 > 2**31
    assert accumulator_dtype(small, 255) == np.int32 and accumulator_dtype(huge, 255) == np.int64
    assert accumulator_dtype(small, 32767) == np.int32  # 2*127*32767*27 < 2**31: 16-bit inputs too
    assert accumulator_dtype(conv(300, 11, graded=False), 1) == np.int32  # 0/1 spikes
    m = qdense_matrix(small, fx.WEIGHT_LAVA_SCALE, conv_dtype=np.int32)
    assert m.dtype == np.int32 and m.indices.dtype == np.int32
    assert np.array_equal(m.toarray(), qdense_matrix(small, fx.WEIGHT_LAVA_SCALE).toarray())
