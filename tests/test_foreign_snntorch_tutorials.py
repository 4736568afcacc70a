"""snnTorch nets written as its tutorials write them, deployed with one ``lmh-deploy compile``.

Tutorial 5 style: the module loops over ``num_steps`` in its own ``forward`` (``init_leaky()``,
stacked spike/membrane records); the frontend finds the loop and deploys one step of it
(:mod:`lmh_deploy.frontends.time_loop`). ``verify`` runs the module itself, once per sample
batch, and compares its records with the deployed network's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.frontends.neurons import NeuronError
from lmh_deploy.frontends.torch_fx import FrontendError, module_to_graph
from lmh_deploy.ir import IRError
from lmh_deploy.backends.float.torch_source import run_source

from foreign import snntorch_tutorials as tut
from shared import deploy_source

MODEL_FILE = Path(__file__).parent / "foreign" / "snntorch_tutorials.py"


@pytest.fixture(scope="module")
def flat(digits):
    """The digits as vectors of 64 pixels (tutorial 5's input)."""
    return digits[0].flatten(1), digits[1], digits[2].flatten(1), digits[3]


@pytest.mark.parametrize("cls", [tut.Tutorial5Net, tut.SynapticLoopNet])
def test_loop_in_forward_float_ir_equals_the_module(cls, flat) -> None:
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
    graph = module_to_graph(model, input_shape=(64,), timesteps=tut.NUM_STEPS)
    assert graph.meta["source_time_loop"] == tut.NUM_STEPS
    assert graph.meta["source_output_index"] == 0
    x = flat[2][:80].numpy()
    src = run_source(
        model,
        x,
        tut.NUM_STEPS,
        source_neurons=graph.meta["source_neurons"],
        output_index=0,
        time_loop=tut.NUM_STEPS,
    )
    ref = simulate_float(graph, x, tut.NUM_STEPS)
    assert set(ref.spikes) == {"lmh0", "lmh1"}
    for name, spikes in ref.spikes.items():
        assert 0.02 < spikes.mean() < 0.95, name
        assert np.array_equal(src.spikes[name], spikes), name
    np.testing.assert_allclose(src.logits, ref.logits, atol=1e-6)


def test_loop_step_count_must_match_timesteps() -> None:
    match = r"loops over 4 time steps itself; compile it with --timesteps 4$"
    with pytest.raises(FrontendError, match=match):
        module_to_graph(tut.Tutorial5Net(), input_shape=(64,), timesteps=6)


def test_recurrent_leaky_refused_by_name() -> None:
    match = r"^lif1 \(RLeaky\): snn.RLeaky cannot be deployed: recurrent"
    with pytest.raises(NeuronError, match=match) as info:
        module_to_graph(tut.RecurrentNet(), input_shape=(64,), timesteps=tut.NUM_STEPS)
    assert "\n" not in str(info.value)


def test_conv_net_given_a_flat_input_shape_says_so() -> None:
    """`--input-shape 64` for the conv net (as for the tutorial-5 MLP) names the first Conv2d,
    the shape it got and the C,H,W form to give, not a list of Conv2d options."""
    match = r"^0 \(Conv2d\): Conv2d needs a \(C, H, W\) input, got shape \(64,\); give --input-shape as C,H,W"
    with pytest.raises(IRError, match=match) as info:
        module_to_graph(tut.conv_net(), input_shape=(64,), timesteps=tut.NUM_STEPS)
    assert "\n" not in str(info.value)
    flat_first = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Conv2d(1, 4, 3))
    with pytest.raises(IRError, match=r"^1 \(Conv2d\): .* got shape \(64,\); a Conv2d after a Flatten"):
        module_to_graph(flat_first, input_shape=(1, 8, 8), timesteps=tut.NUM_STEPS)


@pytest.mark.slow
def test_tutorial5_net_one_command(tmp_path: Path, flat) -> None:
    torch.manual_seed(0)
    model = tut.Tutorial5Net()
    tut.train_loop_net(model, flat[0], flat[1], epochs=3)
    assert tut.loop_net_accuracy(model, flat[2], flat[3]) > 0.85
    deploy_source(model, f"{MODEL_FILE}:Tutorial5Net", tmp_path, input_shape="64", timesteps=tut.NUM_STEPS)


def _graph_of_scaled(model: torch.nn.Module):
    """The float IR of ``model`` with its weights tripled (every layer spikes at init)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(3.0)
    return module_to_graph(model, input_shape=(1, 8, 8), timesteps=tut.NUM_STEPS)


def _assert_net_equals_float_ir(model: torch.nn.Module, graph, digits) -> None:
    """Every layer's spikes, every step, and the logits of snnTorch's run equal the float IR's."""
    x = digits[2][:60].numpy() * 2.0
    src = run_source(model, x, tut.NUM_STEPS, source_neurons=graph.meta["source_neurons"], output_index=0)
    ref = simulate_float(graph, x, tut.NUM_STEPS)
    for name, spikes in ref.spikes.items():
        assert 0.02 < spikes.mean() < 0.95, name
        assert np.array_equal(src.spikes[name], spikes), name
    np.testing.assert_allclose(src.logits, ref.logits, atol=1e-6)


def test_maxpool_over_spikes_is_exact(digits) -> None:
    """Conv -> Leaky -> MaxPool2d: the OR layer's spikes equal the pooled spikes, all steps."""
    torch.manual_seed(0)
    model = tut.conv_net()
    graph = _graph_of_scaled(model)
    pools = {n: p for n, p in graph.meta["source_neurons"].items() if p in ("2", "5")}
    assert len(pools) == 2 and all(graph.node(n).theta == 0.5 for n in pools)
    _assert_net_equals_float_ir(model, graph, digits)


def test_maxpool_over_currents_is_exact(digits) -> None:
    """The tutorial's own order, Conv2d -> MaxPool2d -> Leaky: the float IR pools the
    convolution's currents (a MaxPool node before the neuron) and equals the net, all steps."""
    torch.manual_seed(0)
    model = tut.conv_net(pool_spikes=False)
    graph = _graph_of_scaled(model)
    assert graph.meta["source_max_pools"] == {"maxpool0": "1", "maxpool1": "4"}
    _assert_net_equals_float_ir(model, graph, digits)


@pytest.mark.slow
def test_tutorial6_conv_net_one_command(tmp_path: Path, digits) -> None:
    torch.manual_seed(0)
    model = tut.conv_net()
    tut.train_conv_net(model, digits[0], digits[1], epochs=2)
    model.eval()
    deploy_source(model, f"{MODEL_FILE}:conv_net", tmp_path, timesteps=tut.NUM_STEPS)
