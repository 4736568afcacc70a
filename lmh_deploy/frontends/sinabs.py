"""sinabs ``LIF`` / ``LIFSqueeze`` with ``norm_input=True`` (sinabs's default) and a per-neuron
``tau_mem``: the input gain ``1 - alpha`` differs per neuron, so it cannot become the
membrane's unit (one threshold per layer, :mod:`lmh_deploy.frontends.neurons.sinabs`).

sinabs charges ``v = alpha v + (1 - alpha) x`` with ``x`` the whole output of the layer before
(weights and bias); ``(1 - alpha_i) x_i`` is that layer with row ``i`` (output channel ``i``
of a convolution) times ``1 - alpha_i``. :func:`fold_norm_input` returns a copy of the network
with the gain folded into the rows of the ``nn.Linear`` / ``nn.Conv2d`` right before each such
layer in an ``nn.Sequential`` (a convolution only where ``tau_mem`` is one value per output
channel) and ``norm_input=False`` on the copy's neuron, the same charge exactly, as the
rockpool view folds ``LIFTorch``'s per-neuron input gain (:mod:`.rockpool`). The copy is what
is traced; module paths are unchanged, and ``verify`` runs the user's network itself. Layers it
cannot fold are left as they are, and the adapter refuses them in one line.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from lmh_deploy.frontends.neurons.sinabs import per_neuron_input_gain


def _row_gain(prev: nn.Module, gain: np.ndarray) -> np.ndarray | None:
    """``gain`` as one value per output row of ``prev`` (a Linear's features, a Conv2d's
    channels), or None where the rows do not map one-to-one onto the neurons."""
    if type(prev) is nn.Linear and gain.size == prev.out_features:
        return gain.reshape(-1)
    if type(prev) is nn.Conv2d and gain.ndim == 3 and gain.shape[0] == prev.out_channels:
        per_channel = gain.reshape(gain.shape[0], -1)
        if np.all(per_channel == per_channel[:, :1]):
            return per_channel[:, 0].copy()
    return None


def fold_norm_input(module: nn.Module) -> nn.Module:
    """``module`` itself, or a copy with each foldable per-neuron ``norm_input`` gain folded
    into the layer before the neuron (module docstring)."""
    folds: list[tuple[str, int, np.ndarray]] = []
    for path, seq in module.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.children())
        for i in range(1, len(children)):
            gain = per_neuron_input_gain(children[i])
            rows = None if gain is None else _row_gain(children[i - 1], gain)
            if rows is not None:
                folds.append((path, i, rows))
    if not folds:
        return module
    module = copy.deepcopy(module)
    for path, i, rows in folds:
        prev, neuron = list(module.get_submodule(path).children())[i - 1 : i + 1]
        assert isinstance(prev, (nn.Linear, nn.Conv2d))
        scale = torch.as_tensor(rows, dtype=torch.float64)
        prev.double()  # the product in float64, as the IR holds it (the copy is only traced)
        with torch.no_grad():
            prev.weight.mul_(scale.reshape(-1, *([1] * (prev.weight.ndim - 1))))
            if prev.bias is not None:
                prev.bias.mul_(scale)
        setattr(neuron, "norm_input", False)  # noqa: B010 (a sinabs attribute mypy cannot see)
    return module
