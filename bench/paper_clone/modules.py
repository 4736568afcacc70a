"""The activations of the paper's public code (hzc1208/STBP_LMH), written for this benchmark
in its style (not copied): ``QCFS``, the quantised clip-floor-shift ANN activation with a
trainable threshold ``up``, and ``LearnableNeuron``, the LM-H neuron that replaces it,
called once per time step, keeping its state between calls (``reset()`` starts over)."""

import torch
from torch import nn


class ZIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma):
        ctx.save_for_backward(x)
        ctx.gamma = gamma
        return (x >= 0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (ctx.gamma - x.abs()).clamp(min=0) / ctx.gamma**2, None


class QCFS(nn.Module):
    def __init__(self, up=8.0, t=4):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([up]), requires_grad=True)
        self.t = t

    def forward(self, x):
        x = torch.clamp(x / self.up, 0, 1)
        return torch.floor(x * self.t + 0.5) / self.t * self.up


class LearnableNeuron(nn.Module):
    def __init__(self, scale=1.0, use_TEBN=False, use_SEW=False, T=4):
        super().__init__()
        self.v_threshold = nn.Parameter(torch.tensor([scale]), requires_grad=False)
        self.alpha_1 = nn.Parameter(torch.tensor([0.0]))
        self.beta_1 = nn.Parameter(torch.tensor([0.0]))
        self.alpha_2 = nn.Parameter(torch.tensor([0.0]))
        self.beta_2 = nn.Parameter(torch.tensor([0.0]))
        self.use_TEBN, self.use_SEW, self.T = use_TEBN, use_SEW, T
        self.t = 0

    def forward(self, x):
        if self.t == 0:
            self.v_d = torch.zeros_like(x)
            self.v_s = 0.5 * self.v_threshold * torch.ones_like(x)
        self.t += 1
        self.v_d = (self.alpha_1.sigmoid() - 0.5) * self.v_d + (self.beta_1.sigmoid() - 0.5) * self.v_s + x
        self.v_s = (self.alpha_2.sigmoid() + 0.5) * self.v_s + (self.beta_2.sigmoid() + 0.5) * self.v_d
        spike = ZIF.apply(self.v_s - self.v_threshold, 1.0) * self.v_threshold
        self.v_s = self.v_s - spike.detach()
        return spike

    def reset(self):
        self.t = 0
