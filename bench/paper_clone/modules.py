"""The LM-H neuron the way the paper's public code (hzc1208/STBP_LMH) writes it: called once
per time step, keeps its state between calls, ``reset()`` starts over. Written for this
benchmark (not copied); the documented behaviour is the same."""

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


class LearnableNeuron(nn.Module):
    def __init__(self, scale=1.0):
        super().__init__()
        self.v_threshold = nn.Parameter(torch.tensor([scale]), requires_grad=False)
        self.alpha_1 = nn.Parameter(torch.tensor([0.0]))
        self.beta_1 = nn.Parameter(torch.tensor([0.0]))
        self.alpha_2 = nn.Parameter(torch.tensor([0.0]))
        self.beta_2 = nn.Parameter(torch.tensor([0.0]))
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
