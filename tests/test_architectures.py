"""Architectures, time handling, normalisation layers (and their fold algebra) and QCFS."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from lmh_deploy.models.architectures import ARCHITECTURES, ResidualBlock, SpikingNet, apply_layer, build, mlp
from lmh_deploy.models.checkpoint import load_checkpoint, save_checkpoint
from lmh_deploy.models.neuron import LMHNeuron
from lmh_deploy.models.norm import StepBatchNorm, ThresholdDependentBatchNorm, fold_into, make_norm
from lmh_deploy.models.qcfs import QCFS, qcfs

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every norm layer non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (StepBatchNorm, ThresholdDependentBatchNorm)):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.3)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "mlp"])
def test_every_arch_builds_and_runs_on_every_input_shape(arch: str) -> None:
    torch.manual_seed(0)
    for shape in SHAPES:
        for neuron in ("lmh", "qcfs"):
            model = build(arch, shape, 7, neuron=neuron, timesteps=2, width_mult=0.125)
            out = model(torch.rand(2, *shape))
            # a spiking net has one output per step; the QCFS ANN ignores time (one output)
            assert out.shape == ((2, 2, 7) if neuron == "lmh" else (1, 2, 7)), (arch, shape)
            assert torch.isfinite(out).all()
        # a backward pass reaches the first layer
        model = build(arch, shape, 7, neuron="lmh", timesteps=2, width_mult=0.125)
        model(torch.rand(2, *shape)).sum().backward()
        first = next(m for m in model.layers if isinstance(m, nn.Conv2d))
        assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_paper_architectures_have_the_paper_depth() -> None:
    def weight_layers(model: nn.Module) -> int:
        return sum(
            isinstance(m, (nn.Conv2d, nn.Linear)) and not _is_shortcut(model, m) for m in model.modules()
        )

    def _is_shortcut(model: nn.Module, layer: nn.Module) -> bool:
        return any(
            b.shortcut is not None and any(layer is s for s in b.shortcut)
            for b in model.modules()
            if isinstance(b, ResidualBlock)
        )

    shape = (3, 32, 32)
    assert weight_layers(build("vgg13", shape, 10, width_mult=0.125)) == 13
    assert weight_layers(build("resnet19", shape, 10, width_mult=0.125)) == 19
    assert weight_layers(build("resnet20", shape, 10, width_mult=0.125)) == 20
    # AvgPool only, never MaxPool (the paper's code)
    for arch in ("cnn", "vgg13", "resnet19", "resnet20"):
        model = build(arch, shape, 10, width_mult=0.125)
        assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    # pooling stops at 1x1, so vgg13 on 8x8 pools 3 times, on 32x32 five times
    pools = lambda m: sum(isinstance(x, nn.AvgPool2d) for x in m.modules())
    assert pools(build("vgg13", (1, 8, 8), 10, width_mult=0.125)) == 3
    assert pools(build("vgg13", (3, 32, 32), 10, width_mult=0.125)) == 5


def test_mlp_default_is_unchanged_and_exportable() -> None:
    """The default mlp keeps its layer list (Flatten, Linear, neuron, ..., Linear)."""
    from lmh_deploy.frontends.pytorch import export_model

    model = build("mlp", (1, 8, 8), 10, neuron="lmh", factors="progressive", timesteps=4, width_mult=1.0)
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["Flatten", "Linear", "LMHNeuron", "Linear", "LMHNeuron", "Linear"]
    assert model.layers[1].out_features == 128 and model.layers[1].bias is not None
    graph = export_model(model, input_shape=(1, 8, 8), timesteps=4)
    assert graph is not None
    assert isinstance(mlp((64,), 10), SpikingNet)


# --------------------------------------------------------------------------- time handling


@pytest.mark.parametrize("norm", ["bn", "tdbn"])
def test_static_input_equals_explicit_repetition(norm: str) -> None:
    """Running the pre-neuron layers once and broadcasting equals feeding T copies."""
    torch.manual_seed(1)
    model = build("cnn", (1, 8, 8), 5, timesteps=3, width_mult=0.25, norm=norm)
    twin = copy.deepcopy(model)
    x = torch.rand(6, 1, 8, 8)
    model.train(), twin.train()
    a = model(x)
    b = twin(x.unsqueeze(0).expand(3, *x.shape).contiguous())
    assert a.shape == b.shape == (3, 6, 5)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    model.eval(), twin.eval()
    torch.testing.assert_close(model(x), twin(x.unsqueeze(0).repeat(3, 1, 1, 1, 1)))


def test_time_major_input_gives_one_output_per_frame() -> None:
    torch.manual_seed(0)
    model = build("cnn", (2, 8, 8), 4, timesteps=3, width_mult=0.25).eval()
    out = model(torch.rand(5, 3, 2, 8, 8))
    assert out.shape == (5, 3, 4)
    ann = build("cnn", (2, 8, 8), 4, neuron="qcfs", width_mult=0.25).eval()
    assert ann(torch.rand(5, 3, 2, 8, 8)).shape == (5, 3, 4)


def test_residual_block_matches_its_documented_formula() -> None:
    torch.manual_seed(3)
    act = lambda: LMHNeuron(theta=0.7)
    for cin, cout, stride, norm in [(4, 4, 1, "bn"), (4, 6, 2, "tdbn"), (3, 3, 1, "none")]:
        block = ResidualBlock(cin, cout, stride, norm=norm, act=act, theta=0.7)
        for name in ("conv1", "bn1", "neuron1", "conv2", "bn2", "shortcut", "neuron2"):
            assert hasattr(block, name)
        assert (block.shortcut is None) == (stride == 1 and cin == cout)
        _randomise_norms(block)
        block.eval()
        x = (torch.rand(3, 2, cin, 6, 6) > 0.5).float()
        out = block(x)
        t, b = x.shape[:2]

        def flat(m, v):
            y = m(v.flatten(0, 1))
            return y.reshape(t, b, *y.shape[1:])

        h = flat(block.conv1, x)
        h = block.bn1(h) if block.bn1 is not None else h
        h = block.neuron1(h)
        h = flat(block.conv2, h)
        h = block.bn2(h) if block.bn2 is not None else h
        sc = x
        if block.shortcut is not None:
            sc = flat(block.shortcut[0], x)
            if len(block.shortcut) > 1:
                sc = block.shortcut[1](sc)
        torch.testing.assert_close(out, block.neuron2(h + sc))
        assert out.shape == (3, 2, cout, 6 // stride, 6 // stride)


def test_apply_layer_flattens_only_stateless_layers() -> None:
    seen = {}

    class Probe(nn.Module):
        def forward(self, x):
            seen["shape"] = tuple(x.shape)
            return x

    apply_layer(Probe(), torch.zeros(3, 2, 5))
    assert seen["shape"] == (6, 5)
    assert apply_layer(LMHNeuron(), torch.zeros(3, 2, 5)).shape == (3, 2, 5)


# --------------------------------------------------------------------------- norms


def test_step_bn_normalises_each_step_and_tdbn_all_steps_jointly() -> None:
    torch.manual_seed(0)
    # step t has mean 3t and std (1 + t)
    x = torch.stack([torch.randn(64, 4, 5, 5) * (1 + t) + 3 * t for t in range(3)])
    bn, td = StepBatchNorm(4).train(), ThresholdDependentBatchNorm(4, alpha=0.5, theta=2.0).train()
    yb, yt = bn(x), td(x)
    for t in range(3):  # vanilla BN: every step has zero mean, unit variance per channel
        torch.testing.assert_close(yb[t].mean((0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
        torch.testing.assert_close(yb[t].var((0, 2, 3), unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    # tdBN: statistics over (T, B, H, W), scaled by alpha * theta = 1
    torch.testing.assert_close(yt.mean((0, 1, 3, 4)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(yt.var((0, 1, 3, 4), unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    assert yt[0].mean() < -0.5 < 0.5 < yt[2].mean()  # the steps are not re-centred one by one
    td2 = ThresholdDependentBatchNorm(4, alpha=1 / math.sqrt(2), theta=1.5).train()
    assert td2(x).std().item() == pytest.approx(1.5 / math.sqrt(2), rel=1e-2)


@pytest.mark.parametrize("kind", ["bn", "tdbn"])
def test_norm_folds_into_the_preceding_layer(kind: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    norm = make_norm(kind, 4, theta=1.7, alpha=1 / math.sqrt(2))
    _randomise_norms(nn.Sequential(norm), seed=5)
    norm.eval()
    x = torch.randn(2, 5, 3, 6, 6)
    ref = norm(conv(x.flatten(0, 1)).reshape(2, 5, 4, 6, 6))
    w, b = fold_into(conv, norm)
    folded = nn.functional.conv2d(x.flatten(0, 1), w, b, padding=1).reshape(2, 5, 4, 6, 6)
    torch.testing.assert_close(folded, ref, rtol=1e-5, atol=1e-5)
    # and by the documented formula from the standard attribute names
    scale = norm.weight * norm.alpha_theta / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - scale * norm.running_mean
    s2, b2 = norm.scale_shift()
    torch.testing.assert_close(s2, scale), torch.testing.assert_close(b2, shift)
    assert isinstance(norm, nn.modules.batchnorm._BatchNorm)
    lin = nn.Linear(3, 4)
    n1 = make_norm(kind, 4)
    _randomise_norms(nn.Sequential(n1), seed=6)
    n1.eval()
    xl = torch.randn(2, 5, 3)
    w, b = fold_into(lin, n1)
    torch.testing.assert_close(nn.functional.linear(xl, w, b), n1(lin(xl)), rtol=1e-5, atol=1e-5)


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="supported"):
        build("resnet99", (1, 8, 8), 10)
    with pytest.raises(ValueError, match="neuron"):
        build("cnn", (1, 8, 8), 10, neuron="relu")
    with pytest.raises(ValueError, match="norm"):
        build("cnn", (1, 8, 8), 10, norm="layernorm")


# --------------------------------------------------------------------------- QCFS


def test_qcfs_by_hand_and_straight_through_gradient() -> None:
    theta = torch.tensor(2.0, requires_grad=True)
    x = torch.tensor([-1.0, 0.2, 0.26, 0.8, 1.3, 1.9, 2.3, 5.0], requires_grad=True)
    # L = 4, theta = 2: q = floor(2x + 1/2) = -2, 0, 1, 2, 3, 4, 5, 10 -> clip 0..4 -> * 0.5
    out = qcfs(x, theta, 4)
    assert out.tolist() == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    out.sum().backward()
    # floor passes the gradient straight through; the clip (inclusive at 0 and L) does not
    # beyond: d a / d x = 1 where 0 <= q <= L (x = 0.2 .. 1.9), else 0
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    # d a / d theta = -x/theta + q/L inside, q/L = 1 above, 0 below:
    # 0 - 0.1 + (-0.13 + 0.25) + (-0.4 + 0.5) + (-0.65 + 0.75) + (-0.95 + 1) + 1 + 1 = 2.27
    assert theta.grad.item() == pytest.approx(2.27, abs=1e-6)
    layer = QCFS(levels=4, theta=1.0)
    assert isinstance(layer.theta, nn.Parameter)
    assert torch.equal(layer(torch.tensor([0.3, 0.6])), torch.tensor([0.25, 0.5]))


def test_checkpoint_roundtrip_of_new_architectures(tmp_path) -> None:
    torch.manual_seed(0)
    for arch, kwargs in [
        ("cnn", {"norm": "tdbn"}),
        ("resnet20", {"neuron": "lif"}),
        ("mlp", {"neuron": "qcfs", "qcfs_levels": 8, "norm": "bn"}),
    ]:
        kwargs = {"timesteps": 2, "width_mult": 0.125, **kwargs}
        json.dumps(kwargs)  # arch_kwargs must be JSON-simple
        model = build(arch, (1, 8, 8), 10, **kwargs)
        _randomise_norms(model)
        model.eval()
        path = tmp_path / f"{arch}.pt"
        save_checkpoint(
            path,
            model,
            arch=arch,
            arch_kwargs=kwargs,
            dataset={"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10},
        )
        again, _ = load_checkpoint(path)
        x = torch.rand(3, 1, 8, 8)
        torch.testing.assert_close(again(x), model(x))
