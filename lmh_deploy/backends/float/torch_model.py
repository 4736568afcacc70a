"""Stage 4c: the float PyTorch model, recorded in the same shape as the other backends."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lmh_deploy.backends.record import RunRecord
from lmh_deploy.models.neuron import LMHNeuron


@torch.no_grad()
def run_float(
    model: nn.Module, x: np.ndarray, timesteps: int, *, time_varying: bool | None = None
) -> RunRecord:
    """Run ``x`` through ``model``; spikes of the i-th neuron layer as ``lmh{i}``.

    ``x`` is static ``(B, *shape)`` (presented every step) or time-major frames
    ``(T', B, *shape)``, T' >= ``timesteps`` (frame ``t`` at step ``t``). ``time_varying``
    says which; ``None`` infers it as the model does (2-D/4-D inputs are static).
    """
    neurons = [m for m in model.modules() if isinstance(m, LMHNeuron)]
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        n.register_forward_hook(lambda mod, inp, out, key=f"lmh{i}": captured.__setitem__(key, out))
        for i, n in enumerate(neurons)
    ]
    try:
        model.eval()
        dtype = next(model.parameters()).dtype  # float64 models give a float64 reference
        if time_varying is None:
            time_varying = x.ndim not in (2, 4)
        if time_varying:
            x = x[:timesteps]
        out = model(torch.as_tensor(x, dtype=dtype), timesteps)
    finally:
        for h in hooks:
            h.remove()
    batch = x.shape[1] if time_varying else x.shape[0]
    rec = RunRecord(logits=out.mean(0).double().numpy(), readout_trace=out.double().numpy())
    for key, value in captured.items():
        rec.spikes[key] = (value.reshape(timesteps, batch, -1) > 0).numpy()
    return rec
