"""rockpool ``Sequential(LinearTorch, LIFTorch, ...)`` nets deployed with one command
(``--profile cuba``: rockpool's synaptic current decays by exp(-dt/tau_syn), 0.95 at its
defaults, beyond lmh's mu_d < 1/2).

The adapter (``lmh_deploy/frontends/neurons/rockpool.py``) and the per-step view
(``lmh_deploy/frontends/rockpool.py``) were written from rockpool 3.1.0's source; these tests
run rockpool itself, one call of a ``(batch, time, 64)`` input from a fresh state, against the
float IR (every spike count equal) and deploy nets trained and saved the rockpool way
(``net.save(path)``, JSON).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rockpool.nn.combinators import Sequential
from rockpool.nn.modules import ExpSynTorch, LIFBitshiftTorch, LIFTorch, LinearTorch
from rockpool.parameters import Constant

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.errors import InputError
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.frontends.neurons import NeuronError
from lmh_deploy.frontends.torch_fx import module_to_graph
from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.pipeline.compile_torch import load_weights

from foreign import rockpool_style as rs
from shared import assert_source_and_float_ir_equal_own, compile_source, invoke, verified

MODEL_FILE = Path(__file__).parent / "foreign" / "rockpool_style.py"


def _strong(net: object, gain: float) -> object:
    """Weights x ``gain``: membranes cross several thresholds a step (graded spikes)."""
    with torch.no_grad():
        for m in net.modules():  # type: ignore[attr-defined]
            if isinstance(m, LinearTorch):
                m.weight.mul_(gain)
    return net


def _thresholds_per_neuron() -> object:
    """Trained thresholds differ per neuron (folded into the weight rows, theta 1)."""
    lif = LIFTorch(32, tau_mem=Constant(0.02), tau_syn=Constant(0.01), threshold=torch.linspace(0.5, 1.5, 32))
    return Sequential(LinearTorch((64, 32)), lif, LinearTorch((32, 10)))


#: biases that differ per neuron, as training rockpool's default (trainable) bias leaves them
BIASES = torch.linspace(-0.1, 0.3, 32)


def _biases_per_neuron() -> object:
    """A bias per neuron (each neuron's initial dendrite, ``v_d_init`` per neuron) with
    per-neuron thresholds: the ratio bias / threshold differs per neuron."""
    lif = LIFTorch(
        32,
        tau_mem=Constant(0.02),
        tau_syn=Constant(0.01),
        threshold=torch.linspace(0.5, 1.5, 32),
        bias=BIASES,
    )
    return Sequential(LinearTorch((64, 32)), lif, LinearTorch((32, 10)))


@pytest.mark.parametrize(
    "build, bias, gain",
    [
        (rs.mlp, 0.0, 1.0),
        (lambda: rs.mlp(bias=0.05, tau=8e-3), 0.05, 1.0),
        (_thresholds_per_neuron, 0.0, 1.0),
        (_biases_per_neuron, (BIASES / torch.linspace(0.5, 1.5, 32)).numpy(), 1.0),
        (rs.tutorial_mlp, 0.0, 3.0),
    ],
)
def test_float_ir_equals_rockpool_spike_counts(build, bias: float | np.ndarray, gain: float, digits) -> None:
    """Every spike count of rockpool's own run (several a step), a bias (an initial dendrite
    offset; per neuron where it differs per neuron), per-neuron thresholds and two LIFTorch
    layers included; logits equal rockpool's mean output."""
    torch.manual_seed(0)
    net = _strong(build(), gain)
    x = digits[2][:40].reshape(40, 64)
    graph = module_to_graph(net, input_shape=(64,), timesteps=rs.T)
    assert graph.meta["source_batch_time"] and graph.meta["source_output_index"] == 0
    src = run_source(
        net, x.numpy(), rs.T, source_neurons=graph.meta["source_neurons"], output_index=0, batch_time=True
    )
    ref = simulate_float(graph, x.numpy(), rs.T)
    assert max(int(s.max()) for s in ref.spikes.values()) > 1  # several spikes a step occur
    with torch.no_grad():
        own = rs.run(net, x).mean(1).numpy()
    assert_source_and_float_ir_equal_own(src, ref, own)
    lmh0 = graph.node("lmh0")
    np.testing.assert_allclose(lmh0.v_d_init, bias, rtol=1e-6, atol=1e-7)  # the bias, in thresholds


def _net(*modules: object) -> object:
    return Sequential(LinearTorch((64, 8)), *modules)


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: _net(LIFTorch(8, has_rec=True)),
            r"^1_LIFTorch \(LIFTorch\): recurrent weights \(has_rec=True\) have no IR synapse; supported: ",
        ),
        (
            lambda: _net(LIFTorch(8, noise_std=0.1)),
            r"^1_LIFTorch \(LIFTorch\): membrane noise \(noise_std=0\.1\) is not deployable",
        ),
        (
            lambda: _net(LIFBitshiftTorch(8)),
            r"^1_LIFBitshiftTorch \(LIFBitshiftTorch\): rockpool LIFBitshiftTorch cannot be deployed",
        ),
        (
            lambda: _net(ExpSynTorch(8)),
            r"^1_ExpSynTorch \(ExpSynTorch\): rockpool ExpSynTorch cannot be deployed",
        ),
        (
            lambda: Sequential(LIFTorch(64), LinearTorch((64, 10))),
            r"^0_LIFTorch \(LIFTorch\): a LIFTorch must follow a LinearTorch",
        ),
    ],
)
def test_unsupported_rockpool_modules_are_refused_in_one_line(build, message: str) -> None:
    with pytest.raises(NeuronError, match=message) as info:
        module_to_graph(build(), input_shape=(64,), timesteps=rs.T)
    assert "\n" not in str(info.value)


def test_lmh_profile_refusal_names_cuba_and_json_mismatch_is_one_line(tmp_path: Path) -> None:
    """Under profile lmh the current decay (0.951) is refused naming --profile cuba; without
    --profile, compile picks cuba and says so in one line; a JSON file of another network, or
    into a model that is not rockpool's, is refused in one line; nothing is written."""
    torch.manual_seed(0)
    weights = tmp_path / "net.json"
    rs.mlp().save(str(weights))  # type: ignore[attr-defined]
    args = ["--input-shape", "64", "--timesteps", rs.T, "--dataset", "digits", "-o", tmp_path / "build"]
    res = invoke("compile", weights, "--model", f"{MODEL_FILE}:mlp", "--profile", "lmh", *args)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "lmh0: numeric profile lmh cannot express factor mu_d=0.951229" in res.output
    assert "--profile cuba" in res.output
    assert not (tmp_path / "build").exists()
    res = invoke("compile", weights, "--model", f"{MODEL_FILE}:mlp", *args)
    assert res.exit_code == 0, res.output
    said = "profile cuba (no --profile given): lmh0's synaptic current decays by 0.9512 a step"
    assert said in " ".join(res.output.split())  # the console wraps long lines
    report = json.loads((tmp_path / "build" / "compile_report.json").read_text())
    assert report["profile"]["name"] == "cuba" and report["profile_choice"].startswith(said)
    assert load_artifact(tmp_path / "build").manifest["profile"] == "cuba"
    shutil.rmtree(tmp_path / "build")
    other = tmp_path / "other.json"
    rs.mlp(hidden=16).save(str(other))  # type: ignore[attr-defined]
    res = invoke("compile", other, "--model", f"{MODEL_FILE}:mlp", "--profile", "cuba", *args)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert f"{other}: does not fit the model" in res.output
    assert not (tmp_path / "build").exists()
    with pytest.raises(InputError, match=r"a JSON file loads only into a rockpool network"):
        load_weights(torch.nn.Linear(64, 10), weights)


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory, kwargs, lr, accuracy",
    [
        ("mlp", None, 3e-3, 0.8),
        ("mlp_trained_bias", None, 3e-3, 0.8),
        ("tutorial_mlp", {"hidden": 64}, 1e-2, 0.3),
    ],
)
def test_rockpool_net_one_command(
    tmp_path: Path, factory: str, kwargs: dict | None, lr: float, accuracy: float, digits
) -> None:
    """``LinearTorch -> LIFTorch -> LinearTorch`` at rockpool's default 20 ms taus and dt =
    1 ms, and the Hello-MNIST tutorial's two LIFTorch layers, trained 3 epochs the rockpool way,
    saved with ``net.save`` (JSON), deployed by ``compile --model --profile cuba`` and verified
    on 50 test digits: >= 95 % of predictions equal rockpool's own run, Lava == sim spike for
    spike, and no state saturates. ``mlp_trained_bias`` keeps LIFTorch's default trainable
    bias, which training leaves different per neuron: each neuron's own initial dendrite.
    (The tutorial net reaches only ~45 %: at 8 steps of direct input its slow output neurons
    rarely spike; deployed, it still agrees with rockpool.)"""
    torch.manual_seed(0)
    net = getattr(rs, factory)(**(kwargs or {}))
    rs.train(net, digits[0], digits[1], epochs=3, lr=lr)
    assert rs.accuracy(net, digits[2], digits[3]) > accuracy
    weights, build = tmp_path / "net.json", tmp_path / "build"
    net.save(str(weights))  # type: ignore[attr-defined]
    spec = f"{MODEL_FILE}:{factory}"
    compile_source(weights, spec, build, input_shape="64", timesteps=rs.T, profile="cuba", kwargs=kwargs)
    report = json.loads((build / "compile_report.json").read_text())
    assert report["profile"]["name"] == "cuba"
    bias = net[1].bias.detach().numpy()  # type: ignore[index]
    v_d_init = load_artifact(build).quant_graph.node("lmh0").v_d_init
    if factory == "mlp_trained_bias":
        assert np.ptp(bias) > 1e-3 and np.ndim(v_d_init) == 1  # one bias per neuron, deployed so
    else:
        assert np.ndim(v_d_init) == 0
    result = verified(build, tmp_path / "verify.json", samples=50, agreement=0.95)
    assert result["lava_vs_sim"]["saturation_sim"] == 0


@pytest.mark.slow
def test_two_hidden_lif_layers_deploy_with_silent_digits(tmp_path: Path, digits) -> None:
    """Two hidden ``LinearTorch -> LIFTorch`` layers and a bias-free ``LinearTorch`` readout
    (``rs.two_hidden``), trained 8 epochs the rockpool way (cross-entropy on the output summed
    over time), saved with ``net.save``, deployed with one ``compile`` (profile cuba chosen by
    itself) and verified on 50 test digits: >= 95 % agreement and Lava == sim. On some of the
    digits the second hidden layer stays silent, so every logit is 0 in rockpool (a tie the
    first class wins); the readout's bias correction would break that tie (0.86 agreement
    before it was refused), so the readout keeps rockpool's (zero) bias."""
    torch.manual_seed(0)
    net = rs.two_hidden()
    rs.train(net, digits[0], digits[1], epochs=8, lr=1e-3, over_time="sum")
    assert rs.accuracy(net, digits[2], digits[3]) > 0.45
    with torch.no_grad():
        out = rs.run(net, digits[2][:50].reshape(50, 64))
    assert int((out == 0).all(2).all(1).sum()) >= 3  # digits whose logits all tie at 0
    weights, build = tmp_path / "net.json", tmp_path / "build"
    net.save(str(weights))  # type: ignore[attr-defined]
    compile_source(weights, f"{MODEL_FILE}:two_hidden", build, input_shape="64", timesteps=rs.T)
    report = json.loads((build / "compile_report.json").read_text())
    assert report["profile"]["name"] == "cuba"
    assert report["bias_correction"]["not_corrected"] == {
        "readout": "its correction would change the class that a silent input predicts"
    }
    assert not load_artifact(build).quant_graph.node("readout").bias.any()
    result = verified(build, tmp_path / "verify.json", samples=50, agreement=0.95)
    assert result["lava_vs_sim"]["saturation_sim"] == 0
