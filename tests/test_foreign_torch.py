"""Foreign PyTorch modules (the paper's code style, user neurons): one command to deploy.

The paper's-style models come from the fake clone (tests/paper_clone/digits_model.py): a ReLU
ANN whose ReLUs are swapped for a per-step LearnableNeuron, saved as a bare state_dict.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from lmh_deploy.models.data import load_dataset
from torch import nn

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.frontends.neurons import (
    ADAPTERS,
    NeuronAdapter,
    NeuronError,
    NeuronSpec,
    register_neuron,
)
from lmh_deploy.frontends.torch_fx import FrontendError, module_to_graph
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.ir import IRError

from foreign.training import train_digits
from shared import DIGITS_MODEL as MODEL_FILE
from shared import compile_source, invoke, paper_clone, verified


def digits_test(n: int) -> np.ndarray:
    return load_dataset("digits")[1].tensors[0][:n].numpy()


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random factors and BN statistics, so that an exact mapping is really tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.weight.uniform_(0.5, 2.0, generator=gen)
                m.bias.uniform_(-0.2, 0.4, generator=gen)
            for p in ("alpha_1", "beta_1", "alpha_2", "beta_2"):
                if hasattr(m, p) and isinstance(getattr(m, p), torch.Tensor):
                    getattr(m, p).uniform_(-2.0, 2.0, generator=gen)
    return model.eval()


@pytest.fixture(scope="module")
def official_mlp(tmp_path_factory) -> Path:
    """The paper's style: ReLU MLP, ReLUs swapped, trained briefly, bare state_dict."""
    torch.manual_seed(0)
    model = paper_clone("mlp")
    accuracy = train_digits(model, epochs=2)
    assert accuracy > 0.8
    path = tmp_path_factory.mktemp("official") / "mlp_state.pt"
    torch.save(model.state_dict(), path)
    return path


def test_official_mlp_one_command_verify_against_source(official_mlp: Path) -> None:
    out = official_mlp.parent / "build"
    compile_source(official_mlp, f"{MODEL_FILE}:mlp", out)
    assert (out / "source_model.py").is_file() and (out / "source_weights.pt").is_file()
    verified(out, out.parent / "verify.json", samples=100, agreement=0.97)


@pytest.mark.parametrize("factory", ["mlp", "resnet"])
def test_trace_reproduces_the_source_exactly(factory: str) -> None:
    """Float IR (BN folded, residual shortcuts, AdaptiveAvgPool, view) == the module itself."""
    torch.manual_seed(1)
    model = randomise(paper_clone(factory)).double()
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=4)
    x = digits_test(40) * 2.0
    src = run_source(model, x, 4, source_neurons=graph.meta["source_neurons"])
    ref = simulate_float(graph, x, 4)
    assert np.abs(src.logits - ref.logits).max() < 1e-9
    for name in ref.spikes:
        assert np.array_equal(src.spikes[name], ref.spikes[name]), name
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0
    if factory == "resnet":  # two blocks: one identity and one 1x1 conv + BN shortcut
        kinds = [graph.node(n).kind for n in graph.order()]
        assert kinds.count("lmh") == 5 and kinds.count("avgpool") == 1
        assert sum(len(graph.inputs_of(n)) == 2 for n in graph.of_kind("lmh")) == 2


def test_neuron_recognised_by_parameters_not_class_name() -> None:
    class SomethingElse(type(paper_clone("LearnableNeuron"))):
        pass

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), SomethingElse(), nn.Linear(8, 3))
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=2)
    assert graph.meta["source_neurons"] == {"lmh0": "2"}

    class LearnableNeuron(nn.Module):  # the right name, none of the parameters
        def forward(self, x):
            return (x > 0).float()

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), LearnableNeuron(), nn.Linear(8, 3))
    where = r"^2 \(LearnableNeuron\) at test_foreign_torch.py:\d+: "  # the line of its forward()
    with pytest.raises(FrontendError, match=where + r"gt in forward\(\) cannot"):
        module_to_graph(model, input_shape=(1, 8, 8), timesteps=2)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 4)
        self.neuron = paper_clone("LearnableNeuron")

    def forward(self, x):
        x = x.flatten(1)
        if x.sum() > 0:  # data-dependent Python control flow
            x = x * 2
        return self.neuron(self.fc(x))


@pytest.mark.parametrize(
    "model, match",
    [
        (
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3)),
            r"^2 \(ReLU\): an ANN activation left in the model; swap it",
        ),
        (lambda: Branchy(), r"^<root> \(Branchy\): torch.fx cannot trace it"),
        (
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Softmax(1), nn.Linear(8, 3)),
            r"^2 \(Softmax\): unsupported layer type",
        ),
        (
            lambda: nn.Sequential(
                nn.Flatten(), nn.Linear(64, 8), paper_clone("LearnableNeuron"), nn.LSTM(8, 3)
            ),
            r"^3 \(LSTM\): unsupported layer type",
        ),
    ],
)
def test_unmappable_constructs_refused_in_one_line(model, match: str) -> None:
    with pytest.raises((FrontendError, NeuronError, IRError), match=match) as info:
        module_to_graph(model(), input_shape=(1, 8, 8), timesteps=2)
    assert "\n" not in str(info.value)


def test_time_batched_learnable_neuron_refused() -> None:
    neuron = paper_clone("LearnableNeuron")
    neuron.use_TEBN = True
    del neuron.T  # a look-alike that takes all steps in one call but does not say how many
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), neuron, nn.Linear(8, 3))
    with pytest.raises(NeuronError, match=r"2 \(LearnableNeuron\): use_TEBN=True but no step count T"):
        module_to_graph(model, input_shape=(1, 8, 8), timesteps=2)


def test_bad_weights_and_specs_one_line(tmp_path: Path, official_mlp: Path) -> None:
    pickled = tmp_path / "evil.pt"
    pickled.write_bytes(pickle.dumps({"w": object()}))
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    whole = tmp_path / "whole.pt"  # torch.save(model): a pickled module, not a state_dict
    torch.save(nn.Sequential(nn.Linear(2, 2)), whole)
    resized = tmp_path / "resized.pt"  # another net's weights under the same keys
    state = torch.load(official_mlp, weights_only=True)
    torch.save({k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) for k, v in state.items()}, resized)
    base = ["--input-shape", "1,8,8", "--timesteps", "4", "--dataset", "digits", "-o", tmp_path / "out"]
    cases = [
        ([pickled, "--model", f"{MODEL_FILE}:mlp"], "needs arbitrary unpickling"),
        ([whole, "--model", f"{MODEL_FILE}:mlp"], "torch.save(model.state_dict(), path)"),
        ([wrong, "--model", f"{MODEL_FILE}:mlp"], "does not fit the model (missing"),
        ([resized, "--model", f"{MODEL_FILE}:mlp"], "does not fit the model (shape mismatch: "),
        ([official_mlp, "--model", f"{MODEL_FILE}:nothing"], "has no function or class"),
        ([official_mlp, "--model", "missing.py:mlp"], "does not exist"),
        ([official_mlp, "--model", f"{MODEL_FILE}:mlp", "--model-kwargs", "[1]"], "expected a JSON object"),
    ]
    for args, message in cases:
        res = invoke("compile", *args, *base)
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
        assert "\x1b" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    res = invoke(
        "compile",
        official_mlp,
        "--model",
        f"{MODEL_FILE}:mlp",
        "--input-shape",
        "3,8,8",
        "--timesteps",
        "4",
        "--dataset",
        "digits",
        "-o",
        tmp_path / "out",
    )
    assert res.exit_code == 2 and "does not fit dataset digits" in res.output
    assert not (tmp_path / "out").exists()


class PlainIF(nn.Module):
    """A user's own integrate-and-fire neuron (per step, soft reset)."""

    def __init__(self, threshold: float = 1.0):
        super().__init__()
        self.threshold = threshold
        self.v = None

    def forward(self, x):
        if self.v is None:
            self.v = torch.full_like(x, self.threshold / 2)
        self.v = self.v + x
        spikes = (self.v >= self.threshold).to(x.dtype)
        self.v = self.v - spikes * self.threshold
        return spikes * self.threshold


class PlainIFAdapter(NeuronAdapter):
    name = "test-plain-if"

    def matches(self, module):
        return isinstance(module, PlainIF)

    def spec(self, module, where):
        zero, one = np.zeros((1, 1)), np.ones((1, 1))
        return NeuronSpec(
            theta=module.threshold,
            amplitude=module.threshold,
            v_s_init=0.5 * module.threshold,
            factors={"mu_d": zero, "mu_s": zero, "lam_d": one, "lam_s": one},
        )

    def reset(self, module):
        module.v = None


def test_user_registered_neuron() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), PlainIF(0.8), nn.Linear(16, 4)).double()
    where = r"^2 \(PlainIF\) at test_foreign_torch.py:\d+: "
    with pytest.raises(FrontendError, match=where + r".* register the module as a neuron"):
        module_to_graph(model, input_shape=(64,), timesteps=3)
    adapter = register_neuron(PlainIFAdapter())
    try:
        graph = module_to_graph(model, input_shape=(64,), timesteps=3)
        x = digits_test(30).reshape(30, 64) * 3
        src = run_source(model, x, 3, source_neurons=graph.meta["source_neurons"])
        ref = simulate_float(graph, x, 3)
        assert np.abs(src.logits - ref.logits).max() < 1e-9
        assert src.spikes["lmh0"].any()
    finally:
        ADAPTERS.remove(adapter)


@pytest.mark.slow
def test_official_resnet_deploys(tmp_path: Path) -> None:
    """A small residual conv net in the paper's style, trained to ~92 %: the issue's bar."""
    torch.manual_seed(0)
    model = paper_clone("resnet", width=8)
    assert train_digits(model, epochs=8) > 0.88
    weights = tmp_path / "resnet_state.pt"
    torch.save(model.state_dict(), weights)
    compile_source(weights, f"{MODEL_FILE}:resnet", tmp_path / "build", kwargs={"width": 8})
    verified(tmp_path / "build", tmp_path / "v.json", samples=360, agreement=0.97)
    report = json.loads((tmp_path / "build" / "compile_report.json").read_text())
    assert set(report["bias_correction"]["layers"]) == {f"lmh{i}" for i in range(5)} | {"readout"}
    # The gap to the source is 8-bit weight rounding compounding over 5 spiking layers (last
    # layer ~94 % of spikes agree vs 99 % in the first) on a net with many near-tie
    # predictions; bias correction and 8 epochs instead of 4 (fewer near ties) close it:
    # measured 0.975 here (docs/interop.md has the breakdown); verified() asserts >= 0.97.


def test_python_api_compiles_a_module_object(tmp_path: Path, official_mlp: Path) -> None:
    """compile_module(module, ...) with calibration inputs; verify runs the module given."""
    from lmh_deploy.pipeline.compile import load_artifact
    from lmh_deploy.pipeline.compile_torch import compile_module
    from lmh_deploy.pipeline.verify import verify_artifact

    model = paper_clone("mlp")
    model.load_state_dict(torch.load(official_mlp, weights_only=True))
    calib = load_dataset("digits")[0].tensors[0][:32].numpy()
    compile_module(model, tmp_path / "api", input_shape=(1, 8, 8), timesteps=4, calibration=calib)
    art = load_artifact(tmp_path / "api")
    assert art.report["calibration"]["samples"] == 32
    with pytest.raises(ValueError, match="compiled without a dataset"):
        verify_artifact(art, 10)
    art.float_graph.meta["dataset"] = art.quant_graph.meta["dataset"] = {
        "name": "digits",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "seed": 0,
    }
    result = verify_artifact(art, 20, source=model)
    assert result["float_vs_fixed"]["float_reference"] == "source module (PyTorch)"
    assert result["lava_vs_sim"]["mismatched_spikes"] == 0
    assert result["float_vs_fixed"]["prediction_agreement"] >= 0.9
