"""Convolutional and residual networks: exact export, and Lava fixed_pt == sim/ bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from lmh_deploy.semantics import integer as fx
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.ir import AvgPool, Conv2d
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.backends.float.torch_model import run_float
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.ir.synapses import MANT_DTYPE, conv_matrix, pool_matrix
from lmh_deploy.models.architectures import build
from lmh_deploy.sim import simulate
from lmh_deploy.backends.float.ir import simulate_float


def _randomised(arch: str, seed: int, **kw) -> torch.nn.Module:
    """A net with non-trivial BN statistics and LM-H factors (negative mu, lam > 1)."""
    torch.manual_seed(seed)
    model = build(arch, (1, 8, 8), 10, timesteps=4, width_mult=0.25, **kw)
    for mod in model.modules():
        if hasattr(mod, "running_mean"):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.3)
    for i, neuron in enumerate(model.neurons()):
        neuron.set_factors(mu_d=-0.3 + 0.01 * i, mu_s=0.15, lam_d=1.25, lam_s=0.85)
    return model.eval()


@pytest.mark.parametrize("stride, padding", [((1, 1), (1, 1)), ((2, 2), (1, 1)), ((2, 1), (0, 2))])
def test_conv_matrix_equals_torch(stride, padding) -> None:
    rng = np.random.default_rng(0)
    w, x = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=(2, 7, 6))
    node = Conv2d(weight=w, input_shape=(2, 7, 6), stride=stride, padding=padding)
    ref = torch.nn.functional.conv2d(torch.tensor(x)[None], torch.tensor(w), stride=stride, padding=padding)[
        0
    ].numpy()
    assert node.output_shape == ref.shape
    np.testing.assert_allclose(conv_matrix(node) @ x.ravel(), ref.ravel(), atol=1e-12)


def test_pool_matrix_equals_torch() -> None:
    x = np.random.default_rng(1).normal(size=(2, 7, 6))
    node = AvgPool(input_shape=(2, 7, 6), kernel=(2, 2), stride=(2, 2))
    ref = torch.nn.functional.avg_pool2d(torch.tensor(x)[None], 2)[0].numpy()
    np.testing.assert_allclose(pool_matrix(node) @ x.ravel(), ref.ravel(), atol=1e-12)


@pytest.mark.parametrize(
    "arch, kw",
    [
        ("cnn", {"norm": "bn"}),
        ("cnn", {"norm": "tdbn"}),
        ("resnet20", {"norm": "bn"}),
        ("mlp", {"norm": "bn"}),
    ],
)
def test_export_with_folded_norm_equals_unfolded_model(arch: str, kw: dict) -> None:
    """float64 IR simulation (BN folded) reproduces every spike of the PyTorch model (BN unfolded)."""
    model = _randomised(arch, 3, **kw).double()
    graph = export_model(model, input_shape=(1, 8, 8), timesteps=4)
    x = np.random.default_rng(3).random((5, 1, 8, 8))
    ref = run_float(model, x, 4)
    got = simulate_float(graph, x, 4)
    assert set(got.spikes) == set(ref.spikes)
    for name in ref.spikes:
        assert np.array_equal(got.spikes[name], ref.spikes[name]), name
    np.testing.assert_allclose(got.logits, ref.logits, atol=1e-9)
    assert sum(int(s.sum()) for s in got.spikes.values()) > 0


@pytest.mark.parametrize("arch", ["cnn", "resnet20"])
def test_lava_equals_sim_on_conv_and_residual_nets(arch: str) -> None:
    model = _randomised(arch, 5)
    graph = export_model(model, input_shape=(1, 8, 8), timesteps=4)
    q, report = quantize_graph(graph)
    if arch == "resnet20":  # identity shortcuts arrive one step early without balancing
        delays = [layer["delay"] for layer in report["layers"] if layer["kind"] == "dense"]
        assert max(delays) == 1 and delays.count(1) >= 3
        # avgpool -> fc composes to a full matrix: held dense in the compact dtype, not as CSR
        classifier = q.node("dense0").weight_mant
        assert not sp.issparse(classifier) and classifier.dtype == MANT_DTYPE
    x = fx.quantize_input(np.random.default_rng(5).random((5, 1, 8, 8)), q.node("input").scale)
    want = simulate(q, x, 4)
    got = run_lava(q, x, 4, "fixed_pt")
    assert sum(int(s.sum()) for s in want.spikes.values()) > 100
    for name in want.spikes:
        assert np.array_equal(got.spikes[name], want.spikes[name]), name
        assert np.array_equal(got.final_state[name][0][0], want.final_state[name][0][-1]), name
        assert np.array_equal(got.final_state[name][1][0], want.final_state[name][1][-1]), name
    assert np.array_equal(got.readout_trace, want.readout_trace)
    assert got.synops == want.synops


def test_unbalanced_shortcut_would_differ() -> None:
    """The shortcut delay matters: without it the residual net computes something else."""

    model = _randomised("resnet20", 6)
    q, _ = quantize_graph(export_model(model, input_shape=(1, 8, 8), timesteps=4))
    x = fx.quantize_input(np.random.default_rng(6).random((2, 1, 8, 8)), q.node("input").scale)
    want = simulate(q, x, 4)
    broken = q.copy()
    for name in broken.of_kind("q_dense"):
        node = broken.node(name)
        if node.delay:
            broken.replace(name, delay=0)
    got = run_lava(broken, x, 4, "fixed_pt")
    assert any(not np.array_equal(got.spikes[n], want.spikes[n]) for n in want.spikes)
