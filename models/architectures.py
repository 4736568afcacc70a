"""Network architectures built from time-distributed layers and LM-H neurons.

Every network maps a static ``(B, C, H, W)`` (or ``(B, N)``) batch, repeated over
``T`` steps (direct encoding), or a time-major ``(T, B, C, H, W)`` batch to per-step
outputs ``(T, B, classes)``. The structure is a flat ``nn.Sequential`` in
``model.layers`` so that an exporter can walk it in order.

Time handling (:class:`SpikingNet`):

* Modules with state over time (:class:`~models.neuron.LMHNeuron`,
  :class:`ResidualBlock`) and time-major norms (:mod:`models.norm`, attribute
  ``time_major = True``) receive ``(T, B, ...)`` tensors; every other layer
  (Conv2d, Linear, AvgPool2d, Flatten, :class:`~models.qcfs.QCFS`, ...) receives
  ``(T*B, ...)``.
* A static input is not copied ``T`` times up front: the layers before the first
  stateful module see it once, as ``(1, B, ...)``, and their output is broadcast
  over ``T`` where the first neuron starts. The result is the same as running the
  repeated input through them (the per-step statistics of BN are identical for
  identical steps), at ``1/T`` of the cost.
* A network with no spiking neuron (``neuron="qcfs"``: an ANN) therefore never
  expands time: a static batch gives ``(1, B, classes)``; a time-major batch gives
  one output per frame. :func:`models.train.evaluate` averages over the first axis
  either way.

Architectures (``build(arch, input_shape, num_classes, **kwargs)``):

=========  ==================================================================
mlp        Flatten -> [Linear -> (norm) -> neuron] x len(hidden) -> Linear
cnn        [Conv3x3 -> norm -> neuron -> AvgPool2] x len(channels) -> Flatten -> Linear
vgg13      VGG-13 (64,64,P,128,128,P,256,256,P,512,512,P,512,512,P) with AvgPool,
           classifier Linear(4096) -> neuron -> Linear(4096) -> neuron -> Linear
resnet19   stem 64, stages (128 x3, s1), (256 x3, s2), (512 x2, s2) of
           :class:`ResidualBlock`, global AvgPool, Linear(256) -> neuron -> Linear
resnet20   stem 16, stages (16 x3, s1), (32 x3, s2), (64 x3, s2), global AvgPool, Linear
=========  ==================================================================

All widths are multiplied by ``width_mult``. Pooling by 2 is skipped once a feature
map is 1 pixel high or wide, so the same networks accept ``(1, 8, 8)``,
``(1, 28, 28)`` and ``(3, 32, 32)`` inputs. MaxPool is replaced by AvgPool as in the
paper's code. Every keyword argument is JSON-simple, so a checkpoint stores them
as ``arch_kwargs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import torch
from torch import nn

from lmh_deploy.choices import Neuron
from lmh_deploy.errors import InputError
from lmh_deploy.models.neuron import LMHNeuron, lif_neuron
from lmh_deploy.models.norm import RESIDUAL_ALPHA, make_norm
from lmh_deploy.models.qcfs import QCFS

NEURONS: tuple[str, ...] = tuple(n.value for n in Neuron)

#: an input shape or a list of layer widths
Sizes = tuple[int, ...]


def _time_major(layer: nn.Module) -> bool:
    return isinstance(layer, LMHNeuron) or getattr(layer, "time_major", False)


def _stateful(layer: nn.Module) -> bool:
    return any(isinstance(m, LMHNeuron) for m in layer.modules())


def apply_layer(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``layer`` on time-major ``x`` ``(T, B, ...)``: directly, or on ``(T*B, ...)``."""
    if _time_major(layer):
        return layer(x)
    t, b = x.shape[:2]
    y = layer(x.reshape(t * b, *x.shape[2:]))
    return y.reshape(t, b, *y.shape[1:])


class ResidualBlock(nn.Module):
    """Spiking basic block, time-major.

    ``out = neuron2(bn2(conv2(neuron1(bn1(conv1(x))))) + shortcut(x))``

    Attributes (for an exporter): ``conv1``, ``bn1``, ``neuron1``, ``conv2``, ``bn2``,
    ``shortcut``, ``neuron2``. ``bn1``/``bn2`` are :mod:`models.norm` layers or ``None``
    (``norm="none"``; the convolutions then have a bias). ``shortcut`` is ``None`` for
    the identity, else ``nn.Sequential(Conv2d 1x1 strided[, norm])``. With tdBN the two
    summed branches (``bn2`` and the shortcut norm) use ``alpha = 1/sqrt(2)``.
    ``neuron1``/``neuron2`` are LM-H neurons (or QCFS in the ANN).
    """

    time_major = True

    def __init__(
        self, cin: int, cout: int, stride: int, *, norm: str, act: Callable[[], nn.Module], theta: float = 1.0
    ) -> None:
        super().__init__()
        bias = norm == "none"
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)
        self.bn1 = make_norm(norm, cout, theta=theta)
        self.neuron1 = act()
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=bias)
        self.bn2 = make_norm(norm, cout, theta=theta, alpha=RESIDUAL_ALPHA)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            parts: list[nn.Module] = [nn.Conv2d(cin, cout, 1, stride=stride, bias=bias)]
            sc_norm = make_norm(norm, cout, theta=theta, alpha=RESIDUAL_ALPHA)
            if sc_norm is not None:
                parts.append(sc_norm)
            self.shortcut = nn.Sequential(*parts)
        self.neuron2 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, C, H, W)`` -> ``(T, B, C', H', W')``."""
        h = apply_layer(self.conv1, x)
        if self.bn1 is not None:
            h = self.bn1(h)
        h = apply_layer(self.neuron1, h)
        h = apply_layer(self.conv2, h)
        if self.bn2 is not None:
            h = self.bn2(h)
        sc = x
        if self.shortcut is not None:
            for layer in self.shortcut:
                sc = apply_layer(layer, sc)
        return apply_layer(self.neuron2, h + sc)


class SpikingNet(nn.Module):
    """A sequence of layers run time-major (see the module docstring for the time handling)."""

    def __init__(self, layers: list[nn.Module], *, timesteps: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.timesteps = timesteps

    def neurons(self) -> list[LMHNeuron]:
        """All LM-H neurons in order (those inside residual blocks included)."""
        return [m for m in self.modules() if isinstance(m, LMHNeuron)]

    @property
    def is_ann(self) -> bool:
        """True when the network has no spiking neuron (a QCFS ANN)."""
        return not self.neurons()

    def set_stateful(self, stateful: bool) -> None:
        """Carry neuron state across calls (time-slicing) or not; resets the state either way."""
        for n in self.neurons():
            n.stateful = stateful
            n.reset_state()

    def detach_state(self) -> None:
        """Cut the graph between time slices: neuron states keep their values, not their graph."""
        for n in self.neurons():
            n.detach_state()

    def forward(self, x: torch.Tensor, timesteps: int | None = None) -> torch.Tensor:
        """``(B, C, H, W)``/``(B, N)`` or time-major ``(T, B, ...)`` -> ``(T, B, classes)``."""
        steps = timesteps or self.timesteps
        static = x.dim() in (2, 4)
        h = x.unsqueeze(0) if static else x
        expanded = not static
        for layer in self.layers:
            if not expanded and _stateful(layer):
                h = h.expand(steps, *h.shape[1:])
                expanded = True
            h = apply_layer(layer, h)
        return h


def _pool_if_possible(layers: list[nn.Module], hw: tuple[int, int]) -> tuple[int, int]:
    """Append AvgPool2d(2) unless the map is already 1 pixel high or wide; new size."""
    if min(hw) < 2:
        return hw
    layers.append(nn.AvgPool2d(2))
    return hw[0] // 2, hw[1] // 2


def _spatial(input_shape: tuple[int, ...], arch: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise InputError(f"{arch}: needs (C, H, W) inputs, got input_shape {input_shape}")
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


class LayerKwargs(TypedDict, total=False):
    """The keywords every architecture takes besides its own (see :class:`LayerOptions`)."""

    neuron: str
    timesteps: int
    theta: float
    factors: str
    gamma: float
    lif_decay: float
    width_mult: float
    norm: str
    qcfs_levels: int


@dataclass(frozen=True)
class LayerOptions:
    """How every architecture builds its layers: which neuron and its options,
    the width multiplier and the normalisation (default: the architecture's ``DEFAULT_NORM``)."""

    neuron: str = "lmh"
    timesteps: int = 4
    theta: float = 1.0
    factors: str = "progressive"
    gamma: float = 1.0
    lif_decay: float = 0.5
    width_mult: float = 1.0
    norm: str = "bn"
    qcfs_levels: int = 4

    @classmethod
    def of(cls, arch: str, options: LayerKwargs) -> LayerOptions:
        """The options an architecture was called with, its default norm where none is given."""
        with_norm: LayerKwargs = {"norm": DEFAULT_NORM[arch], **options}
        resolved = cls(**with_norm)
        if resolved.neuron not in NEURONS:
            raise InputError(f"unknown neuron kind {resolved.neuron!r}; expected one of {', '.join(NEURONS)}")
        return resolved

    def act(self) -> nn.Module:
        """A new activation of ``--neuron``'s kind: ``lmh``, ``lif`` (spiking) or ``qcfs`` (ANN)."""
        if self.neuron == "lmh":
            return LMHNeuron(
                theta=self.theta, factors=self.factors, timesteps=self.timesteps, gamma=self.gamma
            )
        if self.neuron == "lif":  # the neuron Lava's LIF implements (deployable with --profile loihi-lif)
            return lif_neuron(theta=self.theta, decay=self.lif_decay, gamma=self.gamma)
        return QCFS(levels=self.qcfs_levels, theta=self.theta)

    def scaled(self, c: int) -> int:
        """A width multiplied by ``width_mult`` (at least 1)."""
        return max(1, int(round(c * self.width_mult)))

    def norm_layer(self, c: int) -> list[nn.Module]:
        """The normalisation of ``c`` channels or features, or nothing (``norm="none"``)."""
        layer = make_norm(self.norm, c, theta=self.theta)
        return [] if layer is None else [layer]

    def conv_block(self, cin: int, cout: int) -> list[nn.Module]:
        """Conv3x3 (biased only without norm) -> norm -> neuron."""
        conv = nn.Conv2d(cin, cout, 3, padding=1, bias=self.norm == "none")
        return [conv, *self.norm_layer(cout), self.act()]

    def net(self, layers: list[nn.Module]) -> SpikingNet:
        return SpikingNet(layers, timesteps=self.timesteps)


def mlp(
    input_shape: Sizes, num_classes: int, *, hidden: Sizes = (128, 128), **options: Unpack[LayerKwargs]
) -> SpikingNet:
    """Flatten -> [Linear -> (norm) -> neuron] x len(hidden) -> Linear readout."""
    o = LayerOptions.of("mlp", options)
    n_in = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        h = o.scaled(h)
        layers += [nn.Linear(n_in, h, bias=o.norm == "none"), *o.norm_layer(h), o.act()]
        n_in = h
    layers.append(nn.Linear(n_in, num_classes))
    return o.net(layers)


def cnn(
    input_shape: Sizes, num_classes: int, *, channels: Sizes = (32, 64), **options: Unpack[LayerKwargs]
) -> SpikingNet:
    """[Conv3x3 -> norm -> neuron -> AvgPool2] x len(channels) -> Flatten -> Linear readout."""
    o = LayerOptions.of("cnn", options)
    cin, h, w = _spatial(input_shape, "cnn")
    layers: list[nn.Module] = []
    for c in channels:
        c = o.scaled(c)
        layers += o.conv_block(cin, c)
        h, w = _pool_if_possible(layers, (h, w))
        cin = c
    layers += [nn.Flatten(), nn.Linear(cin * h * w, num_classes)]
    return o.net(layers)


VGG13_CFG: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))


def vgg13(
    input_shape: Sizes, num_classes: int, *, classifier: int = 4096, **options: Unpack[LayerKwargs]
) -> SpikingNet:
    """VGG-13 as in the QCFS / LM-H code (CIFAR classifier 4096-4096), AvgPool for MaxPool."""
    o = LayerOptions.of("vgg13", options)
    cin, h, w = _spatial(input_shape, "vgg13")
    layers: list[nn.Module] = []
    for stage in VGG13_CFG:
        for c in stage:
            c = o.scaled(c)
            layers += o.conv_block(cin, c)
            cin = c
        h, w = _pool_if_possible(layers, (h, w))
    hidden = o.scaled(classifier)
    layers += [nn.Flatten(), nn.Linear(cin * h * w, hidden), o.act(), nn.Linear(hidden, hidden), o.act()]
    layers.append(nn.Linear(hidden, num_classes))
    return o.net(layers)


def _resnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    o: LayerOptions,
    *,
    arch: str,
    stem: int,
    stages: tuple[tuple[int, int, int], ...],
    fc_hidden: int | None,
) -> SpikingNet:
    cin, _, _ = _spatial(input_shape, arch)
    c = o.scaled(stem)
    layers: list[nn.Module] = o.conv_block(cin, c)
    cin = c
    for width, blocks, stride in stages:
        cout = o.scaled(width)
        for i in range(blocks):
            block_stride = stride if i == 0 else 1
            layers.append(ResidualBlock(cin, cout, block_stride, norm=o.norm, act=o.act, theta=o.theta))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if fc_hidden:
        hidden = o.scaled(fc_hidden)
        layers += [nn.Linear(cin, hidden), o.act()]
        cin = hidden
    layers.append(nn.Linear(cin, num_classes))
    return o.net(layers)


def resnet19(input_shape: tuple[int, ...], num_classes: int, **options: Unpack[LayerKwargs]) -> SpikingNet:
    """ResNet-19 (tdBN / TET / LM-H papers): stem 64, (128,3,s1) (256,3,s2) (512,2,s2), fc 256."""
    o = LayerOptions.of("resnet19", options)
    stages = ((128, 3, 1), (256, 3, 2), (512, 2, 2))
    return _resnet(input_shape, num_classes, o, arch="resnet19", stem=64, stages=stages, fc_hidden=256)


def resnet20(input_shape: tuple[int, ...], num_classes: int, **options: Unpack[LayerKwargs]) -> SpikingNet:
    """CIFAR ResNet-20 (QCFS / LM-H hybrid experiments): stem 16, (16,3,s1) (32,3,s2) (64,3,s2)."""
    o = LayerOptions.of("resnet20", options)
    stages = ((16, 3, 1), (32, 3, 2), (64, 3, 2))
    return _resnet(input_shape, num_classes, o, arch="resnet20", stem=16, stages=stages, fc_hidden=None)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "vgg13": vgg13,
    "resnet19": resnet19,
    "resnet20": resnet20,
}

#: norm of each architecture when a job asks for ``norm="auto"``.
DEFAULT_NORM = {"mlp": "none", "cnn": "bn", "vgg13": "bn", "resnet19": "bn", "resnet20": "bn"}


def build(arch: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a named architecture; unknown names list the supported ones."""
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; supported: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](tuple(input_shape), num_classes, **kwargs)
