"""lava-dl netx HDF5 export (lmh_deploy.interop.netx_io), loaded and run by netx itself."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from lmh_deploy.models.architectures import mlp

import lmh_deploy  # noqa: F401  - Python 3.11 Lava import fix before any lava import
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.interop import InteropError
from lmh_deploy.interop.netx_io import (
    DECAY_ONE,
    VTH_MAX,
    graph_to_netx,
    netx_input,
    netx_reference,
    netx_usage,
    read_netx,
    run_netx_lava,
)
from lmh_deploy.semantics import integer as fx

T = 6


def _lif_graph(seed: int, *, decay: float = 0.75, theta: float = 1.0):
    torch.manual_seed(seed)
    model = mlp((10,), 4, neuron="lif", hidden=(12, 8), timesteps=T, lif_decay=decay, theta=theta)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(3.0)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.2)
    return export_model(model.eval(), input_shape=(10,), timesteps=T)


def test_netx_file_layout_and_mapping(tmp_path) -> None:
    graph = _lif_graph(1, decay=0.8, theta=1.5)
    path = tmp_path / "net.net"
    report = graph_to_netx(graph, path)
    with h5py.File(path, "r") as f:
        assert sorted(f["layer"].keys()) == ["0", "1", "2"]
        for i, n_out in enumerate((12, 8, 4)):
            g = f["layer"][str(i)]
            assert g["type"][0] == b"dense" and g["neuron"]["type"][0] == b"CUBA"
            assert list(g["shape"][()]) == [n_out]
            assert np.issubdtype(g["weight"].dtype, np.integer)
            assert set(g["neuron"].keys()) == {
                "type",
                "iDecay",
                "vDecay",
                "vThMant",
                "refDelay",
                "gradedSpike",
            }
    layers = read_netx(path)
    assert [layer.name for layer in layers] == ["lmh0", "lmh1", "readout"]
    for layer, entry, (lmh, dense) in zip(
        layers[:2], report["layers"][:2], (("lmh0", "dense0"), ("lmh1", "dense1"))
    ):
        node, w = graph.node(lmh), graph.node(dense).weight
        s = entry["scale"]
        amp = 1 / 255 if dense == "dense0" else 1.5  # graded 8-bit input, or spike amplitude theta
        assert layer.i_decay == DECAY_ONE  # u = this step's input (no current memory)
        assert layer.v_decay == round(DECAY_ONE * (1 - 0.8))
        assert abs(layer.v_th_mant - s * node.theta) <= 0.5
        assert np.max(np.abs(layer.weight - s * w * amp)) <= 0.5
        assert np.max(np.abs(layer.bias - s * node.bias)) <= 0.5
        assert np.abs(layer.weight).max() <= 254
        # Worst-case input of a row (presynaptic values >= 0): a_in << 6 must not wrap u (24 bit).
        worst = (255 if dense == "dense0" else 1) * max(
            np.clip(layer.weight, 0, None).sum(axis=1).max(),
            np.clip(-layer.weight, 0, None).sum(axis=1).max(),
        )
        assert worst << 6 < 2**23
    readout = layers[2]
    assert (readout.i_decay, readout.v_decay, readout.v_th_mant) == (DECAY_ONE, 0, VTH_MAX)
    s = report["readout_scale"]
    assert np.max(np.abs(readout.weight - s * graph.node("dense2").weight * 1.5)) <= 0.5
    worst = max(
        np.clip(readout.weight, 0, None).sum(axis=1).max(),
        np.clip(-readout.weight, 0, None).sum(axis=1).max(),
    )
    assert report["readout_steps"] * (worst + np.abs(readout.bias).max()) < VTH_MAX


def test_netx_network_loads_and_runs_in_lava(tmp_path) -> None:
    graph = _lif_graph(2)
    path = tmp_path / "net.net"
    report = graph_to_netx(graph, path)
    written = read_netx(path)
    x = np.random.default_rng(3).uniform(0, 1, (1, 10))
    steps = report["readout_steps"]
    frames = np.repeat(netx_input(graph, x), steps, axis=0)  # direct encoding: same frame each step
    assert frames.shape == (steps, 10) and frames.max() <= fx.INPUT_MAX

    lava = run_netx_lava(path, frames)
    assert [s.shape for s in lava.spikes] == [(steps, 12), (steps, 8), (steps, 4)]
    # What netx loaded equals what was written (netx rescales by 2**-weight_exp; Lava then
    # clips and truncates on the first step: the effective weights must still be ours).
    for w_loaded, exp, layer in zip(lava.extra["weights"], lava.extra["weight_exp"], written):
        np.testing.assert_array_equal(w_loaded * 2.0**exp, layer.weight)
    # Lava's run is exactly the documented CUBA update (the NumPy reference).
    ref = netx_reference(path, frames)
    for i in range(3):
        np.testing.assert_array_equal(lava.spikes[i], ref.spikes[i], err_msg=f"layer {i} spikes")
        np.testing.assert_array_equal(lava.v[i], ref.v[i], err_msg=f"layer {i} v")
        np.testing.assert_array_equal(lava.u[i], ref.u[i], err_msg=f"layer {i} u")
    rate = [s.mean() for s in lava.spikes]
    assert 0 < rate[0] < 1 and 0 < rate[1] < 1, f"degenerate network, rates {rate}"
    assert not lava.spikes[2].any()  # the readout integrates, it never fires
    assert np.abs(lava.v[2]).max() > 0


def test_printed_netx_lines_load_and_run_the_file(tmp_path) -> None:
    """The lines `export --format netx` prints run as written and give the reference's logits."""
    graph = _lif_graph(4)
    path = tmp_path / "net.net"
    report = graph_to_netx(graph, path)
    code = netx_usage(path, report)
    assert "input_message_bits=8" in code
    x = np.random.default_rng(5).uniform(0, 1, 10)
    scope = {"x": x}
    exec(code, scope)
    frames = np.repeat(netx_input(graph, x[None]), report["readout_steps"], axis=0)
    ref = netx_reference(path, frames)
    np.testing.assert_array_equal(scope["logits"], ref.v[-1] / (64 * report["readout_scale"]))
    assert np.abs(scope["logits"]).max() > 0


def test_netx_refuses_non_lif_layers() -> None:
    torch.manual_seed(4)
    model = mlp((10,), 4, hidden=(12, 8), timesteps=T, factors="progressive")
    for neuron in model.neurons():
        neuron.set_factors(mu_d=0.2, mu_s=0.0, lam_d=1.0, lam_s=0.9)
    graph = export_model(model.eval(), input_shape=(10,), timesteps=T)
    with pytest.raises(
        InteropError,
        match=r"mu_d != 0 in lmh0 \(0\.2\), lmh1 \(0\.2\): netx's CUBA current keeps no memory\. "
        r"Fix: train with --neuron lif",
    ):
        graph_to_netx(graph, "/nonexistent/never-written.net")
    for neuron in model.neurons():
        neuron.set_factors(mu_d=0.0, lam_s=1.2)
    graph = export_model(model.eval(), input_shape=(10,), timesteps=T)
    with pytest.raises(InteropError, match=r"lam_s > 1 in lmh0 \(1\.2\), lmh1 \(1\.2\): a growing soma"):
        graph_to_netx(graph, "/nonexistent/never-written.net")


def test_netx_refuses_non_dense_graphs() -> None:
    from lmh_deploy.ir import LMH, AvgPool, Dense, Graph, Input, Readout

    g = Graph(meta={"timesteps": 3})
    g.add("input", Input(shape=(1, 4, 4)))
    g.add("pool0", AvgPool(input_shape=(1, 4, 4), kernel=(2, 2), stride=(2, 2)), ("input",))
    g.add(
        "lmh0",
        LMH(
            size=4,
            theta=1.0,
            mu_d=np.zeros((1, 1)),
            mu_s=np.zeros((1, 1)),
            lam_d=np.ones((1, 1)),
            lam_s=np.full((1, 1), 0.9),
            bias=np.zeros(4),
        ),
        ("pool0",),
    )
    g.add("dense0", Dense(weight=np.ones((2, 4))), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(2)), ("dense0",))
    with pytest.raises(
        InteropError,
        match=r"pool0: avgpool layers are not supported by the netx "
        r"export",
    ):
        graph_to_netx(g, "/nonexistent/never-written.net")
