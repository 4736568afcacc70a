"""rockpool networks: a ``Sequential`` of ``LinearTorch`` and ``LIFTorch`` modules, as rockpool's
tutorials build them (``Sequential(LinearTorch((64, 32)), LIFTorch(32, ...), ...)``).

A rockpool module takes ``(batch, time, channels)`` and returns ``(output, state, record)``;
its neurons keep only batch element 0's state between calls, so the source run calls the net
once on the input repeated over time (``graph.meta["source_batch_time"]``; see
:func:`lmh_deploy.backends.float.torch_source.run_source`). :func:`per_step_view` is the same
network as one torch step per call, which the fx frontend traces: each ``LinearTorch`` becomes
an ``nn.Linear`` (its ``(in, out)`` weight transposed) with the next ``LIFTorch``'s input gain
``beta / threshold`` folded into its rows (:mod:`lmh_deploy.frontends.neurons.rockpool`), each
``LIFTorch`` stays itself (its adapter maps it), under the same child names, so the module
paths of the view are those of the network. Rockpool users save a network with
``net.save("net.json")`` (its parameters as JSON; :func:`load_json`), or a ``state_dict``.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmh_deploy.errors import InputError
from lmh_deploy.frontends.neurons import NeuronError, find_adapter, unsupported_neuron
from lmh_deploy.frontends.neurons.rockpool import SUPPORTED, input_gain

SEQUENTIAL_MODULE = "rockpool.nn.combinators.sequential"
LINEAR_MODULE = "rockpool.nn.modules.torch.linear_torch"


def _rockpool_class(module: str, name: str) -> type | None:
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def is_rockpool_network(module: Any) -> bool:
    """A rockpool ``Sequential`` of torch modules (rockpool already imported by its builder)."""
    cls = _rockpool_class(SEQUENTIAL_MODULE, "TorchSequential")
    return cls is not None and isinstance(module, cls)


def per_step_view(module: nn.Module) -> nn.Module:
    """``module`` itself, or for a rockpool ``Sequential`` its per-step view (module docstring).
    Anything but ``LinearTorch`` and a ``LIFTorch`` right after one is refused in one line."""
    if not is_rockpool_network(module):
        return module
    linear = _rockpool_class(LINEAR_MODULE, "LinearTorch")
    names = [name for name, _ in module.named_children()]  # in the order Sequential runs them
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, name in enumerate(names):
        child = getattr(module, name)
        here = f"{name} ({type(child).__name__})"
        after = getattr(module, names[i + 1]) if i + 1 < len(names) else None
        if type(child) is linear:
            gain = None
            if after is not None and find_adapter(after) is not None:
                gain = torch.as_tensor(input_gain(after, f"{names[i + 1]} ({type(after).__name__})"))
            layers[name] = _as_linear(child, gain)
        elif find_adapter(child) is not None:
            if i == 0 or not isinstance(layers[names[i - 1]], nn.Linear):
                raise NeuronError(
                    f"{here}: a LIFTorch must follow a LinearTorch (its synaptic decay is folded "
                    f"into those weights); supported: {SUPPORTED}"
                )
            layers[name] = child
        else:
            why = unsupported_neuron(child) or f"not mapped by the rockpool frontend; supported: {SUPPORTED}"
            raise NeuronError(f"{here}: {why}")
    return _Steps(layers).eval()


class _Steps(nn.Sequential):
    """The view's layers in order; a rockpool module's call returns ``(output, state,
    record)``: its output goes on (the state reads are left unused, and dropped)."""

    def forward(self, x: Any) -> Any:
        for layer in self:
            x = layer(x)
            if isinstance(x, tuple):
                x = x[0]
        return x


def _as_linear(layer: Any, gain: torch.Tensor | None) -> nn.Linear:
    """``LinearTorch`` (``y = x W + b``, ``W`` of shape ``(in, out)``) as ``nn.Linear``, each
    output row times ``gain`` (the next neuron's input gain)."""
    weight = layer.weight.detach().double().T.clone()
    bias = None if layer.bias is None else layer.bias.detach().double().reshape(-1).clone()
    if gain is not None:
        weight *= gain.reshape(-1, 1)
        bias = None if bias is None else bias * gain.reshape(-1)
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).double()
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            assert out.bias is not None
            out.bias.copy_(bias.expand(weight.shape[0]))
    return out


def load_json(module: nn.Module, path: Path) -> None:
    """Load parameters saved by rockpool's ``net.save(path)`` (JSON, no code runs) into the
    rockpool network ``module``; one line when the file does not fit it."""
    if not is_rockpool_network(module) and not hasattr(module, "json_to_param"):
        raise InputError(
            f"{path}: a JSON file loads only into a rockpool network (rockpool's net.save); "
            f"save this model with torch.save(model.state_dict(), ...)"
        )
    try:
        params = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a rockpool parameter file ({exc})") from None
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        module.json_to_param(params)  # type: ignore[operator]
        changed = [k for k, v in module.state_dict().items() if k in before and v.shape != before[k].shape]
        if changed:
            raise ValueError(
                f"{changed[0]} has shape {tuple(module.state_dict()[changed[0]].shape)}, "
                f"the model {tuple(before[changed[0]].shape)}"
            )
    except (KeyError, ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
        for key, value in before.items():  # nothing half-loaded
            _assign(module, key, value)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"{path}: does not fit the model ({first}); save it with net.save(path) from a "
            f"network built by the same factory"
        ) from None


def _assign(module: nn.Module, key: str, value: torch.Tensor) -> None:
    owner, _, name = key.rpartition(".")
    target = module.get_submodule(owner) if owner else module
    getattr(target, name).data = value
