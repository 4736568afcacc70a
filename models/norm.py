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

Distributed training (``torchrun``, :mod:`models.distributed`): when a process group
of more than one process is initialised, both layers reduce their training statistics
over all ranks, like :class:`torch.nn.SyncBatchNorm`: the per-channel sums (and then
the sums of squared deviations from the global mean) are all-reduced with an
autograd-aware all-reduce, so the normalisation, its gradient and the running
statistics are those of the global batch, identical on every rank. Set the class
attribute ``sync_stats = False`` to normalise with each rank's own batch instead.

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

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lmh_deploy.errors import InputError
from lmh_deploy.models.distributed import differentiable_all_reduce, sync_batchnorm_active

NORMS = ("none", "bn", "tdbn")


class TimeMajorBatchNorm(_BatchNorm):
    """Shared part: takes ``(T, B, C, ...)``; buffer ``alpha_theta`` scales the normalised value."""

    time_major = True
    #: Reduce training statistics over all ranks when a multi-process group is initialised.
    sync_stats = True
    # always present here (affine=True, track_running_stats=True in __init__)
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor
    alpha_theta: torch.Tensor
    momentum: float

    def __init__(
        self,
        num_features: int,
        *,
        alpha: float = 1.0,
        theta: float = 1.0,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        self.register_buffer("alpha_theta", torch.tensor(float(alpha) * float(theta)))

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (3, 5):
            raise ValueError(
                f"{type(self).__name__}: expected (T, B, C) or (T, B, C, H, W), got shape {tuple(x.shape)}"
            )

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
            y = F.batch_norm(flat, None, None, self.effective_weight(), self.bias, True, 0.0, self.eps)
        else:
            y = F.batch_norm(
                flat,
                self.running_mean,
                self.running_var,
                self.effective_weight(),
                self.bias,
                False,
                0.0,
                self.eps,
            )
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
        self._lerp_running(mean, var, n)

    @torch.no_grad()
    def _lerp_running(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """EMA update with the biased ``var`` made unbiased by the per-step count ``n``."""
        var = var * (n / max(n - 1, 1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
        self.running_var.lerp_(var.to(self.running_var.dtype), self.momentum)

    def _synced_normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Training forward with statistics over the batches of all ranks (SyncBatchNorm).

        Two all-reduces (sums, then sums of squared deviations from the global mean: no
        cancellation), both autograd-aware, so the gradient is that of the global-batch
        normalisation. Works for an empty local batch. Computed in float32 (autocast).
        """
        per_step = isinstance(self, StepBatchNorm)
        t, c = x.shape[0], x.shape[2]
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        dims = [1] + list(range(3, x.dim()))
        if not per_step:
            dims = [0] + dims
        count = x[0].numel() // c if t else 0  # per step and channel on this rank
        local_n = count if per_step else count * t
        sums = xf.sum(dim=dims)  # (T, C) per step, else (C,)
        packed = torch.cat([sums.reshape(-1), sums.new_full((1,), float(local_n))])
        packed = differentiable_all_reduce(packed)
        n = packed[-1].detach()
        shape: tuple[int, ...] = (t, 1, c) if per_step else (1, 1, c)
        shape = shape + (1,) * (x.dim() - 3)
        mean = (packed[:-1] / n).reshape(shape)
        centred = xf - mean
        var = differentiable_all_reduce(centred.pow(2).sum(dim=dims)).reshape(shape) / n
        channel = (1, 1, c) + (1,) * (x.dim() - 3)
        scale = self.effective_weight().to(xf.dtype).reshape(channel) * torch.rsqrt(var + self.eps)
        y = centred * scale + self.bias.to(xf.dtype).reshape(channel)
        with torch.no_grad():
            m, v = mean.detach().reshape(-1, c), var.detach().reshape(-1, c)
            n_step = int(round(float(n))) if per_step else int(round(float(n))) // max(t, 1)
            self._lerp_running(m.mean(0), v.mean(0), n_step)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return self._eval_or_joint(x, False)
        self.num_batches_tracked.add_(1)
        if self.sync_stats and sync_batchnorm_active():
            return self._synced_normalise(x)
        y = self._normalise(x)
        self._update_running(x.detach(), per_step=isinstance(self, StepBatchNorm))
        return y

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.num_features}, alpha_theta={float(self.alpha_theta):g}, eps={self.eps}"


class StepBatchNorm(TimeMajorBatchNorm):
    """Vanilla BN, training statistics per time step (see module docstring); ``alpha_theta = 1``."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, alpha=1.0, theta=1.0, eps=eps, momentum=momentum)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight()
        return torch.stack(
            [F.batch_norm(step, None, None, w, self.bias, True, 0.0, self.eps) for step in x.unbind(0)]
        )


class ThresholdDependentBatchNorm(TimeMajorBatchNorm):
    """tdBN: joint statistics over ``(T, B, H, W)``, normalised value times ``alpha * theta``."""

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return self._eval_or_joint(x, True)


def make_norm(kind: str, num_features: int, *, theta: float = 1.0, alpha: float = 1.0) -> nn.Module | None:
    """``"bn"`` / ``"tdbn"`` layer for ``num_features`` channels, ``None`` for ``"none"``."""
    if kind == "none":
        return None
    if kind == "bn":
        return StepBatchNorm(num_features)
    if kind == "tdbn":
        return ThresholdDependentBatchNorm(num_features, alpha=alpha, theta=theta)
    raise InputError(f"unknown norm {kind!r}; supported: {', '.join(NORMS)}")


RESIDUAL_ALPHA = 1.0 / math.sqrt(2.0)


@torch.no_grad()
def norm_affine(norm: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode ``y = scale * x + shift`` per channel of any batch norm (torch's or ours).

    Ours know their own form (:meth:`TimeMajorBatchNorm.scale_shift`); for torch's
    ``BatchNorm1d/2d`` the same algebra runs in float64.
    """
    if hasattr(norm, "scale_shift"):
        return norm.scale_shift()
    var, mean = norm.running_var.detach().double(), norm.running_mean.detach().double()
    weight = torch.ones_like(var) if norm.weight is None else norm.weight.detach().double()
    bias = torch.zeros_like(var) if norm.bias is None else norm.bias.detach().double()
    scale = weight / torch.sqrt(var + norm.eps)
    return scale, bias - scale * mean


def fold_affine(weight, bias, scale, shift):
    """Fold a per-channel ``scale * x + shift`` after a layer into its weight and bias.

    ``W' = scale[:, None, ...] * W`` (out channels first) and ``c' = scale * c + shift``;
    ``c`` is per channel (C,) or over the whole feature map (C, ...). numpy arrays or torch
    tensors alike. The one BN-folding rule: training checks and the exporter both use it.
    """
    per_out = (-1,) + (1,) * (weight.ndim - 1)
    per_channel = (-1,) + (1,) * (bias.ndim - 1)
    return (weight * scale.reshape(per_out), bias * scale.reshape(per_channel) + shift.reshape(per_channel))


def fold_into(layer: nn.Conv2d | nn.Linear, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``layer`` followed by ``norm`` (eval mode) as one layer: ``(W', c')``."""
    scale, shift = norm_affine(norm)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
    return fold_affine(layer.weight, bias, scale, shift)
