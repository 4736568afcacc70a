"""Float PyTorch at its best for one network and one input shape: the baselines of the benches.

Variants of the same float inference (outputs checked equal to the model's own to float
tolerance before any timing):

* ``model``: the :class:`~lmh_deploy.models.architectures.SpikingNet` as built, under
  ``torch.inference_mode()`` (unfolded BN, a new state tensor per step).
* ``lean``: a plain loop written for inference: BN folded into the conv/linear before it,
  every layer run over all ``T`` steps at once (one GEMM / convolution per layer, the net is
  feed-forward), the LM-H update in place on preallocated state and output buffers (eight
  in-place ops per step, no allocation), static input seen once.
* ``lean-cl``: ``lean`` with channels-last weights and activations (conv nets).

each at one thread and at all threads (``torch.set_num_threads`` switched per call).
:func:`best_float` warms every variant up, picks the fastest by its median warm-up time
(:func:`timing.fastest`, as sim/'s variants are picked), and the bench alternates that one
with sim/ (every variant's median goes to the JSON).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from lmh_deploy.models.architectures import ResidualBlock, SpikingNet
from lmh_deploy.models.neuron import FACTOR_NAMES, LMHNeuron
from lmh_deploy.models.norm import fold_into
from timing import fastest


class LeanNeuron:
    """The LM-H update of one layer, in place on preallocated buffers."""

    def __init__(self, neuron: LMHNeuron) -> None:
        table = {k: v.detach() for k, v in neuron.factor_table().items()}
        if any(v.numel() != 1 for v in table.values()):
            raise ValueError("lean float baseline: per-channel or per-step factors are not handled")
        self.mu_d, self.mu_s, self.lam_d, self.lam_s = (float(table[k]) for k in FACTOR_NAMES)
        self.theta = float(neuron.theta)
        self.v_s_init = neuron.v_s_init * self.theta
        self.strict = neuron.threshold_test == ">"
        self.subtract = neuron.reset == "subtract"
        self.reset_value = neuron.reset_value
        self.buffers: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def __call__(self, current: torch.Tensor, steps: int) -> torch.Tensor:
        """``current`` (T, B, ...) or (1, B, ...) for a static input -> spikes * theta (T, B, ...)."""
        shape = (steps, *current.shape[1:])
        key = (shape, current.stride()[1:])
        if key not in self.buffers:
            out = torch.empty_strided(shape, (current[0].numel(), *current.stride()[1:]), dtype=current.dtype)
            state = torch.empty_like(current[0]), torch.empty_like(current[0])
            self.buffers[key] = (out, *state, torch.empty_like(current[0], dtype=torch.bool))
        out, v_d, v_s, mask = self.buffers[key]
        v_d.zero_()
        v_s.fill_(self.v_s_init)
        static = current.shape[0] == 1
        test = torch.gt if self.strict else torch.ge
        for t in range(steps):
            v_d.mul_(self.mu_d).add_(v_s, alpha=self.mu_s).add_(current[0 if static else t])
            v_s.mul_(self.lam_s).add_(v_d, alpha=self.lam_d)  # m_s
            test(v_s, self.theta, out=mask)
            torch.mul(mask, self.theta, out=out[t])
            if self.subtract:
                v_s.sub_(out[t])
            else:
                v_s.masked_fill_(mask, self.reset_value)
        return out


def _fold(layer: nn.Module, norm: nn.Module | None) -> nn.Module:
    """``layer`` (Conv2d / Linear) with ``norm`` folded in, as a new eval module."""
    if norm is None:
        return layer
    weight, bias = fold_into(layer, norm)
    new = type(layer).__new__(type(layer))
    new.__dict__ = layer.__dict__.copy()
    new._parameters = {
        "weight": nn.Parameter(weight.detach().to(layer.weight.dtype)),
        "bias": nn.Parameter(bias.detach().to(layer.weight.dtype)),
    }
    return new


class LeanNet:
    """Layer-major, in-place float inference of a SpikingNet (see the module docstring)."""

    def __init__(self, model: SpikingNet, steps: int, channels_last: bool = False) -> None:
        self.steps = steps
        self.channels_last = channels_last
        self.ops: list[Callable[[torch.Tensor], torch.Tensor]] = []
        layers = list(model.layers)
        i = 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                folded = nxt is not None and hasattr(nxt, "scale_shift")
                self.ops.append(self._synapse(_fold(layer, nxt if folded else None)))
                i += 2 if folded else 1
                continue
            if isinstance(layer, LMHNeuron):
                self.ops.append(self._neuron(layer))
            elif isinstance(layer, ResidualBlock):
                self.ops.append(self._block(layer))
            elif isinstance(layer, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout)):
                self.ops.append(self._flat(layer))
            else:
                raise ValueError(f"lean float baseline: no rule for {type(layer).__name__}")
            i += 1

    def _flat(self, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:  # (T, B, ...) -> module on (T*B, ...)
            y = module(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
            return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])

        return run

    def _synapse(self, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.channels_last and isinstance(module, nn.Conv2d):
            module = module.to(memory_format=torch.channels_last)
        return self._flat(module)

    def _neuron(self, neuron: LMHNeuron) -> Callable[[torch.Tensor], torch.Tensor]:
        lean = LeanNeuron(neuron)
        return lambda x: lean(x, self.steps)

    def _block(self, block: ResidualBlock) -> Callable[[torch.Tensor], torch.Tensor]:
        conv1 = self._synapse(_fold(block.conv1, block.bn1))
        neuron1, neuron2 = self._neuron(block.neuron1), self._neuron(block.neuron2)
        conv2 = self._synapse(_fold(block.conv2, block.bn2))
        shortcut = None
        if block.shortcut is not None:
            parts = list(block.shortcut)
            shortcut = self._synapse(_fold(parts[0], parts[1] if len(parts) > 1 else None))

        def run(x: torch.Tensor) -> torch.Tensor:
            h = conv2(neuron1(conv1(x)))
            return neuron2(h.add_(x if shortcut is None else shortcut(x)))

        return run

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Static ``(B, ...)`` input -> per-step outputs ``(T, B, classes)``."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        h = x.unsqueeze(0)
        for op in self.ops:
            h = op(h)
        if h.shape[0] != self.steps:  # a net with no neuron: broadcast
            h = h.expand(self.steps, *h.shape[1:])
        return h


def variants(model: SpikingNet, steps: int, conv: bool) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The float variants of the module docstring, without the thread setting."""
    found: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"model": lambda x: model(x, steps)}
    found["lean"] = LeanNet(model, steps)
    if conv:
        found["lean-cl"] = LeanNet(model, steps, channels_last=True)
    return found


def best_float(
    model: SpikingNet, x: torch.Tensor, steps: int, *, conv: bool, threads: int, warmup: int = 4
) -> tuple[str, Callable[[torch.Tensor], torch.Tensor], dict[str, float], dict[str, float]]:
    """The fastest float variant at ``threads`` and at all threads, by median warm-up time on
    ``x`` (``warmup`` runs of each, in turns; :func:`timing.fastest`).

    Returns its name, the variant as a call on any batch (threads set inside), every
    variant's median warm-up seconds, and per variant the fraction of outputs that differ
    from the model's (:func:`_differing`, checked first).
    """
    model.eval()
    counts = sorted({threads, len(os.sched_getaffinity(0))})
    checks = _differing(model, x[:2], steps, conv)
    runs: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for name, fn in variants(model, steps, conv).items():
        for n in counts:
            runs[f"{name}/{n} thread{'s' if n > 1 else ''}"] = _threaded(fn, n)
    warm: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(warmup):
        for name, run in runs.items():
            start = time.perf_counter()
            run(x)
            warm[name].append(time.perf_counter() - start)
    best, medians = fastest(warm)
    return best, runs[best], medians, checks


def _differing(model: SpikingNet, x: torch.Tensor, steps: int, conv: bool) -> dict[str, float]:
    """Per variant, the fraction of outputs that differ from the model's, both in float64.

    In float32 a variant's different rounding (folded BN, fused multiply-adds) flips a spike
    at the threshold now and then, and a flip spreads through a deep net at trained firing
    rates (ResNet-19 at 15 %: 11 % of the outputs); in float64 the same computation agrees.
    Raises if more than 0.5 % differ.
    """
    wide = copy.deepcopy(model).double()
    xd = x.double()
    found = {}
    with torch.inference_mode():
        reference = wide(xd, steps)
        tolerance = 1e-6 * float(reference.abs().max()) + 1e-9
        for name, fn in variants(wide, steps, conv).items():
            differ = float(((fn(xd) - reference).abs() > tolerance).double().mean())
            if differ > 0.005:
                raise AssertionError(f"float variant {name}: {differ:.1%} of its outputs differ")
            found[name] = differ
    return found


def _threaded(fn: Callable[[torch.Tensor], torch.Tensor], n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            with torch.inference_mode():
                return fn(x)
        finally:
            torch.set_num_threads(before)

    return run


__all__ = ["LeanNet", "best_float", "variants"]
