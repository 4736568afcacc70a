"""Batch normalisation for spiking networks: vanilla (per-step) BN and threshold-dependent BN.

Both layers are time-major: they take ``(T, B, C)`` or ``(T, B, C, H, W)`` tensors
(:class:`~models.architectures.SpikingNet` hands them the time axis) and are
subclasses of :class:`torch.nn.modules.batchnorm._BatchNorm`, so they keep the
standard attribute names ``running_mean``, ``running_var``, ``weight``, ``bias``,
``eps`` and ``momentum`` (``momentum`` must be a number: the running statistics are an EMA).

``norm="bn"`` (:class:`StepBatchNorm`)
    The paper's "vanilla batchnorm" configuration (TET + BN). In the authors' code
    the network runs one time step at a time, so in training every step ``t`` is
    normalised with the statistics of its own batch, over ``(B, H, W)``. The
    affine ``weight``/``bias`` and the running statistics are shared by all steps;
    the running statistics get one EMA update per forward, from the mean over
    steps of the per-step batch statistics.

``norm="tdbn"`` (:class:`ThresholdDependentBatchNorm`)
    tdBN (Zheng et al., AAAI 2021), used with the rate cross-entropy (CE + tdBN):
    in training the statistics of channel ``c`` are taken over ``(T, B, H, W)``
    jointly, and the normalised value is scaled by ``alpha * theta``, with
    ``theta`` the threshold of the neuron the layer feeds and ``alpha`` = 1, or
    ``1/sqrt(2)`` for the two branches that are summed in a residual block.

Fold algebra (inference; both layers; ``alpha_theta = 1`` for ``bn``)::

    y = weight * alpha_theta * (x - running_mean) / sqrt(running_var + eps) + bias
      = scale * x + shift
    scale = weight * alpha_theta / sqrt(running_var + eps)
    shift = bias - scale * running_mean

so a preceding ``Conv2d``/``Linear`` with weight ``W`` (out channels first) and
bias ``c`` (0 when absent) becomes ``W' = scale[:, None, ...] * W`` and
``c' = scale * c + shift`` (:func:`fold_into`). At inference the output of every
time step is the same affine map of its input, so a folded network is exactly
the unfolded one in eval mode.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

NORMS = ("none", "bn", "tdbn")


class _TimeMajorBatchNorm(_BatchNorm):
    """Shared part: takes ``(T, B, C, ...)``; buffer ``alpha_theta`` scales the normalised value."""

    time_major = True

    def __init__(self, num_features: int, *, alpha: float = 1.0, theta: float = 1.0,
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True,
                         track_running_stats=True)
        self.register_buffer("alpha_theta", torch.tensor(float(alpha) * float(theta)))

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (3, 5):
            raise ValueError(f"{type(self).__name__}: expected (T, B, C) or (T, B, C, H, W), "
                             f"got shape {tuple(x.shape)}")

    def effective_weight(self) -> torch.Tensor:
        """``weight * alpha * theta``: the scale applied to the normalised value."""
        return self.weight * self.alpha_theta

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference form ``y = scale * x + shift`` per channel (see the module docstring)."""
        scale = self.effective_weight() / torch.sqrt(self.running_var + self.eps)
        return scale, self.bias - scale * self.running_mean

    def _eval_or_joint(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        t, b = x.shape[:2]
        flat = x.reshape(t * b, *x.shape[2:])
        if training:
            y = F.batch_norm(flat, None, None, self.effective_weight(), self.bias, True, 0.0,
                             self.eps)
        else:
            y = F.batch_norm(flat, self.running_mean, self.running_var, self.effective_weight(),
                             self.bias, False, 0.0, self.eps)
        return y.reshape(x.shape)

    @torch.no_grad()
    def _update_running(self, x: torch.Tensor, per_step: bool) -> None:
        """One EMA update per forward from the batch statistics of ``x`` ``(T, B, C, ...)``.

        ``per_step``: the mean over steps of the per-step mean / variance, else the joint
        ones. The unbiased correction uses the per-step count ``n = B*H*W`` in both cases,
        so a static input seen once (``T = 1``) and ``T`` copies of it give the same
        running statistics (see :class:`~models.architectures.SpikingNet`).
        """
        dims = [1] + list(range(3, x.dim()))
        n = x[0].numel() // x.shape[2]
        if per_step:
            mean = x.mean(dim=dims).mean(0)
            var = x.var(dim=dims, unbiased=False).mean(0)
        else:
            mean = x.mean(dim=[0] + dims)
            var = x.var(dim=[0] + dims, unbiased=False)
        var = var * (n / max(n - 1, 1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
        self.running_var.lerp_(var.to(self.running_var.dtype), self.momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self._check_input_dim(x)
        if not self.training:
            return self._eval_or_joint(x, False)
        self.num_batches_tracked.add_(1)
        y = self._normalise(x)
        self._update_running(x.detach(), per_step=isinstance(self, StepBatchNorm))
        return y

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:  # noqa: D102
        return f"{self.num_features}, alpha_theta={float(self.alpha_theta):g}, eps={self.eps}"


class StepBatchNorm(_TimeMajorBatchNorm):
    """Vanilla BN, training statistics per time step (see module docstring); ``alpha_theta = 1``."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, alpha=1.0, theta=1.0, eps=eps, momentum=momentum)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight()
        return torch.stack([F.batch_norm(step, None, None, w, self.bias, True, 0.0, self.eps)
                            for step in x.unbind(0)])


class ThresholdDependentBatchNorm(_TimeMajorBatchNorm):
    """tdBN: joint statistics over ``(T, B, H, W)``, normalised value times ``alpha * theta``."""

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return self._eval_or_joint(x, True)


def make_norm(kind: str, num_features: int, *, theta: float = 1.0,
              alpha: float = 1.0) -> nn.Module | None:
    """``"bn"`` / ``"tdbn"`` layer for ``num_features`` channels, ``None`` for ``"none"``."""
    if kind == "none":
        return None
    if kind == "bn":
        return StepBatchNorm(num_features)
    if kind == "tdbn":
        return ThresholdDependentBatchNorm(num_features, alpha=alpha, theta=theta)
    raise ValueError(f"unknown norm {kind!r}; supported: {', '.join(NORMS)}")


RESIDUAL_ALPHA = 1.0 / math.sqrt(2.0)


@torch.no_grad()
def fold_into(layer: nn.Conv2d | nn.Linear,
              norm: _TimeMajorBatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``layer`` followed by ``norm`` (eval mode) as one layer: ``(W', c')``."""
    scale, shift = norm.scale_shift()
    weight = layer.weight * scale.reshape((-1,) + (1,) * (layer.weight.dim() - 1))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
    return weight, scale * bias + shift
