"""Test models written the way the paper's public code (hzc1208/STBP_LMH) writes them.

An ordinary ANN with nn.ReLU; every ReLU is swapped for a per-step ``LearnableNeuron``
(parameters v_threshold, alpha_1, beta_1, alpha_2, beta_2, each of shape [1]; called once
per time step, keeps its state, ``reset()`` starts over); training saves a bare state_dict.
Written for these tests (not copied); only the neuron's documented behaviour is the same.
"""

import torch
from torch import nn


class SurrogateSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma):
        ctx.save_for_backward(x)
        ctx.gamma = gamma
        return (x >= 0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        g = ctx.gamma
        return grad * (g - x.abs()).clamp(min=0) / (g * g), None


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
            self.v_s = torch.ones_like(x) * 0.5 * self.v_threshold
        self.t += 1
        self.v_d = (self.alpha_1.sigmoid() - 0.5) * self.v_d + (self.beta_1.sigmoid() - 0.5) * self.v_s + x
        self.v_s = (self.alpha_2.sigmoid() + 0.5) * self.v_s + (self.beta_2.sigmoid() + 0.5) * self.v_d
        out = SurrogateSpike.apply(self.v_s - self.v_threshold, 1.0) * self.v_threshold
        self.v_s = self.v_s - out.detach()
        return out

    def reset(self):
        self.t = 0


def swap_relu(model, scale=1.0):
    """Replace every ReLU (recursively) by a LearnableNeuron, as the paper's utils do."""
    for name, child in model._modules.items():
        if "relu" in type(child).__name__.lower():
            model._modules[name] = LearnableNeuron(scale)
        elif child is not None:
            swap_relu(child, scale)
    return model


def mlp(hidden=64, classes=10):
    ann = nn.Sequential(
        nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, classes)
    )
    return swap_relu(ann)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.residual_function(x) + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self, classes=10, width=8):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        out = self.layer2(self.layer1(self.conv1(x)))
        out = self.avg_pool(out)
        out = out.view(out.size(0), -1)
        return self.fc(out)


def resnet(classes=10, width=8):
    return swap_relu(TinyResNet(classes, width))
