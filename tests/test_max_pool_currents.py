"""MaxPool2d over currents (``Conv2d -> BatchNorm2d -> MaxPool2d -> neuron``), the Lava side:
Lava fixed_pt equals sim/ bit for bit with pooled currents (a network, a pooled residual branch,
the hierarchical ``LMHNetwork`` Process), floating_pt equals the float reference; the paper's
and snnTorch's nets deploy (slow). The tests that need no Lava (golden vectors, torch's
windows, float IR == module, sim == its reference, the refusals) are in
tests/test_max_pool_currents_lava_free.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.frontends.torch_fx import module_to_graph
from lmh_deploy.ir.serialize import load_graph, save_graph
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.sim import simulate

from foreign import snntorch_tutorials as tut
from foreign.training import train_digits
from shared import DIGITS_MODEL, deploy_source, invoke, paper_clone
from test_max_pool_currents_lava_free import EDGE_POOLS, conv_bn_pool_net


@pytest.fixture(scope="module")
def inputs(digits) -> np.ndarray:
    return digits[2][:24].numpy() * 2.0


def test_lava_equals_sim_with_pooled_currents(inputs, tmp_path) -> None:
    """Lava fixed_pt == sim bit for bit (every layer, every step, the logits) with a padded,
    strided, ceil-mode pool; floating_pt == the float reference's spikes; the pool Process adds
    no step. The integer graph reads back from disk unchanged."""
    model = conv_bn_pool_net(EDGE_POOLS[1], seed=5).double()
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=4)
    q, _ = quantize_graph(graph)
    save_graph(q, tmp_path, "q")
    q = load_graph(tmp_path, "q")
    x_int = q.node("input").quantize(inputs[:5])
    sim = simulate(q, x_int, 4)
    lava = run_lava(q, x_int, 4)
    for name in sim.spikes:
        assert sim.spikes[name].any(), name
        assert np.array_equal(lava.spikes[name], sim.spikes[name]), name
        for lava_v, sim_v in zip(lava.final_state[name], sim.final_state[name]):  # the last sample's
            assert np.array_equal(lava_v, sim_v[-1:]), name
    assert np.array_equal(lava.logits, sim.logits)
    ref = simulate_float(graph, inputs[:5], 4)
    floating = run_lava(graph, inputs[:5] / graph.node("input").unit, 4, "floating_pt")
    for name in ref.spikes:
        assert np.array_equal(floating.spikes[name], ref.spikes[name]), name


@pytest.mark.slow
def test_paper_style_conv_bn_maxpool_net_deploys_and_loihi2_refuses_it(tmp_path: Path) -> None:
    """The paper's VGG-style block before ``replace_maxpool2d_by_avgpool2d`` (``Conv2d ->
    BatchNorm2d -> MaxPool2d -> LearnableNeuron``), trained briefly: one compile, verified at
    >= 95 % agreement with Lava == sim; ``--target loihi2`` refuses it in one line."""
    torch.manual_seed(0)
    model = paper_clone("cnn")
    assert train_digits(model, epochs=6) > 0.85
    deploy_source(model, f"{DIGITS_MODEL}:cnn", tmp_path)
    res = invoke(
        "compile", tmp_path / "source.pt", "--model", f"{DIGITS_MODEL}:cnn", "--input-shape", "1,8,8",
        "--timesteps", 4, "--dataset", "digits", "--target", "loihi2", "-o", tmp_path / "loihi2",
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and "maxpool0 (source layer 2): a MaxPool2d over currents" in line, line
    assert "AvgPool2d" in line and not (tmp_path / "loihi2").exists()


@pytest.mark.slow
def test_snntorch_tutorial_conv_bn_maxpool_over_currents_deploys(tmp_path: Path, digits) -> None:
    """snnTorch tutorial 6's own order with a BatchNorm2d (``Conv2d -> BatchNorm2d ->
    MaxPool2d -> Leaky(init_hidden=True)``), trained as the tutorial trains: one compile,
    verified at >= 95 % agreement on 50 samples with Lava == sim."""
    torch.manual_seed(0)
    model = tut.conv_net(pool_spikes=False, norm=True)
    tut.train_conv_net(model, digits[0], digits[1], epochs=6)
    with torch.no_grad():
        assert (
            float((tut.forward_pass(model, digits[2])[0].sum(0).argmax(1) == digits[3]).float().mean()) > 0.9
        )
    spec = f"{Path(tut.__file__)}:conv_net"
    deploy_source(model, spec, tmp_path, timesteps=tut.NUM_STEPS, kwargs={"pool_spikes": False, "norm": True})


class PooledResidual(nn.Module):
    """``n1(maxpool(bn(conv(s))) + shortcut(s))``: a pooled branch summed with a strided 1x1
    shortcut in one neuron (two synapse paths, one of them max-pooled)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0, self.n0 = nn.Conv2d(1, 4, 3, padding=1), paper_clone("LearnableNeuron")
        self.conv1, self.bn1, self.pool = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.MaxPool2d(2)
        self.shortcut, self.n1 = nn.Conv2d(4, 4, 1, stride=2), paper_clone("LearnableNeuron")
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        s = self.n0(self.conv0(x))
        return self.fc(self.n1(self.pool(self.bn1(self.conv1(s))) + self.shortcut(s)).flatten(1))


def test_residual_sum_with_a_pooled_branch(inputs) -> None:
    torch.manual_seed(0)
    model = PooledResidual().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(2.5)
    model = model.double()
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=4)
    assert graph.inputs_of("lmh1") == ["maxpool0", "conv2"]
    src = run_source(model, inputs, 4, source_neurons=graph.meta["source_neurons"])
    ref = simulate_float(graph, inputs, 4)
    for name, spikes in ref.spikes.items():
        assert 0.05 < spikes.mean() < 0.95, name
        assert np.array_equal(src.spikes[name], spikes), name
    q, _ = quantize_graph(graph)
    x_int = q.node("input").quantize(inputs[:4])
    sim, lava = simulate(q, x_int, 4), run_lava(q, x_int, 4)
    for name in sim.spikes:
        assert np.array_equal(lava.spikes[name], sim.spikes[name]), name
    assert np.array_equal(lava.logits, sim.logits)


def test_lava_block_with_pooled_currents_equals_sim(inputs) -> None:
    """The compiled network as one hierarchical Lava Process (``LMHNetwork``, its pools among
    its sub-Processes), fed by a Lava source as a user's program feeds it: logits == sim."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    from lmh_deploy.backends.lava.network import LMHNetwork

    graph = module_to_graph(conv_bn_pool_net(EDGE_POOLS[1], seed=5), input_shape=(1, 8, 8), timesteps=4)
    q, _ = quantize_graph(graph)
    x_int = q.node("input").quantize(inputs[:3]).reshape(3, -1)
    n, t = x_int.shape[0], 4
    net = LMHNetwork(graph=q, timesteps=t)
    assert set(net.layers.pools) == {"maxpool0", "maxpool1"}
    steps = n * t + net.out_delay
    stream = np.zeros((x_int.shape[1], steps))
    stream[:, : n * t] = np.repeat(x_int.T, t, axis=1)  # each sample's frame for T steps
    source, sink = Source(data=stream), Sink(shape=net.out.shape, buffer=steps)
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    try:
        source.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        trace = sink.data.get()
    finally:
        source.stop()
    assert np.array_equal(net.logits(trace, n), simulate(q, x_int.reshape(n, 1, 8, 8), t).logits)
