"""Networks that run all ``T`` steps in one call, as per-step networks (the paper's TEBN mode).

The paper's code (hzc1208/STBP_LMH) has two time conventions. By default the model is called
once per step and its neurons keep their state. With ``use_TEBN`` its ``eval_snn`` repeats the
image ``T`` times, merges the copies into one ``(T*N, C, H, W)`` batch and calls the model once:
every neuron splits the batch into ``(T, N, ...)`` (``ExpandTemporalDim``), runs the ``T`` steps
from a fresh state and merges its spikes back (``MergeTemporalDim``); ``TEBN`` normalises with
a ``BatchNorm3d`` over ``(N, C, T, H, W)``. Synapses act on each sample and step alike, and at
eval a BatchNorm3d is a per-channel affine, the same as a BatchNorm2d with its statistics, so
the two conventions compute the same spikes. :func:`per_step_copy` rewrites a time-batched
module into the per-step one the fx frontend traces; :func:`time_batched_steps` tells the
source run (``frontends.torch_source``) to feed the original as ``eval_snn`` does.
"""

from __future__ import annotations

import copy

from torch import nn

from lmh_deploy.frontends.neurons import NeuronError, find_adapter


def is_temporal_reshape(module: nn.Module) -> bool:
    """``ExpandTemporalDim`` / ``MergeTemporalDim``: no parameters, no children, a step count
    ``T``; they only move the time axis in or out of the batch."""
    return (
        isinstance(vars(module).get("T"), (int, float))
        and not any(True for _ in module.children())
        and not any(True for _ in module.parameters(recurse=False))
        and not any(True for _ in module.buffers(recurse=False))
        and find_adapter(module) is None
    )


def is_tebn(module: nn.Module) -> bool:
    """A TEBN: one BatchNorm3d child (over ``(N, C, T, H, W)``), the rest time reshapes."""
    children = list(module.children())
    norms = [c for c in children if isinstance(c, nn.BatchNorm3d)]
    return len(norms) == 1 and all(isinstance(c, nn.BatchNorm3d) or is_temporal_reshape(c) for c in children)


def _time_batched_neurons(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (path, m)
        for path, m in module.named_modules()
        if find_adapter(m) is not None and getattr(m, "use_TEBN", False)
    ]


def time_batched_steps(module: nn.Module) -> int | None:
    """``T`` when ``module`` takes all steps in one ``(T*N, ...)`` call (a neuron with
    ``use_TEBN``, or a TEBN), else None. Neurons that disagree on ``T`` are refused."""
    neurons = _time_batched_neurons(module)
    for path, m in neurons:
        if not isinstance(vars(m).get("T"), (int, float)):
            raise NeuronError(
                f"{path} ({type(m).__name__}): use_TEBN=True but no step count T: a time-batched "
                f"neuron splits its (T*N, ...) input by its own T (the paper's LearnableNeuron(..., T=T))"
            )
    steps = {path: int(vars(m)["T"]) for path, m in neurons}
    tebns = [path for path, m in module.named_modules() if is_tebn(m)]
    for path in tebns:
        steps.update(
            {
                f"{path}.{name}": int(vars(c)["T"])
                for name, c in module.get_submodule(path).named_children()
                if is_temporal_reshape(c)
            }
        )
    if not steps and not tebns:
        return None
    if tebns and not neurons:
        raise NeuronError(
            f"{tebns[0]} ({type(module.get_submodule(tebns[0])).__name__}): a TEBN layer (BatchNorm3d over "
            f"time) in a network whose neurons run one step per call; build it with "
            f"replace_QCFS_by_Lneuron(model, use_TEBN=True, ...) as the paper's main.py does"
        )
    if len(set(steps.values())) > 1:
        raise NeuronError(f"the time-batched layers run different step counts: {steps}")
    return next(iter(steps.values()))


def _bn2d_of(bn3d: nn.BatchNorm3d) -> nn.BatchNorm2d:
    """The BatchNorm2d that computes what ``bn3d`` does at eval, per channel."""
    bn = nn.BatchNorm2d(bn3d.num_features, eps=bn3d.eps, affine=bn3d.affine)
    bn.load_state_dict(bn3d.state_dict())  # the same keys: weight, bias, running stats
    return bn.eval()


def per_step_copy(module: nn.Module, timesteps: int) -> nn.Module:
    """A per-step copy of a time-batched ``module`` (see the module docstring); ``module``
    itself unchanged. Refuses a step count other than the network's own in one line."""
    steps = time_batched_steps(module)
    if steps is None:
        return module
    if steps != int(timesteps):
        raise NeuronError(
            f"{type(module).__name__}: runs {steps} steps per call (use_TEBN; its eval_snn feeds "
            f"(T*N, ...) batches); compile it with --timesteps {steps}, not {timesteps}"
        )
    out = copy.deepcopy(module).eval()
    replaced: list[str] = []
    for path, m in list(out.named_modules()):
        if not path or any(path.startswith(f"{r}.") for r in replaced):
            continue
        parent_path, _, name = path.rpartition(".")
        parent = out.get_submodule(parent_path) if parent_path else out
        if is_tebn(m):
            bn3d = next(c for c in m.children() if isinstance(c, nn.BatchNorm3d))
            parent._modules[name] = _bn2d_of(bn3d)
            replaced.append(path)
        elif find_adapter(m) is not None and getattr(m, "use_TEBN", False):
            m.use_TEBN = False
        elif is_temporal_reshape(m) and find_adapter(parent) is None and not is_tebn(parent):
            parent._modules[name] = nn.Identity()
            replaced.append(path)
    return out
