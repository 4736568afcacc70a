"""The paper's own layer kinds and time conventions (hzc1208/STBP_LMH), built as its main.py
builds them, from a builder file inside a fake clone (tests/paper_clone: ``from utils import
*`` style modules written for these tests).

Each kind compiles on normalised (signed) inputs, its float IR reproduces the source run as
the paper's ``eval_snn`` runs it (spike for spike), Lava equals sim bit for bit, and the
deployed integers agree with the source: a residual net per step, the same net with TEBN
(all T steps in one ``(T*N, ...)`` call), the CIFAR10Net shape with its VotingLayer, and an
online-trained (``OnlineNeuron``) net. The ANN as trained (QCFS) is refused in one line.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lmh_deploy.sim import simulate
from typer.testing import CliRunner

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.cli import app
from lmh_deploy.frontends.neurons import NeuronError
from lmh_deploy.frontends.torch_fx import FrontendError, module_to_graph
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.pipeline.compile_torch import compile_module
from lmh_deploy.pipeline.inputs import quantize

sys.path.insert(0, str(Path(__file__).parent))
from test_lava_equivalence import assert_bit_exact

CLONE = Path(__file__).parent / "paper_clone"
BUILDER = CLONE / "deploy_model.py"
T = 4
SHAPE = (3, 8, 8)
KINDS = {
    "resnet20 per step": dict(arch="resnet20"),
    "resnet20 TEBN": dict(arch="resnet20", use_TEBN=True),
    "cifarnet VotingLayer": dict(arch="cifarnet"),
    "resnet20 online per step": dict(arch="resnet20", online=True),
    "resnet20 online TEBN": dict(arch="resnet20", online=True, use_TEBN=True),
}


def _forget_clone() -> None:
    """Drop the clone's modules (utils, modules, Models.*) so no other test imports them."""
    for name, mod in list(sys.modules.items()):
        if str(getattr(mod, "__file__", None) or "").startswith(str(CLONE)) or name == "Models":
            del sys.modules[name]


@pytest.fixture(scope="module")
def builder():
    sys.path.insert(0, str(CLONE))
    try:
        yield importlib.import_module("deploy_model")
    finally:
        sys.path.remove(str(CLONE))
        _forget_clone()


def cifar_like(n: int, seed: int) -> np.ndarray:
    """CIFAR-10 shaped inputs normalised as the paper's dataprocess.py does."""
    u = np.random.default_rng(seed).uniform(0, 1, (n, *SHAPE))
    mean, std = np.array([0.4914, 0.4822, 0.4465]), np.array([0.2023, 0.1994, 0.2010])
    return (u - mean[:, None, None]) / std[:, None, None]


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random factors and BN statistics (so the mapping is really tested), with gains that
    keep every layer firing, as a trained net does."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.3, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.weight.uniform_(0.5, 2.0, generator=gen)
                m.bias.uniform_(0.0, 0.4, generator=gen)
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(4.0)
            for p in ("alpha_1", "beta_1", "alpha_2", "beta_2"):
                if isinstance(getattr(m, p, None), torch.Tensor):
                    getattr(m, p).uniform_(-2.0, 2.0, generator=gen)
    return model.eval()


@pytest.mark.parametrize("kind", list(KINDS))
def test_paper_kind_compiles_and_deploys(builder, kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = trained_like(builder.build(**KINDS[kind]))
    out = tmp_path / "build"
    compile_module(model, out, input_shape=SHAPE, timesteps=T, calibration=cifar_like(32, 0))
    art = load_artifact(out)
    q, meta = art.quant_graph, art.float_graph.meta
    assert q.node("input").signed
    assert meta["source_time_batched"] == (T if KINDS[kind].get("use_TEBN") else None)
    x = cifar_like(64, 1)
    source = run_source(model, x, T, source_neurons=meta["source_neurons"])
    ir = simulate_float(art.float_graph, x, T)
    for name, spikes in source.spikes.items():
        assert 0 < spikes.mean() < 1, name
        np.testing.assert_array_equal(ir.spikes[name], spikes, err_msg=name)
    np.testing.assert_allclose(ir.logits, source.logits, rtol=1e-6, atol=1e-9)
    x_int = quantize(q, x)
    assert_bit_exact(q, x_int[:2], T)
    fixed = simulate(q, x_int, T)
    spike_agreement = np.mean([np.mean(fixed.spikes[n] == s) for n, s in source.spikes.items()])
    prediction_agreement = np.mean(fixed.predictions == source.predictions)
    print(f"{kind}: spike agreement {spike_agreement:.4f}, prediction agreement {prediction_agreement:.3f}")
    assert spike_agreement > 0.97 and prediction_agreement >= 0.8


def test_voting_layer_folds_into_the_readout(builder) -> None:
    graph = module_to_graph(trained_like(builder.build(arch="cifarnet")), input_shape=SHAPE, timesteps=T)
    (last,) = graph.inputs_of("readout")
    w = graph.node(last).weight
    theta = graph.node(graph.inputs_of(last)[0]).theta
    expected = np.kron(np.eye(10), np.full((1, 10), 0.1)) * theta  # mean over 10 spikes * theta
    np.testing.assert_allclose(w, expected)


def test_cli_compiles_a_tebn_net_from_the_builder_in_the_clone(builder, tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(trained_like(builder.build(arch="resnet20", use_TEBN=True)).state_dict(), tmp_path / "snn.pth")
    np.save(tmp_path / "calib.npy", cifar_like(16, 2))
    args = [
        "compile",
        tmp_path / "snn.pth",
        "--model",
        f"{BUILDER}:build",
        "--model-kwargs",
        '{"use_TEBN": true}',
    ]
    args += ["--input-shape", "3,8,8", "--timesteps", str(T), "--calibration", tmp_path / "calib.npy"]
    try:
        res = CliRunner().invoke(
            app, [str(a) for a in [*args, "-o", tmp_path / "build"]], catch_exceptions=False
        )
        assert res.exit_code == 0, res.output
        assert load_artifact(tmp_path / "build").float_graph.meta["source_time_batched"] == T
        # the wrong step count for a time-batched net: one line naming the fix
        res = CliRunner().invoke(app, [str(a) for a in [*args[:-3], "2", *args[-2:], "-o", tmp_path / "b2"]])
        assert res.exit_code == 2 and "compile it with --timesteps 4, not 2" in " ".join(res.output.split())
    finally:
        _forget_clone()


def test_qcfs_ann_weights_refused_naming_the_conversion(builder, tmp_path: Path) -> None:
    from lmh_deploy.errors import InputError
    from lmh_deploy.pipeline.compile_torch import load_weights

    torch.save(builder.build(snn=False).state_dict(), tmp_path / "ann.pth")
    with pytest.raises(InputError, match=r"ann.pth: does not fit .*QCFS .*replace_QCFS_by_Lneuron") as info:
        load_weights(builder.build(), tmp_path / "ann.pth")
    assert "\n" not in str(info.value)


def test_qcfs_ann_and_sew_refused_in_one_line(builder) -> None:
    with pytest.raises(FrontendError, match=r"conv1\.2 \(QCFS\): .*replace_QCFS_by_Lneuron") as info:
        module_to_graph(builder.build(snn=False), input_shape=SHAPE, timesteps=T)
    assert "\n" not in str(info.value)
    sew = builder.build(arch="cifarnet")
    sew.sn1.use_SEW = True
    with pytest.raises(NeuronError, match=r"sn1 \(LearnableNeuron\): use_SEW=True .* not supported"):
        module_to_graph(sew, input_shape=SHAPE, timesteps=T)
