"""Layers in the style of the paper's public code (hzc1208/STBP_LMH ``modules.py``), written
for these tests (not copied): the same parameter names and documented behaviour.

``LearnableNeuron`` / ``OnlineNeuron`` run one step per call (state kept until ``reset()``),
or, with ``use_TEBN``, all ``T`` steps of a ``(T*N, ...)`` batch in one call (state started
afresh each call). ``TEBN`` is a BatchNorm3d over ``(N, C, T, H, W)``; ``QCFS`` the quantised
clip-floor-shift activation an ANN is trained with before conversion.
"""

import torch
from torch import nn


class SurrogateFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gama):
        ctx.save_for_backward(x)
        ctx.gama = gama
        return (x >= 0).float()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        g = ctx.gama
        return grad_output * (g - x.abs()).clamp(min=0) / (g * g), None


class ExpandTemporalDim(nn.Module):
    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, x_seq):
        return x_seq.view([self.T, x_seq.shape[0] // self.T, *x_seq.shape[1:]])


class MergeTemporalDim(nn.Module):
    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, x_seq):
        return x_seq.flatten(0, 1).contiguous()


class _TwoCompartment(nn.Module):
    def __init__(self, scale=1.0, use_TEBN=False, use_SEW=False, T=4):
        super().__init__()
        self.v_threshold = nn.Parameter(torch.tensor([scale]), requires_grad=False)
        self.alpha_1 = nn.Parameter(torch.tensor([0.0]))
        self.beta_1 = nn.Parameter(torch.tensor([0.0]))
        self.alpha_2 = nn.Parameter(torch.tensor([0.0]))
        self.beta_2 = nn.Parameter(torch.tensor([0.0]))
        self.act = SurrogateFunction.apply
        self.gama = 1.0
        self.use_TEBN = use_TEBN
        self.use_SEW = use_SEW
        self.expand = ExpandTemporalDim(T)
        self.merge = MergeTemporalDim(T)
        self.T = T
        self.t = 0

    def step(self, x):
        self.v_d = (self.alpha_1.sigmoid() - 0.5) * self.v_d + (self.beta_1.sigmoid() - 0.5) * self.v_s + x
        self.v_s = (self.alpha_2.sigmoid() + 0.5) * self.v_s + (self.beta_2.sigmoid() + 0.5) * self.v_d
        out = self.act(self.v_s - self.v_threshold, self.gama) * self.v_threshold
        self.v_s = self.v_s - out.detach()
        return out

    def forward(self, x):
        if self.use_TEBN or self.use_SEW:
            if self.use_TEBN:
                x = self.expand(x)
            self.v_d = torch.zeros_like(x[0])
            self.v_s = torch.ones_like(x[0]) * 0.5 * self.v_threshold
            out = torch.stack([self.step(x[t]) for t in range(self.T)])
            return self.merge(out) if self.use_TEBN else out
        if self.t == 0:
            self.v_d = torch.zeros_like(x)
            self.v_s = torch.ones_like(x) * 0.5 * self.v_threshold
        self.t += 1
        return self.step(x)

    def reset(self):
        self.t = 0


class LearnableNeuron(_TwoCompartment):
    pass


class OnlineNeuron(_TwoCompartment):
    """Time-slicing online training: states are detached every ``time_slice`` steps (only
    gradients differ); its threshold starts at 1 and is whatever the state_dict holds."""

    def __init__(self, use_TEBN=False, use_SEW=False, T=4, time_slice=2):
        super().__init__(1.0, use_TEBN, use_SEW, T)
        self.time_slice = time_slice

    def forward(self, x):
        if not (self.use_TEBN or self.use_SEW) and self.t > 0 and self.t % self.time_slice == 0:
            self.v_d, self.v_s = self.v_d.detach(), self.v_s.detach()
        return super().forward(x)


class StraightThroughFloor(torch.autograd.Function):
    """floor() whose gradient passes unchanged, so that a QCFS ANN trains (the paper's
    ``FloorLayer``; torch.floor's own gradient is 0 everywhere)."""

    @staticmethod
    def forward(ctx, x):
        return x.floor()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class QCFS(nn.Module):
    """Clip-floor-shift with ``t`` levels below the learnt threshold ``up`` (trained by
    gradient, too: ``replace_QCFS_by_Lneuron`` makes it the neuron's threshold)."""

    def __init__(self, up=1.0, t=4):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([up]))
        self.t = t

    def forward(self, x):
        x = x / self.up
        x = torch.clamp(StraightThroughFloor.apply(x * self.t + 0.5) / self.t, 0, 1)
        return x * self.up


class TEBN(nn.Module):
    def __init__(self, num_features, T):
        super().__init__()
        self.bn = nn.BatchNorm3d(num_features)
        self.p = nn.Parameter(torch.ones(4, 1, 1, 1, 1))  # stored, not used by forward
        self.expand = ExpandTemporalDim(T)
        self.merge = MergeTemporalDim(T)

    def forward(self, x):
        y = self.expand(x).transpose(0, 1).contiguous().transpose(1, 2).contiguous()  # N C T H W
        y = self.bn(y).transpose(1, 2).transpose(0, 1).contiguous()  # T N C H W
        return self.merge(y)
