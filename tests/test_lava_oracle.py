"""Intel's own code as the oracle: a loihi-lif network run on Lava's LIF + Dense processes
(PyLifModelBitAcc, no lmh-deploy arithmetic) equals sim/ in spikes, u and v at every step."""

from __future__ import annotations

import numpy as np
import torch
from lmh_deploy.models.architectures import mlp
from lmh_deploy.sim import simulate

from lmh_deploy.backends.lava.lava_lif import run_lava_lif
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.ir import Graph
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from shared import QLIF_RULES, integer_chain


def _assert_oracle_equal(g: Graph, x: np.ndarray, steps: int) -> dict[str, int]:
    """sim/ == Lava's own LIF network, every step; returns how much was compared."""
    ref = simulate(g, x, steps, record_states=True)
    lava = run_lava_lif(g, x, steps)
    compared = {"samples": x.shape[0], "spikes": 0, "spike_events": 0}
    for name in ref.spikes:
        np.testing.assert_array_equal(lava.spikes[name], ref.spikes[name], err_msg=name)
        np.testing.assert_array_equal(lava.u[name], ref.state_trace[name][0], err_msg=f"{name} u")
        np.testing.assert_array_equal(lava.v[name], ref.state_trace[name][1], err_msg=f"{name} v")
        compared["spikes"] += ref.spikes[name].size
        compared["spike_events"] += int(ref.spikes[name].sum())
    np.testing.assert_array_equal(lava.readout_trace, ref.readout_trace)
    np.testing.assert_array_equal(lava.logits, ref.logits)
    return compared


def test_hand_graph_with_wrap_clip_and_soma_bias_equals_lavas_own_lif() -> None:
    """Current decay, voltage decay, 13-bit biases with exponents, u wrapping and v clipping."""
    rng = np.random.default_rng(7)
    layers = [
        dict(theta=100_000 << 6, mu_d=np.full((1, 1), 3000), lam_s=np.full((1, 1), 3900), weight_exp=2),
        dict(theta=900 << 6, mu_d=np.full((1, 1), 2000), lam_s=np.full((1, 1), 3500), weight_exp=3),
    ]
    layers[0]["bias"] = rng.integers(-4096, 4096, 7) << 3
    layers[1]["bias"] = rng.integers(-4096, 4096, 7)
    g = integer_chain(rng, [{**layer, **QLIF_RULES} for layer in layers])
    x = rng.integers(0, 256, (3, 6))
    ref = simulate(g, x, 6, record_states=True)
    assert ref.saturation["lmh0"] > 0  # u wraps / v clips on this input: exercised, and equal
    assert all(0 < ref.spikes[n].mean() < 1 for n in ref.spikes)
    _assert_oracle_equal(g, x, 6)


def test_compiled_lif_model_equals_lavas_own_lif_network() -> None:
    """A LIF MLP (the neuron ``train --neuron lif`` trains) compiled with --profile loihi-lif."""
    torch.manual_seed(4)
    model = mlp((16,), 5, neuron="lif", hidden=(20, 12), timesteps=8, lif_decay=0.8)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(2.5)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.2)
    graph = export_model(model.eval(), input_shape=(16,), timesteps=8)
    q, report = quantize_graph(graph, "loihi-lif")
    assert report["profile"]["name"] == "loihi-lif"
    x = np.random.default_rng(6).uniform(0, 1, (6, 16))
    x_int = fx.quantize_input(x, q.node("input").scale)
    ref = simulate(q, x_int, 8)
    assert all(0.02 < ref.spikes[n].mean() < 0.9 for n in ref.spikes)
    assert np.any(q.node("lmh0").bias != 0)
    compared = _assert_oracle_equal(q, x_int, 8)
    assert compared["spikes"] == 8 * 6 * (20 + 12)
