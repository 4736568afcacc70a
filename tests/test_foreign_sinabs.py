"""sinabs nets (``IAF``, ``IAFSqueeze``, ``LIF``, ``SumPool2d``) deployed with one command.

The adapter (``lmh_deploy/frontends/neurons/sinabs.py``) was written from sinabs 3.1.3's
source; these tests run sinabs itself, in its own ``(batch, time, ...)`` and
``(batch * time, ...)`` layouts, against the float IR (every spike count equal) and deploy
nets trained the sinabs way (graded spikes: several a step, subtractive reset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sinabs.activation as sa
import sinabs.layers as sl
import torch

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.frontends.neurons import NeuronError
from lmh_deploy.frontends.torch_fx import module_to_graph

from foreign import sinabs_style as ss
from shared import assert_source_and_float_ir_equal_own, deploy_source

MODEL_FILE = Path(__file__).parent / "foreign" / "sinabs_style.py"
SHAPES = {
    "iaf_mlp": (64,),
    "lif_mlp": (64,),
    "conv_net": (1, 8, 8),
    "lif_per_neuron_mlp": (64,),
    "lif_per_channel_conv": (1, 8, 8),
}
#: weight gains that make several spikes a step (LIF: the input is scaled by 1 - alpha)
GAINS = {"lif_mlp": 20.0, "lif_per_neuron_mlp": 20.0, "lif_per_channel_conv": 20.0}


def _strong(model: torch.nn.Module, gain: float = 3.0) -> torch.nn.Module:
    """Weights x ``gain``: membranes cross several thresholds a step (graded spikes)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(gain)
    return model.eval()


@pytest.mark.parametrize(
    "factory", ["iaf_mlp", "lif_mlp", "conv_net", "lif_per_neuron_mlp", "lif_per_channel_conv"]
)
def test_float_ir_equals_sinabs_spike_counts(factory: str, digits) -> None:
    """Per-neuron (per-channel) tau_mem with norm_input: the gains folded into the rows before."""
    torch.manual_seed(0)
    model = _strong(getattr(ss, factory)(), GAINS.get(factory, 3.0))
    shape = SHAPES[factory]
    x = digits[2][:40]
    graph = module_to_graph(model, input_shape=shape, timesteps=ss.T)
    src = run_source(
        model, x.numpy().reshape((40, *shape)), ss.T, source_neurons=graph.meta["source_neurons"]
    )
    ref = simulate_float(graph, x.numpy().reshape((40, *shape)), ss.T)
    assert max(int(s.max()) for s in ref.spikes.values()) > 1  # several spikes a step occur
    for name, spikes in ref.spikes.items():
        assert np.array_equal(src.spikes[name], spikes), name
    np.testing.assert_allclose(src.logits, ref.logits, atol=1e-5)
    # and the per-step run is sinabs's own run of the whole sequence
    with torch.no_grad():
        own = ss.run(model, x).mean(1).numpy()
    np.testing.assert_allclose(src.logits, own, atol=1e-5)


def test_max_spike_caps_the_count(digits) -> None:
    torch.manual_seed(0)
    model = _strong(ss.iaf_mlp())
    model[1] = sl.IAF(spike_fn=sa.MaxSpike(2))
    graph = module_to_graph(model, input_shape=(64,), timesteps=ss.T)
    assert graph.node("lmh0").max_spikes == 2
    x = digits[2][:20].numpy().reshape(20, 64)
    src = run_source(model, x, ss.T, source_neurons=graph.meta["source_neurons"])
    assert int(src.spikes["lmh0"].max()) == 2
    assert np.array_equal(src.spikes["lmh0"], simulate_float(graph, x, ss.T).spikes["lmh0"])


@pytest.mark.parametrize(
    "layer, message",
    [
        (
            lambda: sl.IAF(spike_fn=sa.MaxSpike(300)),
            r"^1 \(IAF\): MaxSpike\(max_num_spikes_per_bin=300\) outside",
        ),
        (lambda: sl.LIF(tau_mem=8.0, tau_syn=4.0), r"^1 \(LIF\): a synaptic current \(tau_syn\) is not"),
        (
            lambda: sl.IAF(reset_fn=sa.MembraneSubtract(subtract_value=2.0)),
            r"^1 \(IAF\): MembraneSubtract\(subtract_value=2.0\) differs from the threshold",
        ),
        (lambda: sl.ExpLeak(tau_mem=8.0), r"^1 \(ExpLeak\): sinabs ExpLeak cannot be deployed"),
    ],
)
def test_unsupported_sinabs_options_are_refused_in_one_line(layer, message: str) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), layer(), torch.nn.Linear(8, 3))
    with pytest.raises(NeuronError, match=message) as info:
        module_to_graph(model, input_shape=(64,), timesteps=ss.T)
    assert "\n" not in str(info.value)


class _OwnForward(torch.nn.Module):
    """A per-neuron norm_input LIF called from the user's own forward (not a Sequential)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.fc2 = torch.nn.Linear(64, 8), torch.nn.Linear(8, 3)
        self.lif = sl.LIF(tau_mem=torch.linspace(3.0, 9.0, 8))

    def forward(self, x):
        return self.fc2(self.lif(self.fc(x)))


PER_NEURON_WHY = (
    "norm_input with per-neuron tau_mem needs its per-neuron input gain 1 - exp(-1/tau_mem) folded "
    "into the rows of the layer before: put an nn.Linear (or an nn.Conv2d with one tau_mem per "
    "output channel) right before it in an nn.Sequential, or use norm_input=False"
)


@pytest.mark.parametrize(
    "model, shape, where",
    [
        (_OwnForward, (64,), "lif (LIF)"),
        (  # a tau per position in a convolution's output: its rows are channels
            lambda: torch.nn.Sequential(
                torch.nn.Conv2d(1, 2, 3, padding=1),
                sl.LIFSqueeze(tau_mem=torch.linspace(2.0, 9.0, 128).reshape(2, 8, 8), num_timesteps=ss.T),
            ),
            (1, 8, 8),
            "1 (LIFSqueeze)",
        ),
    ],
)
def test_per_neuron_norm_input_that_cannot_fold_is_refused_in_one_line(model, shape, where: str) -> None:
    with pytest.raises(NeuronError) as info:
        module_to_graph(model(), input_shape=shape, timesteps=ss.T)
    assert str(info.value) == f"{where}: {PER_NEURON_WHY}"


def test_folding_leaves_the_users_network_as_it_was() -> None:
    model = ss.lif_per_neuron_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module_to_graph(model, input_shape=(64,), timesteps=ss.T)
    assert model[1].norm_input and model[0].weight.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _deploy(tmp_path: Path, factory: str, digits) -> dict:
    torch.manual_seed(0)
    model = getattr(ss, factory)()
    ss.train(model, digits[0], digits[1], epochs=3)
    assert ss.accuracy(model, digits[2], digits[3]) > 0.6
    # the state_dict as sinabs users save it: with each layer's v_mem of the last batch
    assert any(k.endswith("v_mem") for k in model.state_dict())
    shape = ",".join(map(str, SHAPES[factory]))
    return deploy_source(model, f"{MODEL_FILE}:{factory}", tmp_path, timesteps=ss.T, input_shape=shape)


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["iaf_mlp", "lif_mlp", "conv_net", "lif_per_neuron_mlp"])
def test_sinabs_nets_one_command(tmp_path: Path, factory: str, digits) -> None:
    """Trained 3 epochs the sinabs way, deployed by ``compile --model``, verified on 50 test
    digits: >= 95 % of predictions equal sinabs's own, Lava == sim spike for spike."""
    _deploy(tmp_path, factory, digits)


def test_from_model_conversion_with_min_v_mem_equals_sinabs(digits) -> None:
    """``sinabs.from_model``'s IAFSqueeze layers (``min_v_mem=-1``: a soma floor, ``v_s_min``)."""
    torch.manual_seed(0)
    model = _strong(ss.converted())
    assert model[1].min_v_mem is not None
    x = digits[2][:40]
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=ss.T)
    assert graph.node("lmh0").v_s_min == -1.0
    src = run_source(model, x.numpy(), ss.T, source_neurons=graph.meta["source_neurons"])
    ref = simulate_float(graph, x.numpy(), ss.T)
    with torch.no_grad():
        own = ss.run(model, x).mean(1).numpy()
    assert_source_and_float_ir_equal_own(src, ref, own)


@pytest.mark.slow
def test_sinabs_from_model_one_command(tmp_path: Path, digits) -> None:
    """An ANN trained 3 epochs, converted by ``sinabs.from_model`` (its default ``min_v_mem``),
    deployed from the converted network's ``state_dict``: >= 95 % of 50 predictions equal
    sinabs's own run, Lava == sim."""
    torch.manual_seed(0)
    ann = ss.ann_conv()
    ss.train_ann(ann, digits[0], digits[1])
    model = ss.converted(ann).eval()
    assert ss.accuracy(model, digits[2], digits[3]) > 0.6
    deploy_source(model, f"{MODEL_FILE}:converted", tmp_path, timesteps=ss.T, input_shape="1,8,8")
