"""Stage 1: a trained PyTorch model -> float graph IR.

Walks ``model.layers`` (see :mod:`models.architectures`) in order, residual blocks
included. Every synaptic op becomes one IR node; batch norm is folded into the
preceding Linear/Conv weights; biases are tracked as a full array over the current
feature map and pushed through each following linear op (``L(x + b) = Lx + Lb``),
then handed to the neuron they reach (Loihi neurons have a bias, synapses have
none). The last Linear becomes the readout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from lmh_deploy.ir import (
    LMH,
    AvgPool,
    Conv2d,
    Dense,
    Graph,
    Input,
    IRError,
    MaxPool,
    Node,
    Readout,
    validate,
)
from lmh_deploy.ir.synapses import apply_synapse
from lmh_deploy.models.neuron import LMHNeuron
from lmh_deploy.models.norm import fold_affine, norm_affine

SUPPORTED_LAYERS = (
    "Flatten",
    "Linear",
    "Conv2d",
    "BatchNorm1d/2d",
    "StepBatchNorm",
    "ThresholdDependentBatchNorm",
    "AvgPool2d",
    "AdaptiveAvgPool2d(1)",
    "MaxPool2d (after a Conv2d, before the neuron)",
    "LMHNeuron",
    "ResidualBlock",
    "Dropout",
    "Identity",
)


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass
class Cursor:
    """Where the walk is: the node producing the current signal, its shape, the pending bias."""

    node: str
    shape: tuple[int, ...]
    bias: np.ndarray  # over ``shape``: constant input added so far to the signal
    weight_node: str | None = None  # last Linear/Conv since a neuron (target of BN folding)


class GraphBuilder:
    """Adds IR nodes under numbered names (`dense0`, `lmh0`, ...); shared by every frontend."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.counts: dict[str, int] = {}

    def add(self, prefix: str, node: Node, inputs: tuple[str, ...]) -> str:
        index = self.counts.get(prefix, 0)
        self.counts[prefix] = index + 1
        return self.g.add(f"{prefix}{index}", node, inputs)

    def synapse(
        self,
        cur: Cursor,
        prefix: str,
        node: Node,
        out_shape: tuple[int, ...],
        own_bias: np.ndarray | None = None,
        weight: bool = False,
    ) -> Cursor:
        """Append a synapse node; push the pending bias through it."""
        name = self.add(prefix, node, (cur.node,))
        bias = apply_synapse(node, cur.bias.reshape(1, -1)).reshape(out_shape)
        if own_bias is not None:
            bias = bias + own_bias
        return Cursor(name, out_shape, bias, name if weight else None)

    def fold_norm(self, cur: Cursor, layer: nn.Module, where: str) -> Cursor:
        """``y = scale * x + shift`` per channel, folded into the last weight node."""
        if cur.weight_node is None:
            raise IRError(f"{where}: batch norm must follow a Linear or Conv2d to be folded")
        scale, shift = (_np(t) for t in norm_affine(layer))
        if self.g.node(cur.node).kind == "maxpool" and np.any(scale < 0):
            # BN(max x) = max(BN x) only where the scale is >= 0 (else it is a min)
            channel = int(np.flatnonzero(scale < 0)[0])
            raise IRError(
                f"{where}: batch norm after a max pool has a negative scale {scale[channel]:.4g} "
                f"in channel {channel} (it would turn the max into a min); put the batch norm "
                f"before the MaxPool2d"
            )
        node = self.g.node(cur.weight_node)
        if len(scale) != node.weight.shape[0]:
            raise IRError(
                f"{where}: batch norm has {len(scale)} channels, {cur.weight_node} has {node.weight.shape[0]}"
            )
        folded, bias = fold_affine(node.weight, cur.bias, scale, shift)
        self.g.replace(cur.weight_node, weight=folded)
        return Cursor(cur.node, cur.shape, bias, cur.weight_node)

    def max_pool(self, layer: nn.MaxPool2d, cur: Cursor, where: str) -> Cursor:
        """A ``MaxPool2d`` of the currents of the convolution before it (a ``MaxPool`` node
        ending the synapse chain): exact where the pending bias is one value per channel,
        ``max(x + b) = max(x) + b``; the BN before it is already in the weights."""
        if len(cur.shape) != 3 or self.g.node(cur.node).kind != "conv2d":
            raise IRError(
                f"{where}: a MaxPool2d of currents must follow a Conv2d (and its BatchNorm2d), "
                f"got a {self.g.node(cur.node).kind} output of shape {cur.shape}"
            )
        if layer.return_indices:
            raise IRError(f"{where}: MaxPool2d with return_indices is not supported")
        per_channel = cur.bias.reshape(cur.shape[0], -1)
        if not np.allclose(per_channel, per_channel[:, :1], rtol=0, atol=1e-12):
            raise IRError(
                f"{where}: the bias before the max pool varies within a channel; only a "
                f"per-channel bias (Conv2d bias, BatchNorm2d) passes through the max exactly"
            )
        node = MaxPool(
            input_shape=tuple(cur.shape),
            kernel=_pair(layer.kernel_size),
            stride=_pair(layer.stride or layer.kernel_size),
            padding=_pair(layer.padding),
            dilation=_pair(layer.dilation),
            ceil_mode=bool(layer.ceil_mode),
        )
        node.check(where)
        pooled = self.synapse(cur, "maxpool", node, node.output_shape)
        return Cursor(pooled.node, pooled.shape, pooled.bias, cur.weight_node)

    def neuron(self, inputs: list[Cursor], layer: LMHNeuron, where: str) -> Cursor:
        shape = inputs[0].shape
        if any(c.shape != shape for c in inputs):
            raise IRError(f"{where}: summed branches have shapes {[c.shape for c in inputs]}")
        table: dict[str, Any] = {k: _np(v) for k, v in layer.factor_table().items()}
        bias = np.sum([c.bias for c in inputs], axis=0)
        size = int(np.prod(shape))
        rules = layer.rules() if hasattr(layer, "rules") else {}  # the model's own neuron rules
        name = self.add(
            "lmh",
            LMH(size=size, theta=float(layer.theta), bias=bias.ravel(), **table, **rules),
            tuple(c.node for c in inputs),
        )
        return Cursor(name, shape, np.zeros(shape))

    def walk(self, layers, cur: Cursor, where: str) -> Cursor:
        for index, layer in enumerate(layers):
            here = f"{where}.{index} ({type(layer).__name__})"
            cur = self.layer(layer, cur, here)
        return cur

    def layer(self, layer: nn.Module, cur: Cursor, here: str) -> Cursor:
        if layer is None or isinstance(layer, (nn.Dropout, nn.Identity)):
            return cur
        pooled = self.g.node(cur.node).kind == "maxpool"
        if pooled and isinstance(layer, (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            raise IRError(
                f"{here}: follows a MaxPool2d of currents ({cur.node}); a max pool of currents "
                f"must feed a spiking neuron directly"
            )
        if isinstance(layer, nn.MaxPool2d):
            return self.max_pool(layer, cur, here)
        if isinstance(layer, nn.Flatten):
            n = int(np.prod(cur.shape))
            return Cursor(cur.node, (n,), cur.bias.reshape(n), cur.weight_node)
        if isinstance(layer, nn.Linear):
            if len(cur.shape) != 1:
                raise IRError(f"{here}: Linear needs a flattened input, got shape {cur.shape}")
            own: np.ndarray | None = _np(layer.bias) if layer.bias is not None else None
            return self.synapse(
                cur, "dense", Dense(weight=_np(layer.weight)), (layer.out_features,), own, weight=True
            )
        if isinstance(layer, nn.Conv2d):
            if len(cur.shape) != 3:
                # most often a flat --input-shape (64) given for a net that starts with a conv
                fix = (
                    "; give --input-shape as C,H,W (e.g. 1,8,8)"
                    if cur.node in self.g.of_kind("input") and cur.shape == self.g.node(cur.node).shape
                    else "; a Conv2d after a Flatten or Linear has no map to convolve"
                )
                raise IRError(f"{here}: Conv2d needs a (C, H, W) input, got shape {cur.shape}{fix}")
            if (
                layer.groups != 1
                or _pair(layer.dilation) != (1, 1)
                or layer.padding_mode != "zeros"
                or isinstance(layer.padding, str)
            ):
                raise IRError(
                    f"{here}: only zero-padded, ungrouped, undilated Conv2d with numeric padding is supported"
                )
            node: Conv2d | AvgPool = Conv2d(
                weight=_np(layer.weight),
                input_shape=tuple(cur.shape),
                stride=_pair(layer.stride),
                padding=_pair(layer.padding),
            )
            own = None
            if layer.bias is not None:
                own = np.broadcast_to(_np(layer.bias)[:, None, None], node.output_shape)
            return self.synapse(cur, "conv", node, node.output_shape, own, weight=True)
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) or hasattr(layer, "scale_shift"):
            return self.fold_norm(cur, layer, here)
        if isinstance(layer, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            if len(cur.shape) != 3:
                raise IRError(f"{here}: pooling needs a (C, H, W) map, got {cur.shape}")
            if isinstance(layer, nn.AdaptiveAvgPool2d):
                if _pair(layer.output_size) != (1, 1):
                    raise IRError(f"{here}: only AdaptiveAvgPool2d(1) is supported")
                kernel = stride = (cur.shape[1], cur.shape[2])
            else:
                if _pair(layer.padding) != (0, 0) or layer.ceil_mode or layer.divisor_override:
                    raise IRError(
                        f"{here}: AvgPool2d with padding, ceil_mode or divisor_override is not supported"
                    )
                kernel = _pair(layer.kernel_size)
                stride = _pair(layer.stride or layer.kernel_size)
            node = AvgPool(input_shape=tuple(cur.shape), kernel=kernel, stride=stride)
            return self.synapse(cur, "pool", node, node.output_shape)
        if isinstance(layer, LMHNeuron):
            if cur.node in self.g.of_kind("input") or self.g.node(cur.node).kind == "lmh":
                raise IRError(f"{here}: a neuron must follow a synaptic layer")
            return self.neuron([cur], layer, here)
        if type(layer).__name__ == "ResidualBlock":
            return self.residual(layer, cur, here)
        if isinstance(layer, nn.Sequential):
            return self.walk(layer, cur, here)
        raise IRError(
            f"{here}: unsupported layer type {type(layer).__name__}; supported: {', '.join(SUPPORTED_LAYERS)}"
        )

    def residual(self, block: nn.Module, x: Cursor, here: str) -> Cursor:
        """``neuron2(bn2(conv2(neuron1(bn1(conv1(x))))) + shortcut(x))`` as two synapse chains."""
        if np.any(x.bias):
            raise IRError(f"{here}: a residual block must take neuron spikes as input")
        h = self.walk([block.conv1, block.bn1, block.neuron1, block.conv2, block.bn2], x, here)
        if block.shortcut is None:  # identity: a 1x1 convolution with the identity matrix
            c = x.shape[0]
            eye = np.eye(c).reshape(c, c, 1, 1)
            s = self.synapse(x, "conv", Conv2d(weight=eye, input_shape=tuple(x.shape)), x.shape)
        else:
            s = self.walk(block.shortcut, x, f"{here}.shortcut")
        if not isinstance(block.neuron2, LMHNeuron):
            raise IRError(f"{here}: neuron2 is {type(block.neuron2).__name__}, not LMHNeuron")
        return self.neuron([h, s], block.neuron2, f"{here}.neuron2")


def export_model(
    model: nn.Module,
    *,
    input_shape: tuple[int, ...],
    x_max: float = 1.0,
    timesteps: int,
    meta: dict[str, Any] | None = None,
    spikes: bool = False,
) -> Graph:
    """Export ``model`` to a validated float :class:`~lmh_deploy.ir.Graph`.

    ``spikes``: the inputs are binary event frames (``Input.spikes``), sent as spikes.

    Raises :class:`~lmh_deploy.ir.IRError` naming an unsupported layer (with the
    supported list) or any invalid value.
    """
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.Sequential):
        raise IRError(f"model {type(model).__name__} has no 'layers' Sequential to export")
    g = Graph(meta={"timesteps": int(timesteps), **(meta or {})})
    shape = tuple(int(d) for d in input_shape)
    start = Cursor(
        g.add("input", Input(shape=shape, x_max=float(x_max), spikes=bool(spikes))), shape, np.zeros(shape)
    )
    exporter = GraphBuilder(g)
    end = exporter.walk(layers, start, "layers")
    if end.weight_node is None or g.node(end.node).kind != "dense":
        raise IRError("model must end with a Linear readout layer")
    g.add("readout", Readout(bias=end.bias.ravel()), (end.node,))
    validate(g)
    return g
