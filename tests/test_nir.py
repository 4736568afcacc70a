"""NIR export / import (lmh_deploy.interop.nir_io).

The NIR side is checked against an independent forward-Euler interpreter of NIR
graphs written here from the NIR equations (``tau dv/dt = (v_leak - v) + r I``,
``tau_syn dI/dt = -I + w_in S``), not against the module's own conversion code.
"""
from __future__ import annotations

import nir
import numpy as np
import pytest
import torch

from lmh_deploy.semantics import integer as fx
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.interop import InteropError
from lmh_deploy.interop.nir_io import (graph_to_nir, nir_to_graph, simulate_float,
                                       spike_disagreement, write_nir)
from lmh_deploy.ir import LMH, Dense, Readout
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.backends.torch_ref import run_float
from lmh_deploy.models.architectures import mlp
from lmh_deploy.models.checkpoint import load_checkpoint, save_checkpoint
from lmh_deploy.sim import simulate

T = 6


# --------------------------------------------------------------------------- helpers
def nir_euler(g: nir.NIRGraph, x: np.ndarray, steps: int, dt: float, *,
              lmh_semantics: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
    """Forward-Euler run of a feed-forward NIR chain; returns (spikes per neuron node, logits).

    ``lmh_semantics``: fire at v >= thr, subtract thr, start at v = thr/2. Otherwise the
    usual NIR backend: fire at v > thr, reset to v_reset, start at 0.
    """
    succ = dict(g.edges)
    name = next(k for k, v in g.nodes.items() if isinstance(v, nir.Input))
    chain = []
    while name in succ:
        name = succ[name]
        chain.append(g.nodes[name])
    batch = x.shape[0]
    state: dict[int, dict[str, np.ndarray]] = {}
    spikes: dict[int, list[np.ndarray]] = {}
    out_trace = []
    for _ in range(steps):
        y = x.reshape(batch, -1).astype(np.float64)
        for i, node in enumerate(chain):
            if isinstance(node, nir.Affine):
                y = y @ node.weight.T + node.bias
            elif isinstance(node, nir.Linear):
                y = y @ node.weight.T
            elif isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
                thr = node.v_threshold
                st = state.setdefault(i, {"v": np.broadcast_to(thr / 2 if lmh_semantics else 0 * thr,
                                                               y.shape).copy(),
                                          "i": np.zeros_like(y)})
                if isinstance(node, nir.LIF):
                    st["v"] = st["v"] + dt / node.tau * ((node.v_leak - st["v"]) + node.r * y)
                elif isinstance(node, nir.IF):
                    st["v"] = st["v"] + dt * node.r * y
                else:
                    st["i"] = st["i"] + dt / node.tau_syn * (-st["i"] + node.w_in * y)
                    st["v"] = st["v"] + dt / node.tau_mem * ((node.v_leak - st["v"]) + node.r * st["i"])
                s = st["v"] >= thr if lmh_semantics else st["v"] > thr
                st["v"] = np.where(s, st["v"] - thr, st["v"]) if lmh_semantics else \
                    np.where(s, node.v_reset, st["v"])
                spikes.setdefault(i, []).append(s)
                y = s.astype(np.float64)
            elif isinstance(node, nir.Output):
                out_trace.append(y)
            elif not isinstance(node, nir.Flatten):
                raise AssertionError(f"unexpected node {node}")
    return [np.array(spikes[i]) for i in sorted(spikes)], np.mean(out_trace, axis=0)


def _lif_model(seed: int, *, decay: float = 0.75, theta: float = 1.0, hidden=(12, 8),
               lmh_rules: bool = True):
    torch.manual_seed(seed)
    model = mlp((10,), 4, neuron="lif", hidden=hidden, timesteps=T, lif_decay=decay, theta=theta)
    if lmh_rules:  # the LM-H rules these NIR-semantics tests are about (not Lava LIF's)
        for neuron in model.neurons():
            neuron.reset, neuron.threshold_test, neuron.v_s_init = "subtract", ">=", 0.5
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(2.0)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.3)
    return model.eval()


def _inputs(seed: int, n: int = 32, shape=(10,)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *shape))


def _lmh_model(seed: int, **set_factors: float):
    torch.manual_seed(seed)
    model = mlp((10,), 4, hidden=(12, 8), timesteps=T, factors="progressive")
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(2.0)
    for neuron in model.neurons():
        neuron.set_factors(**set_factors)
    return model.eval()


# --------------------------------------------------------------------------- export + round trip
def test_lif_checkpoint_round_trip_through_nir_file(tmp_path) -> None:
    """checkpoint -> IR -> NIR file -> nir.read -> IR: same parameters, same integer spikes."""
    ckpt = tmp_path / "lif.pt"
    save_checkpoint(ckpt, _lif_model(3), arch="mlp",
                    arch_kwargs={"neuron": "lif", "hidden": [12, 8], "timesteps": T,
                                 "lif_decay": 0.75},
                    dataset={"name": "synthetic", "input_shape": [10], "num_classes": 4})
    model, _ = load_checkpoint(ckpt)
    graph = export_model(model, input_shape=(10,), timesteps=T)
    dt = 1e-3
    summary = write_nir(graph, tmp_path / "lif.nir", dt=dt)
    assert summary["exact"] and summary["error"] is None

    g = nir.read(tmp_path / "lif.nir")
    types = {k: type(v).__name__ for k, v in g.nodes.items()}
    assert types == {"input": "Input", "dense0": "Affine", "lmh0": "LIF", "dense1": "Affine",
                     "lmh1": "LIF", "dense2": "Affine", "output": "Output"}
    assert float(g.metadata["dt"]) == dt and int(g.metadata["timesteps"]) == T
    lif = g.nodes["lmh0"]
    tau = dt / (1 - 0.75)
    np.testing.assert_allclose(lif.tau, np.full(12, tau), rtol=1e-6)  # 0.75 is float32-exact
    np.testing.assert_allclose(lif.r, lif.tau / dt, rtol=1e-12)
    np.testing.assert_array_equal(lif.v_threshold, np.ones(12))
    np.testing.assert_array_equal(lif.v_reset, np.zeros(12))
    np.testing.assert_array_equal(lif.v_leak, np.zeros(12))
    assert float(lif.metadata["lmh_v_init"]) == 0.5
    # Affine = Dense weight times the presynaptic spike amplitude, bias of the next neuron.
    np.testing.assert_allclose(g.nodes["dense0"].weight, graph.node("dense0").weight)
    np.testing.assert_allclose(g.nodes["dense1"].weight, graph.node("dense1").weight * 1.0)
    np.testing.assert_allclose(g.nodes["dense0"].bias, graph.node("lmh0").bias)
    np.testing.assert_allclose(g.nodes["dense2"].bias, graph.node("readout").bias)

    back = nir_to_graph(tmp_path / "lif.nir")
    assert back.order() == graph.order()
    for name, node in graph.items():
        other = back.node(name)
        assert type(other) is type(node)
        if isinstance(node, Dense):
            np.testing.assert_allclose(other.weight, node.weight, rtol=1e-12, atol=1e-15)
        elif isinstance(node, LMH):
            assert other.theta == node.theta
            for f in ("mu_d", "mu_s", "lam_d", "lam_s", "bias"):
                np.testing.assert_allclose(getattr(other, f), getattr(node, f), rtol=1e-12,
                                           atol=1e-15, err_msg=f"{name}.{f}")
        elif isinstance(node, Readout):
            np.testing.assert_allclose(other.bias, node.bias, rtol=1e-12)
    assert back.meta["timesteps"] == T

    q_ref, _ = quantize_graph(graph)
    q_back, _ = quantize_graph(back)
    for name, node in q_ref.items():
        other = q_back.node(name)
        for key, value in vars(node).items():
            np.testing.assert_array_equal(getattr(other, key), value, err_msg=f"{name}.{key}")
    x = fx.quantize_input(_inputs(4), q_ref.node("input").scale)
    r_ref, r_back = simulate(q_ref, x, T), simulate(q_back, x, T)
    for name in r_ref.spikes:
        np.testing.assert_array_equal(r_back.spikes[name], r_ref.spikes[name])
    np.testing.assert_array_equal(r_back.logits, r_ref.logits)
    rate = np.mean(r_ref.spikes["lmh0"])
    assert 0.05 < rate < 0.95, f"degenerate test network (firing rate {rate})"


@pytest.mark.parametrize("decay, theta", [(0.75, 1.0), (0.6, 0.8), (1.0, 1.3)])
def test_exported_file_equals_the_float_ir_under_euler(tmp_path, decay: float, theta: float) -> None:
    """A forward-Euler interpreter of the written NIR file (LM-H reset) reproduces the IR exactly.

    decay 1.0 is the IF case (lam_s = 1); theta != 1 checks the amplitude scaling of weights.
    """
    graph = export_model(_lif_model(5, decay=decay, theta=theta), input_shape=(10,), timesteps=T)
    dt = 5e-4
    write_nir(graph, tmp_path / "m.nir", dt=dt)
    g = nir.read(tmp_path / "m.nir")
    assert type(g.nodes["lmh0"]).__name__ == ("IF" if decay == 1.0 else "LIF")
    x = _inputs(6)
    spikes, logits = nir_euler(g, x, T, dt)
    ref = simulate_float(graph, x, T)
    for name, s in zip(("lmh0", "lmh1"), spikes):
        np.testing.assert_array_equal(s, ref.spikes[name])
    np.testing.assert_allclose(logits, ref.logits, rtol=1e-9, atol=1e-12)
    assert 0 < np.mean(ref.spikes["lmh1"]) < 1


def test_cubalif_export_for_positive_dendrite_decay(tmp_path) -> None:
    """mu_s = 0, 0 < mu_d < 0.5, lam_d != 1, lam_s < 1 is exact as CubaLIF (the dendrite is I)."""
    graph = export_model(_lmh_model(7, mu_d=0.3, mu_s=0.0, lam_d=1.2, lam_s=0.8),
                         input_shape=(10,), timesteps=T)
    dt = 1e-3
    write_nir(graph, tmp_path / "c.nir", dt=dt)
    g = nir.read(tmp_path / "c.nir")
    node = g.nodes["lmh0"]
    assert isinstance(node, nir.CubaLIF)
    np.testing.assert_allclose(1 - dt / node.tau_syn, 0.3, atol=1e-7)
    np.testing.assert_allclose(1 - dt / node.tau_mem, 0.8, atol=1e-7)
    x = _inputs(8)
    spikes, logits = nir_euler(g, x, T, dt)
    ref = simulate_float(graph, x, T)
    for name, s in zip(("lmh0", "lmh1"), spikes):
        np.testing.assert_array_equal(s, ref.spikes[name])
    np.testing.assert_allclose(logits, ref.logits, rtol=1e-9, atol=1e-12)
    back = nir_to_graph(tmp_path / "c.nir")
    np.testing.assert_allclose(back.node("lmh1").mu_d, [[0.3]], atol=1e-7)
    np.testing.assert_allclose(back.node("lmh1").lam_d, [[1.2]], atol=1e-7)
    np.testing.assert_array_equal(simulate_float(back, x, T).spikes["lmh1"], ref.spikes["lmh1"])


def test_float_simulator_matches_the_torch_model(make_mlp) -> None:
    """simulate_float (used to measure lossy exports) computes what LMHNeuron computes."""
    for model in (make_mlp(11), make_mlp(12, factors="radical"), _lif_model(13)):
        steps = model.timesteps
        graph = export_model(model, input_shape=(10,), timesteps=steps)
        x = _inputs(14, n=16).astype(np.float32)
        ours = simulate_float(graph, x, steps)
        torch_run = run_float(model, x, steps)
        for name, s in torch_run.spikes.items():
            np.testing.assert_array_equal(ours.spikes[name], s, err_msg=name)
        np.testing.assert_allclose(ours.logits, torch_run.logits, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- refusal and lossy export
@pytest.mark.parametrize("factors, expected", [
    ({"mu_d": -0.21, "mu_s": 0.0, "lam_d": 1.0, "lam_s": 0.9},
     "lmh0: mu_d = -0.21 != 0; NIR has no dendrite->soma two-compartment neuron"),
    ({"mu_d": 0.0, "mu_s": 0.15, "lam_d": 1.0, "lam_s": 0.9}, "lmh0: mu_s = 0.15 != 0"),
    ({"mu_d": 0.0, "mu_s": 0.0, "lam_d": 1.0, "lam_s": 1.25}, "lmh0: lam_s = 1.25 > 1"),
])
def test_general_lmh_is_refused_naming_layer_and_factor(factors, expected) -> None:
    graph = export_model(_lmh_model(21, **factors), input_shape=(10,), timesteps=T)
    with pytest.raises(InteropError) as info:
        graph_to_nir(graph)
    msg = str(info.value)
    assert expected in msg and "lmh1" in msg and "allow_lossy" in msg


def test_radical_factors_are_refused(make_mlp) -> None:
    graph = export_model(make_mlp(22, factors="radical"), input_shape=(10,), timesteps=5)
    with pytest.raises(InteropError, match=r"lmh0: radical factors: mu_d changes over the 5"):
        graph_to_nir(graph)


def test_lossy_export_reports_its_measured_error(tmp_path, make_mlp) -> None:
    graph = export_model(make_mlp(23), input_shape=(10,), timesteps=5)
    x = _inputs(24, n=48)
    summary = write_nir(graph, tmp_path / "lossy.nir", allow_lossy=True, inputs=x)
    assert not summary["exact"]
    g = nir.read(tmp_path / "lossy.nir")
    assert {type(n).__name__ for k, n in g.nodes.items() if k.startswith("lmh")} <= {"LIF", "IF"}
    assert "dendrite memory dropped" in str(g.nodes["lmh0"].metadata["lmh_approximation"])
    reported = g.metadata["lmh_deploy_error"]["lmh_semantics"]

    # The documented approximation, rebuilt here by hand: mu_d = mu_s = 0, lam_d kept,
    # lam_s clamped to <= 1 (per layer), then both graphs run with LM-H semantics.
    approx = graph.copy()
    for name in approx.of_kind("lmh"):
        approx.replace(name, mu_d=np.zeros((1, 1)), mu_s=np.zeros((1, 1)),
                       lam_s=np.minimum(approx.node(name).lam_s, 1.0))
    expected = spike_disagreement(simulate_float(graph, x), simulate_float(approx, x))
    assert float(reported["spike_disagreement"]) == pytest.approx(expected["spike_disagreement"])
    assert 0.0 < expected["spike_disagreement"] < 1.0
    assert float(reported["per_layer"]["lmh1"]) == pytest.approx(expected["per_layer"]["lmh1"])
    # The approximation as written is what the NIR file computes (Euler, LM-H reset).
    spikes, _ = nir_euler(g, x, 5, float(g.metadata["dt"]))
    np.testing.assert_array_equal(spikes[0], simulate_float(approx, x).spikes["lmh0"])
    assert summary["error"]["lmh_semantics"]["spike_disagreement"] == pytest.approx(
        expected["spike_disagreement"])


def test_exact_export_measures_only_the_reset_difference() -> None:
    graph = export_model(_lif_model(25), input_shape=(10,), timesteps=T)
    x = _inputs(26)
    g = graph_to_nir(graph, inputs=x)
    err = g.metadata["lmh_deploy_error"]
    assert err["lmh_semantics"]["spike_disagreement"] == 0.0
    # What a NIR backend would run (reset to 0, start at 0, strict >), checked by the interpreter.
    spikes, _ = nir_euler(g, x, T, 1e-3, lmh_semantics=False)
    ref = simulate_float(graph, x, T)
    n_diff = sum(int(np.sum(s != ref.spikes[k])) for k, s in zip(("lmh0", "lmh1"), spikes))
    n_all = sum(s.size for s in spikes)
    assert n_diff > 0
    assert err["nir_backend_semantics"]["spike_disagreement"] == pytest.approx(n_diff / n_all)


# --------------------------------------------------------------------------- import of foreign graphs
def _snntorch_style_graph(rng: np.random.Generator, *, dt: float) -> nir.NIRGraph:
    """Input -> Affine -> LIF (snnTorch: tau = dt/(1-beta), r = tau/dt, per-neuron thresholds,
    v_leak != 0) -> Linear -> LIF (Norse-like r = 1) -> Affine -> LIF -> Output (spiking output)."""
    beta = 0.9
    tau = np.full(6, dt / (1 - beta))
    lif1 = nir.LIF(tau=tau, r=tau / dt, v_leak=np.full(6, 0.05), v_threshold=rng.uniform(0.7, 1.3, 6),
                   v_reset=np.zeros(6))
    tau2 = np.full(5, dt / (1 - 0.7))
    lif2 = nir.LIF(tau=tau2, r=np.ones(5), v_leak=np.zeros(5), v_threshold=np.full(5, 0.02),
                   v_reset=np.zeros(5))
    tau3 = np.full(3, dt / (1 - 0.8))
    lif3 = nir.LIF(tau=tau3, r=tau3 / dt, v_leak=np.zeros(3), v_threshold=np.full(3, 1.0),
                   v_reset=np.zeros(3))
    return nir.NIRGraph.from_list(
        nir.Input(input_type=np.array([4])),
        nir.Affine(weight=rng.normal(0, 0.8, (6, 4)), bias=rng.normal(0, 0.2, 6)), lif1,
        nir.Linear(weight=rng.normal(0, 0.6, (5, 6))), lif2,
        nir.Affine(weight=rng.normal(0, 0.8, (3, 5)), bias=rng.normal(0, 0.1, 3)), lif3,
        nir.Output(output_type=np.array([3])))


def test_import_snntorch_style_graph(tmp_path) -> None:
    dt = 1e-4
    g = _snntorch_style_graph(np.random.default_rng(31), dt=dt)
    nir.write(tmp_path / "snn.nir", g)
    with pytest.raises(InteropError, match="pass dt="):
        nir_to_graph(tmp_path / "snn.nir")
    ir = nir_to_graph(tmp_path / "snn.nir", dt=dt, timesteps=8)
    assert [ir.node(n).kind for n in ir.order()] == ["input", "dense", "lmh", "dense", "lmh",
                                                       "dense", "lmh", "dense", "readout"]
    np.testing.assert_allclose(ir.node("lmh0").lam_s, [[0.9]], rtol=1e-12)
    np.testing.assert_allclose(ir.node("lmh0").lam_d, [[1.0]])
    np.testing.assert_allclose(ir.node("lmh1").lam_s, [[0.7]], rtol=1e-12)
    assert ir.node("lmh1").lam_d.item() == 1.0  # gain dt*r/tau = 0.3 folded into the weights
    assert any("identity readout" in note for note in ir.meta["import_notes"])
    # Same dynamics as the file under LM-H semantics (Euler, subtract, v0 = thr/2, >=).
    x = np.random.default_rng(32).uniform(0, 1, (40, 4))
    spikes, logits = nir_euler(nir.read(tmp_path / "snn.nir"), x, 8, dt)
    ours = simulate_float(ir, x, 8)
    for name, s in zip(("lmh0", "lmh1", "lmh2"), spikes):
        np.testing.assert_array_equal(ours.spikes[name], s, err_msg=name)
        assert 0 < s.mean() < 1, name
    np.testing.assert_allclose(ours.logits, logits, rtol=1e-9, atol=1e-12)  # firing rates
    # ... and the rest of the pipeline takes it.
    q, report = quantize_graph(ir)
    rec = simulate(q, fx.quantize_input(x, q.node("input").scale), 8)
    assert rec.spikes["lmh2"].shape == (8, 40, 3)
    assert [layer["name"] for layer in report["layers"] if layer["kind"] == "lmh"] == \
        ["lmh0", "lmh1", "lmh2"]


def test_import_cubalif_and_refusals(tmp_path) -> None:
    dt = 1e-3
    rng = np.random.default_rng(41)

    def graph(alpha: float, **lif_kw) -> nir.NIRGraph:
        tau_syn, tau_mem = np.full(5, dt / (1 - alpha)), np.full(5, dt / (1 - 0.85))
        kw = dict(tau_syn=tau_syn, tau_mem=tau_mem, r=tau_mem / dt, v_leak=np.zeros(5),
                  v_threshold=np.ones(5), w_in=tau_syn / dt)
        kw.update(lif_kw)
        return nir.NIRGraph.from_list(nir.Input(input_type=np.array([3])),
                                      nir.Affine(weight=rng.normal(0, 1, (5, 3)), bias=np.zeros(5)),
                                      nir.CubaLIF(**kw),
                                      nir.Affine(weight=rng.normal(0, 1, (2, 5)), bias=np.zeros(2)),
                                      nir.Output(output_type=np.array([2])))

    ir = nir_to_graph(graph(0.3), dt=dt)
    np.testing.assert_allclose(ir.node("lmh0").mu_d, [[0.3]], atol=1e-12)
    np.testing.assert_allclose(ir.node("lmh0").lam_s, [[0.85]], atol=1e-12)
    with pytest.raises(InteropError, match=r"'cubalif'.*mu_d = 1 - dt/tau_syn.*= 0\.9 is outside"):
        nir_to_graph(graph(0.9), dt=dt)
    with pytest.raises(InteropError, match=r"'cubalif'.*v_reset = 0\.1 != 0"):
        nir_to_graph(graph(0.3, v_reset=np.full(5, 0.1)), dt=dt)
    li = nir.NIRGraph.from_list(nir.Input(input_type=np.array([3])),
                                nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)),
                                nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)),
                                nir.Output(output_type=np.array([2])))
    with pytest.raises(InteropError, match=r"'li' \(LI\): node type LI cannot be imported"):
        nir_to_graph(li, dt=dt)
    # A recurrent edge is refused, naming the node.
    rec = graph(0.3)
    rec.edges.append(("affine_1", "cubalif"))
    with pytest.raises(InteropError, match="only feed-forward chains"):
        nir_to_graph(rec, dt=dt)


def _conv_graph():
    from lmh_deploy.ir import Conv2d, Graph, Input

    g = Graph(meta={"timesteps": 3})
    g.add("input", Input(shape=(1, 4, 4)))
    g.add("conv0", Conv2d(weight=np.ones((2, 1, 3, 3)) * 0.1, input_shape=(1, 4, 4)), ("input",))
    g.add("lmh0", LMH(size=8, theta=1.0, mu_d=np.zeros((1, 1)), mu_s=np.zeros((1, 1)),
                      lam_d=np.ones((1, 1)), lam_s=np.full((1, 1), 0.9), bias=np.zeros(8)),
          ("conv0",))
    g.add("dense0", Dense(weight=np.ones((2, 8))), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(2)), ("dense0",))
    return g


def test_non_dense_graphs_are_refused_naming_the_node() -> None:
    graph = _conv_graph()
    with pytest.raises(InteropError, match=r"conv0: conv2d layers are not supported by the NIR "
                                           r"export"):
        graph_to_nir(graph)
    with pytest.raises(InteropError, match=r"conv0: conv2d layers are not supported"):
        simulate_float(graph, np.zeros((1, 1, 4, 4)))
