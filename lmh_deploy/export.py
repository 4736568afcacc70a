"""Stage 1: a trained PyTorch model -> float graph IR.

Walks ``model.layers`` (see :mod:`models.architectures`) in order. A Linear's
bias moves into the neuron it feeds (Loihi neurons have a bias; Dense has
none), the last Linear becomes the readout.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from lmh_deploy.ir import LMH, Dense, Graph, Input, IRError, Readout, validate
from models.neuron import LMHNeuron

SUPPORTED_LAYERS = ("Flatten", "Linear", "LMHNeuron", "Dropout", "Identity")


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def export_model(model: nn.Module, *, input_shape: tuple[int, ...], x_max: float = 1.0,
                 timesteps: int, meta: dict[str, Any] | None = None) -> Graph:
    """Export ``model`` to a validated float :class:`~lmh_deploy.ir.Graph`.

    Raises :class:`~lmh_deploy.ir.IRError` naming an unsupported layer (with the
    supported list) or any invalid value.
    """
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.Sequential):
        raise IRError(f"model {type(model).__name__} has no 'layers' Sequential to export")
    g = Graph(meta={"timesteps": int(timesteps), **(meta or {})})
    prev = g.add("input", Input(shape=tuple(int(d) for d in input_shape), x_max=float(x_max)))
    pending_bias: np.ndarray | None = None
    last_dense: str | None = None
    n_dense = n_lmh = 0
    for index, layer in enumerate(layers):
        lname = f"layers.{index} ({type(layer).__name__})"
        if isinstance(layer, (nn.Flatten, nn.Dropout, nn.Identity)):
            continue  # dense consumes the flattened input; dropout is identity at inference
        if isinstance(layer, nn.Linear):
            if pending_bias is not None:
                raise IRError(f"{lname}: two Linear layers without a neuron between them")
            prev = last_dense = g.add(f"dense{n_dense}", Dense(weight=_np(layer.weight)), (prev,))
            n_dense += 1
            pending_bias = (_np(layer.bias) if layer.bias is not None
                            else np.zeros(layer.out_features))
        elif isinstance(layer, LMHNeuron):
            if pending_bias is None:
                raise IRError(f"{lname}: a neuron must follow a Linear layer")
            table = {k: _np(v) for k, v in layer.factor_table().items()}
            prev = g.add(f"lmh{n_lmh}", LMH(size=len(pending_bias), theta=float(layer.theta),
                                            bias=pending_bias, **table), (prev,))
            n_lmh += 1
            pending_bias = None
        else:
            raise IRError(f"{lname}: unsupported layer type {type(layer).__name__}; "
                          f"supported: {', '.join(SUPPORTED_LAYERS)}")
    if pending_bias is None or last_dense is None:
        raise IRError("model must end with a Linear readout layer")
    g.add("readout", Readout(bias=pending_bias), (prev,))
    validate(g)
    return g
