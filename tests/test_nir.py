"""NIR both ways, convolutions included (frontends.nir, interop.nir_export, backends.float.nir_graph).

The NIR side is checked by running the NIR graph itself (the reference executor, which
follows the NIR equations node by node), not by the conversion code.
"""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from lmh_deploy.models.architectures import cnn, mlp
from lmh_deploy.models.data import load_dataset
from lmh_deploy.sim import simulate

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.frontends.nir import nir_to_graph
from lmh_deploy.backends.float.nir_graph import run_nir_reference
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.interop import InteropError
from lmh_deploy.interop.nir_export import NIR_RULES, graph_to_nir, spike_disagreement, write_nir
from lmh_deploy.ir import LMH, Dense
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from shared import invoke, random_mlp, verified

T = 6
LMH_RULES = {"reset": "subtract", "threshold_test": ">=", "v_s_init": 0.5}


def _inputs(seed: int, n: int = 32, shape=(10,)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, *shape))


def unit_lif(shape, tau: float, dt: float) -> nir.LIF:
    """A NIR LIF as snnTorch exports one: r = tau / dt (a unit input gain per step), no leak
    potential, threshold 1, reset to 0."""
    return nir.LIF(
        tau=np.full(shape, tau),
        r=np.full(shape, tau / dt),
        v_leak=np.zeros(shape),
        v_threshold=np.ones(shape),
        v_reset=np.zeros(shape),
    )


def _lif_model(seed: int, *, decay: float = 0.75, theta: float = 1.0):
    return random_mlp(seed, timesteps=T, neuron="lif", lif_decay=decay, theta=theta, weight_gain=2.5)


def _lmh_model(seed: int, **factors: float):
    torch.manual_seed(seed)
    model = mlp((10,), 4, hidden=(12, 8), timesteps=T, factors="progressive")
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(2.0)
    for neuron in model.neurons():
        neuron.set_factors(**factors)
    return model.eval()


def _with_rules(graph, **rules):
    for name in graph.of_kind("lmh"):
        theta = graph.node(name).theta
        graph.replace(name, **{k: (v * theta if k == "v_s_init" else v) for k, v in rules.items()})
    return graph


def _same_run(nir_graph: nir.NIRGraph, graph, x: np.ndarray, steps: int = T) -> None:
    """The NIR graph, run by the reference executor, spikes exactly as the float IR."""
    names = {n: n for n in graph.of_kind("lmh")}
    ref = run_nir_reference(nir_graph, x, steps, float(nir_graph.metadata["dt"]), source_neurons=names)
    ours = simulate_float(graph, x, steps)
    for name in names:
        np.testing.assert_array_equal(ref.spikes[name], ours.spikes[name], err_msg=name)
        assert 0 < ours.spikes[name].mean() < 1, f"degenerate layer {name}"
    np.testing.assert_allclose(ref.logits, ours.logits, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- export
def test_lif_round_trip_through_nir_file(tmp_path) -> None:
    """IR -> NIR file -> IR: same parameters and rules, same integer spikes; dt in metadata."""
    graph = export_model(_lif_model(3), input_shape=(10,), timesteps=T)
    summary = write_nir(graph, tmp_path / "lif.nir")
    assert summary["exact"] and summary["nir_native_rules"] and summary["error"] is None
    g = nir.read(tmp_path / "lif.nir")
    assert {k: type(v).__name__ for k, v in g.nodes.items()} == {
        "input": "Input",
        "dense0": "Affine",
        "lmh0": "LIF",
        "dense1": "Affine",
        "lmh1": "LIF",
        "dense2": "Affine",
        "output": "Output",
    }
    assert float(g.metadata["dt"]) == 1e-4 and int(g.metadata["timesteps"]) == T
    assert "lmh_rules" not in g.nodes["lmh0"].metadata  # NIR's own rules: nothing extra
    np.testing.assert_allclose(g.nodes["lmh0"].tau, 1e-4 / (1 - 0.75), rtol=1e-6)
    back = nir_to_graph(tmp_path / "lif.nir")
    assert back.meta["dt"] == 1e-4 and back.meta["dt_origin"] == "file metadata"
    assert back.order() == graph.order()
    for name in graph.of_kind("lmh"):
        assert back.node(name).rules() == graph.node(name).rules()
        for f in ("mu_d", "mu_s", "lam_d", "lam_s", "bias"):
            np.testing.assert_allclose(
                getattr(back.node(name), f),
                getattr(graph.node(name), f),
                rtol=1e-12,
                atol=1e-15,
                err_msg=f"{name}.{f}",
            )
    for name in graph.of_kind("dense"):
        np.testing.assert_allclose(back.node(name).weight, graph.node(name).weight, rtol=1e-12)
    q_ref, q_back = quantize_graph(graph)[0], quantize_graph(back)[0]
    x = fx.quantize_input(_inputs(4), q_ref.node("input").scale)
    r_ref, r_back = simulate(q_ref, x, T), simulate(q_back, x, T)
    for name in r_ref.spikes:
        np.testing.assert_array_equal(r_back.spikes[name], r_ref.spikes[name])
    np.testing.assert_array_equal(r_back.logits, r_ref.logits)
    _same_run(g, graph, _inputs(5))


@pytest.mark.parametrize("decay, theta", [(0.75, 1.0), (0.6, 0.8), (1.0, 1.3)])
def test_lmh_rules_travel_in_node_metadata(tmp_path, decay: float, theta: float) -> None:
    """LM-H's rules (subtract, >=, theta/2) are written per node and honoured on the way back;
    the export measures how far a plain NIR backend's run would be."""
    graph = _with_rules(
        export_model(_lif_model(5, decay=decay, theta=theta), input_shape=(10,), timesteps=T), **LMH_RULES
    )
    write_nir(graph, tmp_path / "m.nir", dt=5e-4)
    g = nir.read(tmp_path / "m.nir")
    assert type(g.nodes["lmh0"]).__name__ == ("IF" if decay == 1.0 else "LIF")
    assert g.nodes["lmh0"].metadata["lmh_rules"]["reset"] == "subtract"
    assert float(g.metadata["lmh_deploy_error"]["nir_backend_semantics"]["spike_disagreement"]) > 0
    _same_run(g, graph, _inputs(6))
    back = nir_to_graph(g)
    assert back.node("lmh1").rules() == graph.node("lmh1").rules()


def test_cubalif_export_for_positive_dendrite_decay(tmp_path) -> None:
    graph = _with_rules(
        export_model(_lmh_model(7, mu_d=0.3, mu_s=0.0, lam_d=1.2, lam_s=0.8), input_shape=(10,), timesteps=T),
        **LMH_RULES,
    )
    write_nir(graph, tmp_path / "c.nir", dt=1e-3)
    g = nir.read(tmp_path / "c.nir")
    node = g.nodes["lmh0"]
    assert isinstance(node, nir.CubaLIF)
    np.testing.assert_allclose(1 - 1e-3 / node.tau_syn, 0.3, atol=1e-7)
    _same_run(g, graph, _inputs(8))
    back = nir_to_graph(g)
    np.testing.assert_allclose(back.node("lmh1").lam_d, [[1.2]], atol=1e-7)


def _spiking_cnn_graph():
    """A LIF conv net (conv, BN, LIF, avg pool, twice, linear readout) whose layers spike."""
    torch.manual_seed(9)
    model = cnn((1, 8, 8), 10, neuron="lif", timesteps=T, lif_decay=0.8, width_mult=0.25).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(3.0)
            if isinstance(m, torch.nn.BatchNorm2d):  # per-channel biases after folding
                m.bias.uniform_(0.0, 0.3)
    return export_model(model, input_shape=(1, 8, 8), timesteps=T)


#: The fields of each node nir 1.0.4 has (sinabs 3.1.3's and rockpool 3.1.0's pin), from its
#: source: its reader passes every dataset of a node's HDF5 group to the node's class, so one
#: it lacks (``v_reset``, added in nir 1.0.5) makes it refuse the whole file. Input and
#: Output store their type as ``shape``.
NIR_104_FIELDS = {
    "Input": {"shape"},
    "Output": {"shape"},
    "Affine": {"weight", "bias", "input_type", "output_type", "metadata"},
    "Conv2d": {"input_shape", "weight", "stride", "padding", "dilation", "groups", "bias"},
    "Flatten": {"input_type", "start_dim", "end_dim", "output_type", "metadata"},
    "LIF": {"tau", "r", "v_leak", "v_threshold", "input_type", "output_type", "metadata"},
    "IF": {"r", "v_threshold", "input_type", "output_type", "metadata"},
    "CubaLIF": {"tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "w_in"}
    | {"input_type", "output_type", "metadata"},
}


def _fields_nir_104_lacks(path: Path) -> dict[str, set[str]]:
    import h5py

    with h5py.File(path, "r") as f:
        nodes = {name: (group["type"][()].decode(), set(group)) for name, group in f["node/nodes"].items()}
    return {name: keys - {"type"} - NIR_104_FIELDS[kind] for name, (kind, keys) in nodes.items()}


@pytest.mark.parametrize(
    "build, kinds",
    [
        (lambda: export_model(_lif_model(3), input_shape=(10,), timesteps=T), {"LIF"}),
        (lambda: export_model(_lif_model(4, decay=1.0), input_shape=(10,), timesteps=T), {"IF"}),
        (
            lambda: export_model(
                _lmh_model(7, mu_d=0.3, mu_s=0.0, lam_d=1.2, lam_s=0.8), input_shape=(10,), timesteps=T
            ),
            {"CubaLIF"},
        ),
        (_spiking_cnn_graph, {"LIF", "Conv2d", "Flatten"}),
    ],
)
def test_export_is_readable_by_nir_104(tmp_path, build, kinds: set[str]) -> None:
    """Every field the export writes is one nir 1.0.4 has: a zero ``v_reset`` (nir >= 1.0.5's
    default for a node without one) is left out, and the file reads back the same."""
    graph = build()
    summary = write_nir(graph, tmp_path / "m.nir")
    assert summary["nir_versions"] == ">= 1.0.4"
    lacking = _fields_nir_104_lacks(tmp_path / "m.nir")
    assert lacking == {name: set() for name in lacking}
    g = nir.read(tmp_path / "m.nir")
    assert kinds <= {type(n).__name__ for n in g.nodes.values()}
    for node in g.nodes.values():
        if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
            assert np.all(node.v_reset == 0)
    x = _inputs(2, 8, graph.node("input").shape)
    back = nir_to_graph(g)
    np.testing.assert_array_equal(simulate_float(back, x, T).logits, simulate_float(graph, x, T).logits)


def test_nonzero_v_reset_is_kept_and_named(tmp_path) -> None:
    """A layer that resets to a nonzero value needs ``v_reset``: kept, and the summary says
    the file needs nir >= 1.0.5 and why (1.0.4 would refuse it)."""
    graph = _with_rules(export_model(_lif_model(3), input_shape=(10,), timesteps=T), reset="set")
    graph.replace("lmh1", reset_value=0.25)
    summary = write_nir(graph, tmp_path / "m.nir")
    assert summary["nir_versions"] == ">= 1.0.5 (v_reset != 0: lmh1)"
    assert _fields_nir_104_lacks(tmp_path / "m.nir")["lmh1"] == {"v_reset"}
    assert _fields_nir_104_lacks(tmp_path / "m.nir")["lmh0"] == set()
    g = nir.read(tmp_path / "m.nir")
    np.testing.assert_array_equal(g.nodes["lmh1"].v_reset, 0.25)
    assert nir_to_graph(g).node("lmh1").reset_value == 0.25


def test_earlier_conv_exports_still_import(tmp_path) -> None:
    """Files written before the batch-safe form (average pools as ``AvgPool2d``, ``Flatten``
    with ``start_dim = 0``, a zero ``v_reset`` on every neuron) import as the same network."""
    graph = _spiking_cnn_graph()
    write_nir(graph, tmp_path / "new.nir")
    g = nir.read(tmp_path / "new.nir")
    old = dict(g.nodes)
    for name, node in g.nodes.items():
        if name.startswith("pool"):  # written from the IR's AvgPool as a diagonal Conv2d
            kernel, c = np.array(node.weight.shape[2:]), np.arange(len(node.weight))
            assert np.all(node.weight[c, c] == 1 / kernel.prod())
            assert np.sum(node.weight != 0) == c.size * kernel.prod()
            old[name] = nir.AvgPool2d(kernel, np.array(node.stride), np.zeros(2, int))
        elif isinstance(node, nir.Flatten):
            assert (node.start_dim, node.end_dim) == (-3, -1)
            old[name] = nir.Flatten(input_type=node.input_type, start_dim=0, end_dim=-1)
    assert any(isinstance(n, nir.AvgPool2d) for n in old.values())
    nir.write(tmp_path / "old.nir", nir.NIRGraph(old, g.edges, metadata=g.metadata, type_check=False))
    x = _inputs(3, 8, (1, 8, 8))
    ref = simulate_float(graph, x, T)
    back = simulate_float(nir_to_graph(tmp_path / "old.nir"), x, T)
    for name in graph.of_kind("lmh"):
        assert 0 < ref.spikes[name].mean() < 1, f"degenerate layer {name}"
        np.testing.assert_array_equal(back.spikes[name], ref.spikes[name], err_msg=name)
    np.testing.assert_allclose(back.logits, ref.logits, rtol=1e-9, atol=1e-12)


def test_per_neuron_initial_dendrite_travels_in_node_metadata(tmp_path) -> None:
    """An initial dendrite that differs per neuron (rockpool's trained bias) is written in the
    node's lmh_rules as its array and read back exactly; the NIR run honours it."""
    graph = _with_rules(
        export_model(_lmh_model(7, mu_d=0.3, mu_s=0.0, lam_d=1.2, lam_s=0.8), input_shape=(10,), timesteps=T),
        **LMH_RULES,
    )
    v_d_init = np.linspace(-0.4, 0.6, graph.node("lmh0").size)
    graph.replace("lmh0", v_d_init=v_d_init)
    write_nir(graph, tmp_path / "c.nir", dt=1e-3)
    g = nir.read(tmp_path / "c.nir")
    np.testing.assert_array_equal(g.nodes["lmh0"].metadata["lmh_rules"]["v_d_init"], v_d_init)
    _same_run(g, graph, _inputs(8))
    back = nir_to_graph(g)
    np.testing.assert_array_equal(back.node("lmh0").v_d_init, v_d_init)
    assert back.node("lmh1").v_d_init == graph.node("lmh1").v_d_init == 0.0


def test_conv_net_exports_with_conv_pool_flatten(tmp_path) -> None:
    """A conv net (conv, BN folded, avg pool, linear readout) -> Conv2d (the pools too),
    Flatten."""
    graph = _spiking_cnn_graph()
    write_nir(graph, tmp_path / "cnn.nir")
    g = nir.read(tmp_path / "cnn.nir")
    kinds = [type(n).__name__ for n in g.nodes.values()]
    assert {"Conv2d", "Flatten", "Affine", "LIF"} <= set(kinds)
    assert kinds.count("Conv2d") == 4 and "AvgPool2d" not in kinds  # 2 convolutions, 2 pools
    x = load_dataset("digits")[1].tensors[0][:24].numpy()
    _same_run(g, graph, x)
    back = nir_to_graph(g)
    np.testing.assert_array_equal(
        simulate_float(back, x, T).spikes["lmh0"], simulate_float(graph, x, T).spikes["lmh0"]
    )


@pytest.mark.parametrize(
    "factors, expected",
    [
        ({"mu_d": -0.21, "mu_s": 0.0, "lam_d": 1.0, "lam_s": 0.9}, "memory dropped: mu_d -0.21 -> 0"),
        ({"mu_d": 0.0, "mu_s": 0.15, "lam_d": 1.0, "lam_s": 0.9}, "feedback dropped: mu_s 0.15"),
        ({"mu_d": 0.0, "mu_s": 0.0, "lam_d": 1.0, "lam_s": 1.25}, "lam_s 1.25 -> 1"),
    ],
)
def test_general_lmh_exports_as_lif_and_imports_back_exactly(tmp_path, factors, expected) -> None:
    """NIR has no LM-H neuron: the node is the nearest LIF (what other NIR tools run, its
    distance measured), the exact factors ride in metadata and lmh-deploy reads the same
    network back, spike for spike."""
    graph = export_model(_lmh_model(21, **factors), input_shape=(10,), timesteps=T)
    summary = write_nir(graph, tmp_path / "lmh.nir")
    assert not summary["exact"] and expected in summary["nodes"]["lmh0"]["approximation"]
    assert 0.0 < summary["error"]["nir_backend_semantics"]["spike_disagreement"] < 1.0
    g = nir.read(tmp_path / "lmh.nir")
    assert type(g.nodes["lmh0"]).__name__ in ("LIF", "IF")
    x = _inputs(22, n=40)
    back, ours = simulate_float(nir_to_graph(g), x, T), simulate_float(graph, x, T)
    assert 0.05 < float(np.mean(ours.spikes["lmh0"])) < 0.95
    for name in ours.spikes:
        np.testing.assert_array_equal(back.spikes[name], ours.spikes[name], err_msg=name)


def test_per_step_factors_travel_in_metadata(tmp_path) -> None:
    graph = export_model(_lmh_model(24), input_shape=(10,), timesteps=T)
    rows = np.linspace(0.6, 1.0, T).reshape(T, 1)
    for name in graph.of_kind("lmh"):
        graph.replace(name, lam_s=rows, mu_s=0.1 * rows, mu_d=np.full((T, 1), -0.1), lam_d=np.ones((T, 1)))
    summary = write_nir(graph, tmp_path / "radical.nir")
    assert f"time rows of the {T} radical factor sets averaged" in summary["nodes"]["lmh0"]["approximation"]
    back = nir_to_graph(tmp_path / "radical.nir")
    np.testing.assert_array_equal(back.node("lmh1").lam_s, rows)
    x = _inputs(25, n=16)
    np.testing.assert_array_equal(
        simulate_float(back, x, T).spikes["lmh1"], simulate_float(graph, x, T).spikes["lmh1"]
    )


def test_malformed_lmh_factors_metadata_is_one_line(tmp_path) -> None:
    graph = export_model(_lmh_model(26, mu_s=0.2), input_shape=(10,), timesteps=T)
    write_nir(graph, tmp_path / "lmh.nir")
    g = nir.read(tmp_path / "lmh.nir")
    del g.nodes["lmh0"].metadata["lmh_factors"]["mu_s"]
    with pytest.raises(InteropError, match="lmh0.*lmh_factors metadata lacks mu_s"):
        nir_to_graph(g)


def test_lossy_export_reports_its_measured_error(tmp_path, make_mlp) -> None:
    graph = export_model(make_mlp(23), input_shape=(10,), timesteps=5)
    x = _inputs(24, n=48)
    summary = write_nir(graph, tmp_path / "lossy.nir", inputs=x)
    assert not summary["exact"]
    g = nir.read(tmp_path / "lossy.nir")
    assert "dendrite memory dropped" in str(g.nodes["lmh0"].metadata["lmh_approximation"])
    approx = graph.copy()
    for name in approx.of_kind("lmh"):
        approx.replace(
            name, mu_d=np.zeros((1, 1)), mu_s=np.zeros((1, 1)), lam_s=np.minimum(approx.node(name).lam_s, 1.0)
        )
    expected = spike_disagreement(simulate_float(graph, x, 5), simulate_float(approx, x, 5))
    reported = summary["error"]["lmh_semantics"]
    assert float(reported["spike_disagreement"]) == pytest.approx(expected["spike_disagreement"])
    assert 0.0 < expected["spike_disagreement"] < 1.0


def test_residual_graphs_export_to_nir(tmp_path) -> None:
    """A residual sum becomes two NIR edges into the neuron (NIR sums converging inputs); the
    file, run by the NIR reference executor, reproduces the IR's spikes exactly, and imports
    back into the same graph."""
    from lmh_deploy.models.architectures import resnet20

    torch.manual_seed(0)
    graph = export_model(
        resnet20((1, 8, 8), 10, neuron="lif", width_mult=0.25, timesteps=2),
        input_shape=(1, 8, 8),
        timesteps=2,
    )
    residual = [n for n in graph.of_kind("lmh") if len(graph.inputs_of(n)) == 2]
    assert residual
    summary = write_nir(graph, tmp_path / "res.nir")
    g = nir.read(tmp_path / "res.nir")  # nir's own type check accepts it
    for name in residual:
        assert len([a for a, b in g.edges if b == name]) == 2, name
    assert summary["sums"] == sorted(residual) and summary["depth_first_order_runs"]
    # one all-zero execution-order node per sum (for norse's depth-first executor), every
    # field one nir 1.0.4 has
    order = set(g.metadata["lmh_order_nodes"])
    assert len(order) == len(residual)
    assert all(not g.nodes[n].weight.any() and not g.nodes[n].bias.any() for n in order)
    assert summary["nir_versions"] == ">= 1.0.4"
    assert all(not lacks for lacks in _fields_nir_104_lacks(tmp_path / "res.nir").values())
    x = _inputs(0, 16, (1, 8, 8)) * 3.0
    ref = run_nir_reference(g, x, 2, summary["dt"], source_neurons={n: n for n in graph.of_kind("lmh")})
    ir = simulate_float(graph, x, 2)
    assert sum(s.sum() for s in ir.spikes.values()) > 0
    for name, spikes in ir.spikes.items():
        assert np.array_equal(ref.spikes[name], spikes), name
    np.testing.assert_allclose(ref.logits, ir.logits, atol=1e-9)
    # and back: the residual file imports to a graph with the same spikes
    back = nir_to_graph(tmp_path / "res.nir")
    assert [len(back.inputs_of(n)) for n in back.of_kind("lmh")].count(2) == len(residual)
    again = simulate_float(back, x, 2)
    for name, spikes in ir.spikes.items():
        assert np.array_equal(again.spikes[name], spikes), name
    np.testing.assert_allclose(again.logits, ir.logits, atol=1e-9)


def test_export_of_a_residual_checkpoint_names_the_importers_that_run_it(zoo_checkpoint, tmp_path) -> None:
    """``export --format nir`` of a residual checkpoint prints one line saying which importers
    run its sums batched (measured in test_foreign_snntorch.py and test_foreign_norse.py)."""
    res = invoke("export", zoo_checkpoint("resnet20", "lmh"), "--format", "nir", "-o", tmp_path / "r.nir")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert text.count("residual sums") == 1
    assert (
        "9 residual sums (converging NIR edges): run batched by snnTorch's import_from_nir, "
        "norse's from_nir and lmh-deploy" in text
    )
    # and how to load it in norse, whose from_nir steps with dt 1e-3 unless told: an outside
    # check's ResNet-20 export agreed with its checkpoint on 4 % of 300 digits without dt=
    path = tmp_path / "r.nir"
    assert (
        f"dt = 0.0001 s (metadata['dt']; snnTorch's import_from_nir assumes 1e-4); in norse: "
        f"norse.torch.from_nir(nir.read('{path}'), dt=0.0001) (its default dt, 1e-3, runs another "
        f"network)" in text
    )


def test_order_node_with_weights_is_refused(tmp_path) -> None:
    """A node named in ``metadata["lmh_order_nodes"]`` must be all zero (the import drops it):
    one whose weights were changed is refused in one line naming it."""
    from lmh_deploy.models.architectures import resnet20

    torch.manual_seed(0)
    graph = export_model(
        resnet20((1, 8, 8), 10, neuron="lif", width_mult=0.25, timesteps=2),
        input_shape=(1, 8, 8),
        timesteps=2,
    )
    g = graph_to_nir(graph)
    name = sorted(g.metadata["lmh_order_nodes"])[0]
    assert nir_to_graph(g).of_kind("lmh") == graph.of_kind("lmh")
    g.nodes[name].weight[...] = 1.0
    with pytest.raises(InteropError, match=rf"^NIR metadata lmh_order_nodes names '{name}', which is not"):
        nir_to_graph(g)


# --------------------------------------------------------------------------- import
def hand_made_conv_graph(
    seed: int = 0, *, dt: float | None = 1e-4, channels: int = 4, weights: dict | None = None
) -> nir.NIRGraph:
    """Input (1, 8, 8) -> Conv2d -> LIF -> SumPool2d -> Flatten -> Affine -> CubaLIF ->
    Affine -> Output, written with the nir package (per-neuron thresholds included)."""
    rng = np.random.default_rng(seed)
    w = weights or {
        "conv": rng.normal(0, 0.8, (channels, 1, 3, 3)),
        "conv_b": rng.normal(0.1, 0.1, channels),
        "fc": rng.normal(0, 0.3, (20, channels * 16)),
        "fc_b": rng.normal(0, 0.1, 20),
        "out": rng.normal(0, 1, (10, 20)),
        "out_b": np.zeros(10),
    }
    c, step = channels, dt or 1e-4
    hid = w["fc"].shape[0]
    tau = step / (1 - 0.8)
    shape = (c, 8, 8)
    tau_syn, tau_mem = step / (1 - 0.3), step / (1 - 0.9)
    nodes = [
        nir.Input(input_type=np.array([1, 8, 8])),
        nir.Conv2d(
            input_shape=(8, 8), weight=w["conv"], stride=1, padding=1, dilation=1, groups=1, bias=w["conv_b"]
        ),
        unit_lif(shape, tau, step),
        nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        nir.Flatten(input_type={"input": np.array([c, 4, 4])}, start_dim=0, end_dim=-1),
        nir.Affine(weight=w["fc"], bias=w["fc_b"]),
        nir.CubaLIF(
            tau_syn=np.full(hid, tau_syn),
            tau_mem=np.full(hid, tau_mem),
            r=np.full(hid, 1.2 * tau_mem / step),
            v_leak=np.zeros(hid),
            v_threshold=rng.uniform(0.5, 1.0, hid),
            v_reset=np.zeros(hid),
            w_in=np.full(hid, tau_syn / step),
        ),
        nir.Affine(weight=w["out"], bias=w["out_b"]),
        nir.Output(output_type=np.array([10])),
    ]
    g = nir.NIRGraph.from_list(*nodes)
    if dt:
        g.metadata["dt"] = dt
    return g


def test_hand_made_conv_graph_imports_with_nir_semantics() -> None:
    g = hand_made_conv_graph()
    ir = nir_to_graph(g, timesteps=T)
    assert [ir.node(n).kind for n in ir.order()] == [
        "input",
        "conv2d",
        "lmh",
        "conv2d",
        "dense",
        "lmh",
        "dense",
        "readout",
    ]
    for name in ("lmh0", "lmh1"):
        assert ir.node(name).rules() == NIR_RULES
    np.testing.assert_allclose(ir.node("lmh1").mu_d, [[0.3]], atol=1e-12)
    x = load_dataset("digits")[1].tensors[0][:40].numpy()
    ref = run_nir_reference(g, x, T, 1e-4, source_neurons=ir.meta["source_neurons"])
    ours = simulate_float(ir, x, T)
    for name in ("lmh0", "lmh1"):
        np.testing.assert_array_equal(ours.spikes[name], ref.spikes[name])
        assert 0.05 < ours.spikes[name].mean() < 0.95
    np.testing.assert_allclose(ours.logits, ref.logits, rtol=1e-9, atol=1e-12)


def _with_flatten(g: nir.NIRGraph, flatten: nir.Flatten) -> nir.NIRGraph:
    """``g`` (:func:`hand_made_conv_graph`) with its Flatten node replaced."""
    nodes = {k: (flatten if isinstance(v, nir.Flatten) else v) for k, v in g.nodes.items()}
    return nir.NIRGraph(nodes, g.edges, metadata=g.metadata, type_check=False)


@pytest.mark.parametrize(
    ("typed", "start_dim", "end_dim"),
    [
        ((4, 4, 4), 0, -1),  # one sample, counted from its first dim (earlier exports)
        ((4, 4, 4), 0, 2),
        ((4, 4, 4), -3, -1),  # counted from the end (what our export writes)
        ((1, 4, 4, 4), 1, -1),  # typed with a batch dimension of 1: the sample after it
        ((1, 4, 4, 4), 0, -1),
        (None, -3, -1),  # untyped (sinabs's to_nir)
    ],
)
def test_flatten_dims_forms_import_as_a_full_flatten(typed, start_dim, end_dim) -> None:
    """Every form of a whole-sample Flatten imports as the same network, and the NIR
    reference executor (which reads the dims itself) runs the graph as it was written."""
    base = hand_made_conv_graph()
    ir_base = nir_to_graph(base, timesteps=T)
    g = _with_flatten(base, nir.Flatten(input_type=typed, start_dim=start_dim, end_dim=end_dim))
    ir = nir_to_graph(g, timesteps=T)
    x = load_dataset("digits")[1].tensors[0][:8].numpy()
    ours, ref = simulate_float(ir, x, T), simulate_float(ir_base, x, T)
    nir_run = run_nir_reference(g, x, T, 1e-4, source_neurons=ir.meta["source_neurons"])
    for name in ("lmh0", "lmh1"):
        assert 0.05 < ref.spikes[name].mean() < 0.95
        np.testing.assert_array_equal(ours.spikes[name], ref.spikes[name])
        np.testing.assert_array_equal(nir_run.spikes[name], ref.spikes[name])


def test_flatten_that_changes_nothing_is_kept_as_a_map() -> None:
    """A Flatten of one dim (start_dim == end_dim) between the Conv2d and its LIF keeps the
    map: the graph imports as the one without it."""
    base = hand_made_conv_graph()
    nodes = dict(base.nodes)
    nodes["noop"] = nir.Flatten(input_type=np.array([4, 8, 8]), start_dim=1, end_dim=1)
    edges = [e for e in base.edges if e != ("conv2d", "lif")] + [("conv2d", "noop"), ("noop", "lif")]
    assert len(edges) == len(base.edges) + 1
    ir = nir_to_graph(nir.NIRGraph(nodes, edges, metadata=base.metadata, type_check=False), timesteps=T)
    ir_base = nir_to_graph(base, timesteps=T)
    assert [ir.node(n).kind for n in ir.order()] == [ir_base.node(n).kind for n in ir_base.order()]
    x = load_dataset("digits")[1].tensors[0][:8].numpy()
    np.testing.assert_array_equal(simulate_float(ir, x, T).logits, simulate_float(ir_base, x, T).logits)


@pytest.mark.parametrize(
    ("typed", "start_dim", "end_dim", "message"),
    [
        ((4, 4, 4), 1, -1, r"start_dim=1, end_dim=-1 on input type \[4, 4, 4\] flattens it to \[4, 16\]"),
        ((4, 4, 4), -2, -1, r"start_dim=-2, end_dim=-1 on input type \[4, 4, 4\] flattens it to \[4, 16\]"),
        ((4, 4, 4), 0, 1, r"start_dim=0, end_dim=1 on input type \[4, 4, 4\] flattens it to \[16, 4\]"),
        (
            (1, 4, 4, 4),
            2,
            -1,
            r"start_dim=2, end_dim=-1 on input type \[1, 4, 4, 4\] flattens it to \[4, 16\]",
        ),
        ((4, 4, 4), 0, 3, r"start_dim=0, end_dim=3 are outside input type \[4, 4, 4\]"),
        ((4, 16), 0, -1, r"input type \[4, 16\] does not match the \[4, 4, 4\] arriving"),
    ],
)
def test_partial_flatten_is_refused_in_one_line(tmp_path, typed, start_dim, end_dim, message) -> None:
    """A partial flatten (NIR's default start_dim = 1 on a (C, H, W) sample among them) is not
    read as a full one: one line naming the node, its dims, its input type, what is supported."""
    g = _with_flatten(
        hand_made_conv_graph(), nir.Flatten(input_type=typed, start_dim=start_dim, end_dim=end_dim)
    )
    with pytest.raises(InteropError, match=r"^NIR node 'flatten' \(Flatten\): " + message):
        nir_to_graph(g)
    if start_dim == 1:  # from the command line: exit 2, one line, nothing written
        nir.write(tmp_path / "partial.nir", g)
        res = invoke("compile", tmp_path / "partial.nir", "--dataset", "digits", "-o", tmp_path / "build")
        assert res.exit_code == 2, res.output
        line = "NIR node 'flatten' (Flatten): start_dim=1, end_dim=-1 on input type [4, 4, 4] flattens it to "
        assert (
            line + "[4, 16], a partial flatten the IR cannot hold; supported: a flatten of the whole sample "
            in res.output
        )
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert not (tmp_path / "build").exists()


def test_nir_cli_compile_verify_flat_input_and_dt(tmp_path) -> None:
    """A NIR file without dt and with a flat [64] input, compiled for the digits images."""
    rng = np.random.default_rng(3)
    tau = 1e-4 / (1 - 0.9)
    flat = nir.NIRGraph.from_list(
        nir.Input(input_type=np.array([64])),
        nir.Affine(weight=rng.normal(0, 0.5, (16, 64)), bias=rng.normal(0.2, 0.1, 16)),
        unit_lif(16, tau, 1e-4),
        nir.Affine(weight=rng.normal(0, 1, (10, 16)), bias=np.zeros(10)),
        nir.Output(output_type=np.array([10])),
    )
    nir.write(tmp_path / "flat.nir", flat)
    out = tmp_path / "build"
    res = invoke("compile", tmp_path / "flat.nir", "--dataset", "digits", "--timesteps", "4", "-o", out)
    assert res.exit_code == 0, res.output
    assert "assumed dt = 0.0001" in res.output
    report = json.loads((out / "compile_report.json").read_text())
    assert report["calibration"]["samples"] == 64
    res = invoke("run", out, "--samples", "20", "--json", tmp_path / "run.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run.json").read_text())["samples"] == 20
    verified(out, tmp_path / "v.json", samples=30, agreement=0.9, reference="source NIR graph")
    # a wrong dt leaves the network silent: said so in one warning
    res = invoke(
        "compile",
        tmp_path / "flat.nir",
        "--dataset",
        "digits",
        "--timesteps",
        "4",
        "--dt",
        "1e-7",
        "-o",
        tmp_path / "silent",
    )
    assert "(nearly) silent; check --dt" in res.output


def test_batch_dimension_input_output_types_import(tmp_path) -> None:
    """norse and rockpool type Input/Output with the batch: [1, 64] before an Affine of 64."""
    rng = np.random.default_rng(5)
    tau = 1e-3 / (1 - 0.9)
    nodes = {
        "input": nir.Input(input_type=np.array([1, 64])),
        "0": nir.Affine(weight=rng.normal(0, 0.5, (16, 64)), bias=rng.normal(0.2, 0.1, 16)),
        "1": unit_lif(16, tau, 1e-3),
        "2": nir.Affine(weight=rng.normal(0, 1, (10, 16)), bias=np.zeros(10)),
        "output": nir.Output(output_type=np.array([1, 10])),
    }
    edges = [("input", "0"), ("0", "1"), ("1", "2"), ("2", "output")]
    nir.write(tmp_path / "batched.nir", nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    with pytest.raises(ValueError, match="type"):
        nir.read(tmp_path / "batched.nir")  # nir's own type check refuses the batch dimension
    out = tmp_path / "build"
    args = ("--dataset", "digits", "--timesteps", 4, "--dt", "1e-3", "-o", out)
    res = invoke("compile", tmp_path / "batched.nir", *args)
    assert res.exit_code == 0, res.output
    assert "NIR time constants read with dt = 0.001 s (given); change it with --dt SECONDS" in res.output
    assert json.loads((out / "compile_report.json").read_text())["dt"] == {"seconds": 1e-3, "origin": "given"}
    verified(out, tmp_path / "v.json", samples=30, agreement=0.9, reference="source NIR graph")


def _time_typed_graph(input_type: list[int], edges_after: list[str]) -> nir.NIRGraph:
    """Input -> Affine(64 -> 16) -> LIF -> Affine(16 -> 10) -> Output, the Input typed as given;
    ``edges_after``: the nodes the Input feeds."""
    rng = np.random.default_rng(7)
    nodes = {
        "input": nir.Input(input_type=np.array(input_type)),
        "0": nir.Affine(weight=rng.normal(0, 0.5, (16, 64)), bias=rng.normal(0.2, 0.1, 16)),
        "1": unit_lif(16, 1e-3 / (1 - 0.9), 1e-3),
        "2": nir.Affine(weight=rng.normal(0, 1, (10, 16)), bias=np.zeros(10)),
        "output": nir.Output(output_type=np.array([10])),
    }
    edges = [("input", b) for b in edges_after] + [("0", "1"), ("1", "2"), ("2", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_time_typed_input_before_an_affine_reads_as_one_vector_a_step(digits) -> None:
    """sinabs's to_nir given a user's (1, T, 64) sample types the Input [T, 64]; the Affine
    after it takes 64: the same network as the file typed [64], with a warning naming the
    Input, its type and the export that types it [64]."""
    said: list[str] = []
    ir = nir_to_graph(_time_typed_graph([10, 64], ["0"]), dt=1e-3, warn=said.append)
    plain_ir = nir_to_graph(_time_typed_graph([64], ["0"]), dt=1e-3)
    assert ir.node("input").shape == (64,)
    assert said == [
        "NIR node 'input' (Input): typed [10, 64], read as one sample of 64 values a step (the "
        "Affine after it takes 64; a time axis of the exporter's sample, e.g. sinabs's to_nir "
        "given (1, T, n)); export with a (1, 1, 64) sample to type it [64]"
    ]
    x = digits[2][:20].numpy().reshape(20, 64)
    ref, same = simulate_float(ir, x, 4), simulate_float(plain_ir, x, 4)
    assert ref.spikes["lmh0"].mean() > 0.05
    np.testing.assert_array_equal(ref.logits, same.logits)
    own = run_nir_reference(
        _time_typed_graph([10, 64], ["0"]), x, 4, 1e-3, source_neurons=ir.meta["source_neurons"]
    )
    np.testing.assert_array_equal(own.spikes["lmh0"], ref.spikes["lmh0"])


def test_two_d_input_whose_rows_the_affine_does_not_take_is_not_read_as_time() -> None:
    """[8, 8] before an Affine of 64 stays the 64 pixels it was (no time axis, no warning)."""
    g = _time_typed_graph([8, 8], ["0"])
    said: list[str] = []
    assert nir_to_graph(g, dt=1e-3, warn=said.append).node("input").shape == (8, 8)
    assert not any("(Input)" in line for line in said)


def test_import_refusals_name_the_node() -> None:
    g = hand_made_conv_graph()
    with pytest.raises(InteropError, match=r"NIR node 'lif' \(LIF\): tau = .* < dt = 0.01"):
        nir_to_graph(g, dt=1e-2)
    li = nir.NIRGraph.from_list(
        nir.Input(input_type=np.array([3])),
        nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)),
        nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)),
        nir.Output(output_type=np.array([2])),
    )
    with pytest.raises(InteropError, match=r"'li' \(LI\): node type LI cannot be imported"):
        nir_to_graph(li, dt=1e-3)
    rec = hand_made_conv_graph()
    rec.edges.append(("cubalif", "affine"))
    with pytest.raises(InteropError, match="only feed-forward graphs import"):
        nir_to_graph(rec)


def test_snntorch_export_to_nir_imports_as_snntorch_ran_it() -> None:
    """snnTorch's own export of a zero-reset Leaky net (= NIR's reset rule) is reproduced."""
    import snntorch as snn
    from snntorch.export_nir import export_to_nir

    def leaky(n: int, **kw):  # per-neuron tensors: snnTorch 1.0's export needs them with nir 1.0
        return snn.Leaky(
            beta=torch.full((n,), 0.85),
            threshold=torch.ones(n),
            init_hidden=True,
            reset_mechanism="zero",
            **kw,
        )

    torch.manual_seed(2)
    net = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 24),
        leaky(24),
        torch.nn.Linear(24, 10),
        leaky(10, output=True),
    )
    with torch.no_grad():
        net[1].weight.mul_(3.0)
    g = export_to_nir(net, torch.zeros(1, 1, 8, 8), ignore_dims=[0])
    ir = nir_to_graph(g, timesteps=T)
    assert ir.meta["dt_origin"] == "assumed"
    x = torch.as_tensor(load_dataset("digits")[1].tensors[0][:40].numpy())
    for m in net.modules():
        if isinstance(m, snn.Leaky):
            m.reset_mem()
    with torch.no_grad():
        counts = sum(net(x)[0] for _ in range(T)).numpy() / T
    ours = simulate_float(ir, x.numpy(), T)
    np.testing.assert_allclose(ours.logits, counts, atol=1e-6)
    assert isinstance(ir.node("dense0"), Dense) and isinstance(ir.node("lmh0"), LMH)


@pytest.mark.slow
def test_trained_conv_net_written_by_hand_in_nir_deploys(tmp_path) -> None:
    """The issue's bar: a NIR graph with Conv2d, written with the nir package from a trained
    net's weights, compiles with one command; Lava == sim; agreement with the NIR graph."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from foreign.snntorch_style import leaky_convnet
    from foreign.training import train_digits

    torch.manual_seed(0)
    net = leaky_convnet(reset="zero", beta=0.8)  # zero reset: NIR's own rule
    assert train_digits(net, epochs=6) > 0.8
    conv, fc = net[0], net[4]
    dt, tau = 1e-4, 1e-4 / (1 - 0.8)
    shape = (6, 4, 4)
    g = nir.NIRGraph.from_list(
        nir.Input(input_type=np.array([1, 8, 8])),
        nir.Conv2d(
            input_shape=(8, 8),
            weight=conv.weight.detach().numpy().astype(np.float64),
            stride=1,
            padding=1,
            dilation=1,
            groups=1,
            bias=conv.bias.detach().numpy().astype(np.float64),
        ),
        nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        unit_lif(shape, tau, dt),
        nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1),
        nir.Affine(
            weight=fc.weight.detach().numpy().astype(np.float64),
            bias=fc.bias.detach().numpy().astype(np.float64),
        ),
        nir.Output(output_type=np.array([10])),
    )
    g.metadata["dt"] = dt
    nir.write(tmp_path / "conv.nir", g)
    out = tmp_path / "build"
    res = invoke("compile", tmp_path / "conv.nir", "--dataset", "digits", "--timesteps", "4", "-o", out)
    assert res.exit_code == 0, res.output
    verified(out, tmp_path / "v.json", samples=360, agreement=0.97, reference="source NIR graph")
