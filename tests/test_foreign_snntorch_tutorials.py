"""snnTorch nets written as its tutorials write them, deployed with one ``lmh-deploy compile``.

Tutorial 5 style: the module loops over ``num_steps`` in its own ``forward`` (``init_leaky()``,
stacked spike/membrane records); the frontend finds the loop and deploys one step of it
(:mod:`lmh_deploy.frontends.time_loop`). ``verify`` runs the module itself, once per sample
batch, and compares its records with the deployed network's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lmh_deploy.models.data import load_dataset
from typer.testing import CliRunner

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.cli import app
from lmh_deploy.frontends.neurons import NeuronError
from lmh_deploy.frontends.torch_fx import FrontendError, module_to_graph
from lmh_deploy.backends.float.torch_source import run_source

sys.path.insert(0, str(Path(__file__).parent))
from foreign import snntorch_tutorials as tut

MODEL_FILE = Path(__file__).parent / "foreign" / "snntorch_tutorials.py"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def digits():
    train, test, _ = load_dataset("digits")
    return train.tensors[0].flatten(1), train.tensors[1], test.tensors[0].flatten(1), test.tensors[1]


@pytest.mark.parametrize("cls", [tut.Tutorial5Net, tut.SynapticLoopNet])
def test_loop_in_forward_float_ir_equals_the_module(cls, digits) -> None:
    torch.manual_seed(0)
    model = cls()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
    graph = module_to_graph(model, input_shape=(64,), timesteps=tut.NUM_STEPS)
    assert graph.meta["source_time_loop"] == tut.NUM_STEPS
    assert graph.meta["source_output_index"] == 0
    x = digits[2][:80].numpy()
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


@pytest.mark.slow
def test_tutorial5_net_one_command(tmp_path: Path, digits) -> None:
    torch.manual_seed(0)
    model = tut.Tutorial5Net()
    tut.train_loop_net(model, digits[0], digits[1], epochs=3)
    assert tut.loop_net_accuracy(model, digits[2], digits[3]) > 0.85
    weights = tmp_path / "tutorial5.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "build"
    res = invoke(
        "compile", weights, "--model", f"{MODEL_FILE}:Tutorial5Net", "--input-shape", "64",
        "--timesteps", tut.NUM_STEPS, "--dataset", "digits", "-o", out,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = invoke("verify", out, "--samples", 50, "--json", out.parent / "verify.json")
    assert res.exit_code == 0, res.output
    result = json.loads((out.parent / "verify.json").read_text())
    lv, ff = result["lava_vs_sim"], result["float_vs_fixed"]
    print("tutorial5", lv, ff)
    assert lv["spikes_compared"] > 0 and lv["mismatched_spikes"] == 0 and lv["state_mismatches"] == 0
    assert ff["float_reference"].startswith("source module")
    assert ff["prediction_agreement"] >= 0.95, ff


@pytest.fixture(scope="module")
def images():
    train, test, _ = load_dataset("digits")
    return train.tensors[0], train.tensors[1], test.tensors[0], test.tensors[1]


def test_maxpool_over_spikes_is_exact(images) -> None:
    """Conv -> Leaky -> MaxPool2d: the OR layer's spikes equal the pooled spikes, all steps."""
    torch.manual_seed(0)
    model = tut.conv_net()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(3.0)
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=tut.NUM_STEPS)
    pools = {n: p for n, p in graph.meta["source_neurons"].items() if p in ("2", "5")}
    assert len(pools) == 2 and all(graph.node(n).theta == 0.5 for n in pools)
    x = images[2][:60].numpy() * 2.0
    src = run_source(model, x, tut.NUM_STEPS, source_neurons=graph.meta["source_neurons"], output_index=0)
    ref = simulate_float(graph, x, tut.NUM_STEPS)
    for name, spikes in ref.spikes.items():
        assert 0.02 < spikes.mean() < 0.95, name
        assert np.array_equal(src.spikes[name], spikes), name
    np.testing.assert_allclose(src.logits, ref.logits, atol=1e-6)


def test_maxpool_over_currents_refused_naming_the_layer() -> None:
    with pytest.raises(FrontendError, match=r"^1 \(MaxPool2d\): max pooling of currents .* after the neuron"):
        module_to_graph(tut.conv_net(pool_spikes=False), input_shape=(1, 8, 8), timesteps=tut.NUM_STEPS)


@pytest.mark.slow
def test_tutorial6_conv_net_one_command(tmp_path: Path, images) -> None:
    torch.manual_seed(0)
    model = tut.conv_net()
    tut.train_conv_net(model, images[0], images[1], epochs=2)
    model.eval()
    weights = tmp_path / "conv.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "build"
    res = invoke(
        "compile", weights, "--model", f"{MODEL_FILE}:conv_net", "--input-shape", "1,8,8",
        "--timesteps", tut.NUM_STEPS, "--dataset", "digits", "-o", out,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = invoke("verify", out, "--samples", 50, "--json", tmp_path / "verify.json")
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "verify.json").read_text())
    lv, ff = result["lava_vs_sim"], result["float_vs_fixed"]
    print("tutorial6 conv", lv, ff)
    assert lv["spikes_compared"] > 0 and lv["mismatched_spikes"] == 0 and lv["state_mismatches"] == 0
    assert ff["prediction_agreement"] >= 0.95, ff
