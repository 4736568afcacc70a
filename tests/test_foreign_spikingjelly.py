"""SpikingJelly nets (activation_based ``layer.*`` + ``neuron.*``) deployed with one command.

The adapter (``lmh_deploy/frontends/neurons/spikingjelly.py``) was written from
spikingjelly 2.0.0's source; these tests run SpikingJelly itself, single-step (one call per
step) and multi-step (``set_step_mode(net, 'm')``, the input repeated over T inside forward).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.frontends.neurons import NeuronError
from lmh_deploy.frontends.torch_fx import FrontendError, module_to_graph

from foreign import spikingjelly_style as sj
from shared import deploy_source, invoke

MODEL_FILE = Path(__file__).parent / "foreign" / "spikingjelly_style.py"


def _strong(model: torch.nn.Module) -> torch.nn.Module:
    """Weights x3 and non-trivial BN statistics: membranes cross 2x threshold, resets matter."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(3.0)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _assert_exact(model: torch.nn.Module, x: np.ndarray) -> None:
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=sj.T)
    src = run_source(
        model,
        x,
        sj.T,
        source_neurons=graph.meta["source_neurons"],
        time_repeat=graph.meta.get("source_time_repeat"),
    )
    ref = simulate_float(graph, x, sj.T)
    assert ref.spikes["lmh0"].mean() > 0.05
    for name, spikes in ref.spikes.items():
        assert np.array_equal(src.spikes[name], spikes), name
    np.testing.assert_allclose(src.logits, ref.logits, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "IF"},
        {"kind": "IF", "v_reset": None},
        {"kind": "LIF"},
        {"kind": "LIF", "decay_input": False},
        {"kind": "LIF", "v_reset": None},
        {"kind": "LIF", "tau": 2.5, "v_reset": -0.1},
        {"kind": "PLIF"},
    ],
)
def test_single_step_float_ir_equals_spikingjelly(kwargs: dict, digits) -> None:
    torch.manual_seed(0)
    _assert_exact(_strong(sj.mlp(**kwargs)), digits[2][:60].numpy() * 2.0)


@pytest.mark.parametrize("pool_currents", [False, True], ids=["pool-spikes", "pool-currents"])
def test_multi_step_conv_bn_maxpool_float_ir_equals_spikingjelly(pool_currents: bool, digits) -> None:
    torch.manual_seed(0)
    model = _strong(sj.CSNN(pool_currents=pool_currents))
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=sj.T)
    assert graph.meta["source_time_repeat"] == sj.T
    assert len(graph.of_kind("maxpool")) == (2 if pool_currents else 0)
    _assert_exact(model, digits[2][:40].numpy() * 2.0)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_seq_to_ann_container_float_ir_equals_spikingjelly(pool: str, digits) -> None:
    """``layer.SeqToANNContainer(nn.Conv2d, nn.BatchNorm2d)`` / ``(nn.MaxPool2d)`` /
    ``(nn.Linear)`` (the model zoo's multi-step idiom): its children run at every step; a max
    pool of spikes inside one is an OR layer, recorded from the (T*B, ...) merge it sees."""
    torch.manual_seed(0)
    model = _strong(sj.ZooNet(pool=pool))
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=sj.T)
    assert graph.meta["source_time_repeat"] == sj.T
    assert len(graph.meta["source_neurons"]) == (5 if pool == "max" else 3)
    _assert_exact(model, digits[2][:40].numpy() * 2.0)


def test_neuron_inside_seq_to_ann_container_is_refused_in_one_line() -> None:
    model = nn.Sequential(
        layer.SeqToANNContainer(nn.Flatten(), nn.Linear(64, 10), sj.node("IF")), sj.node("IF")
    )
    with pytest.raises(FrontendError) as err:
        module_to_graph(model, input_shape=(1, 8, 8), timesteps=sj.T)
    assert str(err.value) == (
        "0.2 (IFNode): a spiking neuron inside SeqToANNContainer runs on time and batch merged, "
        "not step by step; put the neuron after the container (neuron.*Node in multi-step mode)"
    )


class _ShapeSlice(nn.Module):
    """``T, B = x_seq.shape[:2]`` written in the user's own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.sn = nn.Linear(64, 10), sj.node("IF")

    def forward(self, x):
        n = x.shape[:1]
        return self.sn(self.fc(x.reshape(n[0], -1)))


def test_slicing_a_traced_shape_is_refused_in_one_line() -> None:
    with pytest.raises(FrontendError, match=r"^forward\(\) of the root module at .*: getitem: indexes a "
                       r"tensor's shape with slice\(None, 1, None\); only single dimensions"):  # fmt: skip
        module_to_graph(_ShapeSlice(), input_shape=(1, 8, 8), timesteps=sj.T)


def test_multi_step_repeat_count_must_match_timesteps() -> None:
    with pytest.raises(FrontendError, match=r"repeats its input over 4 time steps .* --timesteps 4$"):
        module_to_graph(sj.CSNN(), input_shape=(1, 8, 8), timesteps=6)


def _deploy(tmp_path: Path, factory: str, kwargs: dict, *, multi_step: bool, epochs: int, digits) -> dict:
    torch.manual_seed(0)
    model = getattr(sj, factory)(**kwargs)
    sj.train(model, digits[0], digits[1], multi_step=multi_step, epochs=epochs)
    assert sj.accuracy(model, digits[2], digits[3], multi_step) > 0.7
    return deploy_source(model, f"{MODEL_FILE}:{factory}", tmp_path, timesteps=sj.T, kwargs=kwargs)


@pytest.mark.slow
def test_spikingjelly_lif_mlp_one_command(tmp_path: Path, digits) -> None:
    _deploy(tmp_path, "mlp", {"kind": "LIF"}, multi_step=False, epochs=2, digits=digits)


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory, kwargs, multi_step",
    [
        ("mlp", {"kind": "IF", "v_reset": None}, False),
        ("mlp", {"kind": "PLIF", "tau": 4.0}, False),  # learned 1/tau must stay <= 0.5 (profile lmh)
        ("CSNN", {"channels": 12}, True),
        ("CSNN", {"channels": 12, "pool_currents": True}, True),
        ("ZooNet", {"channels": 12}, True),
    ],
)
def test_spikingjelly_nets_one_command(
    tmp_path: Path, factory: str, kwargs: dict, multi_step: bool, digits
) -> None:
    _deploy(tmp_path, factory, kwargs, multi_step=multi_step, epochs=6 if multi_step else 3, digits=digits)


def test_plif_conv_net_whose_trained_tau_fell_below_two_deploys_under_cuba(
    tmp_path: Path, digits, one_torch_thread
) -> None:
    """The conv tutorial's ``ParametricLIFNode(init_tau=2.0)`` in the multi-step ``CSNN``:
    training moves every tau below 2, so ``lam_s = 1 - 1/tau < 1/2`` is outside profile lmh.
    A compile without --profile picks cuba (lmh's arithmetic, lam_s down to 0), says why, and
    the deployed net agrees with SpikingJelly's own run on >= 95 % of 50 samples with Lava ==
    sim; an explicit --profile lmh refuses in one line naming cuba."""
    kwargs = {"channels": 8, "kind": "PLIF"}
    torch.manual_seed(0)
    model = sj.CSNN(**kwargs)
    sj.train(model, digits[0], digits[1], multi_step=True, epochs=10)
    assert sj.accuracy(model, digits[2], digits[3], multi_step=True) > 0.85
    taus = [1.0 + float(torch.exp(-m.w.detach())) for m in model.modules() if hasattr(m, "w")]
    assert len(taus) == 4 and max(taus) < 1.9, taus
    deploy_source(model, f"{MODEL_FILE}:CSNN", tmp_path, timesteps=sj.T, kwargs=kwargs)
    report = json.loads((tmp_path / "build" / "compile_report.json").read_text())
    lam_s = 1.0 - 1.0 / taus[0]
    assert report["profile"]["name"] == "cuba"
    assert report["profile_choice"] == (
        f"profile cuba (no --profile given): lmh0's membrane decay factor lam_s is {lam_s:.4g}, "
        "below the 1/2 profile lmh holds (SpikingJelly tau < 2, snnTorch beta < 0.5)"
    )
    res = invoke(
        "compile", tmp_path / "source.pt", "--model", f"{MODEL_FILE}:CSNN", "--model-kwargs",
        json.dumps(kwargs), "--input-shape", "1,8,8", "--timesteps", sj.T, "--dataset", "digits",
        "--profile", "lmh", "-o", tmp_path / "refused",
    )  # fmt: skip
    assert res.exit_code == 2 and not (tmp_path / "refused").exists()
    line = res.output.strip()
    assert "\n" not in line and line.startswith(
        "error: lmh0: numeric profile lmh cannot express factor lam_s="
    )
    assert line.endswith("; --profile cuba holds membrane decays down to 0 (SpikingJelly tau < 2, "
                         "snnTorch beta < 0.5), and a compile without --profile picks it")  # fmt: skip


class _MyLIF(neuron.LIFNode):
    """A user's subclass of a mapped neuron (its forward could change the dynamics)."""


SJ_SUPPORTED = (
    "supported SpikingJelly neurons: neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode (the "
    "classes themselves; hard or soft reset, decay_input either way, single- or multi-step)"
)


@pytest.mark.parametrize(
    "make, label, why",
    [
        (neuron.IzhikevichNode, "neuron.IzhikevichNode", "no adapter maps this neuron"),
        (neuron.KLIFNode, "neuron.KLIFNode", "no adapter maps this neuron"),
        (neuron.QIFNode, "neuron.QIFNode", "no adapter maps this neuron"),
        (_MyLIF, "_MyLIF", "a subclass of neuron.LIFNode; only the class itself is mapped"),
    ],
    ids=["izhikevich", "klif", "qif", "subclass"],
)
def test_unsupported_spikingjelly_neuron_is_refused_naming_it(make, label: str, why: str) -> None:
    """Was "torch.fx cannot trace it: symbolically traced variables cannot be used as inputs
    to control flow" (or a getattr inside the neuron's forward), naming no supported neuron."""
    model = nn.Sequential(
        layer.Flatten(), nn.Sequential(layer.Linear(64, 16), sj.node("IF")), layer.Linear(16, 10), make()
    )
    with pytest.raises(NeuronError) as err:
        module_to_graph(model, input_shape=(1, 8, 8), timesteps=sj.T)
    kind = make.__name__
    assert str(err.value) == f"3 ({kind}): SpikingJelly {label} cannot be deployed: {why}; {SJ_SUPPORTED}"


def test_unsupported_spikingjelly_neuron_exits_2_in_one_line(tmp_path: Path) -> None:
    torch.save(sj.izhikevich_mlp().state_dict(), tmp_path / "izh.pt")
    res = invoke(
        "compile", tmp_path / "izh.pt", "--model", f"{MODEL_FILE}:izhikevich_mlp", "--input-shape",
        "1,8,8", "--timesteps", sj.T, "--dataset", "digits", "-o", tmp_path / "out",
    )  # fmt: skip
    assert res.exit_code == 2 and not (tmp_path / "out").exists()
    assert res.output.strip() == (
        f"error: 3 (IzhikevichNode): SpikingJelly neuron.IzhikevichNode cannot be deployed: no adapter "
        f"maps this neuron; {SJ_SUPPORTED}"
    )


MULTI_STEP_REWRITE = (
    "write its children without it: SpikingJelly's layer.* and neuron.*Node modules in an "
    "nn.Sequential with functional.set_step_mode(net, 'm') (the same per-step computation; plain "
    "torch layers go in layer.SeqToANNContainer, neurons outside it)"
)


class _Repeat(nn.Module):
    """Multi-step: the frame repeated over T, the body on (T, N, ...), the mean over T."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x.unsqueeze(0).repeat(sj.T, 1, 1, 1, 1)).mean(0)


@pytest.mark.parametrize("stateful_step_mode", [False, True], ids=["MultiStepContainer", "StepModeContainer"])
def test_multi_step_container_is_refused_saying_what_to_write(stateful_step_mode: bool, digits) -> None:
    """``layer.MultiStepContainer`` (``functional.multi_step_forward``: its single-step children
    called once per step) was refused with "torch.fx cannot trace it: 'Proxy' object cannot be
    interpreted as an integer". The refusal says to write the children in multi-step mode, and
    that rewrite (same weights) computes the same outputs in SpikingJelly and deploys."""
    torch.manual_seed(0)
    children = [nn.Flatten(), nn.Linear(64, 16), sj.node("IF"), nn.Linear(16, 10), sj.node("LIF")]
    with torch.no_grad():
        children[1].weight.mul_(6.0)
        children[3].weight.mul_(6.0)
    if stateful_step_mode:
        container = layer.StepModeContainer(True, "m", *children)
    else:
        container = layer.MultiStepContainer(*children)
    model = _Repeat(nn.Sequential(container)).eval()
    with pytest.raises(FrontendError) as err:
        module_to_graph(model, input_shape=(1, 8, 8), timesteps=sj.T)
    kind = type(container).__name__
    state = "(stateful, multi-step) " if stateful_step_mode else ""
    assert str(err.value) == (
        f"body.0 ({kind}): {state}runs its children one step at a time in a Python loop over T, which "
        f"cannot be traced; {MULTI_STEP_REWRITE}"
    )
    # the rewrite the line asks for: layer.* / neuron.* in multi-step mode, the same weights
    fc1, fc2 = layer.Linear(64, 16), layer.Linear(16, 10)
    fc1.load_state_dict(children[1].state_dict())
    fc2.load_state_dict(children[3].state_dict())
    rewrite = _Repeat(nn.Sequential(layer.Flatten(), fc1, sj.node("IF"), fc2, sj.node("LIF"))).eval()
    functional.set_step_mode(rewrite, "m")
    x = digits[2][:40] * 3.0
    with torch.no_grad():
        want = model(x)
        functional.reset_net(model)
        got = rewrite(x)
    assert want.abs().sum() > 0 and torch.equal(want, got)
    graph = module_to_graph(rewrite, input_shape=(1, 8, 8), timesteps=sj.T)
    assert len(graph.meta["source_neurons"]) == 2
