"""The paper's ``CIFAR10Net`` shape (conv blocks, MaxPool, a spiking layer of 10 neurons per
class, ``VotingLayer``), written for these tests with tiny widths and 8x8 inputs."""

import torch
import torch.nn as nn


class VotingLayer(nn.Module):
    def __init__(self, voting_size: int = 10):
        super().__init__()
        self.voting_size = voting_size

    def forward(self, x: torch.Tensor):
        return nn.functional.avg_pool1d(x.unsqueeze(1), self.voting_size, self.voting_size).squeeze(1)


class CIFAR10Net(nn.Module):
    def __init__(self, num_classes=10, channels=4, hw=8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.sn1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.sn2 = nn.ReLU(inplace=True)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.dp3 = nn.Dropout(0.5)
        self.fc3 = nn.Linear(channels * (hw // 4) ** 2, 10 * num_classes)
        self.sn3 = nn.ReLU(inplace=True)
        self.voting = VotingLayer(10)

    def forward(self, x):
        x = self.pool1(self.sn1(self.bn1(self.conv1(x))))
        x = self.pool2(self.sn2(self.bn2(self.conv2(x))))
        x = x.flatten(1)
        x = self.sn3(self.fc3(self.dp3(x)))
        return self.voting(x)


def cifarnet(num_classes=10, channels=4, **kargs):
    return CIFAR10Net(num_classes, channels)
