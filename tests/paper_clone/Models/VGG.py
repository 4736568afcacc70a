"""VGG-13 (CIFAR classifier 4096-4096) and the paper's ``CIFAR10Net`` shape (blocks of
conv-BN-ReLU closed by a MaxPool, fc layers to 10 spiking outputs per class, ``VotingLayer``),
written in the style of the paper's ``Models/VGG.py``: at the paper's size for
``bench/paper_scale.py`` (``cifarnet(channels=256, hw=32, convs=3, hidden=2048)``), tiny by
default for tests (one conv per block, 8x8 inputs)."""

import torch
import torch.nn as nn

VGG13 = [[64, 64, "M"], [128, 128, "M"], [256, 256, "M"], [512, 512, "M"], [512, 512, "M"]]


class VGG(nn.Module):
    def __init__(self, cfg, num_classes=10):
        super().__init__()
        self.init_channels = 3
        self.layer1, self.layer2, self.layer3, self.layer4, self.layer5 = (self._make_layers(c) for c in cfg)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def _make_layers(self, cfg):
        layers = []
        for x in cfg:
            if x == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(self.init_channels, x, 3, padding=1), nn.BatchNorm2d(x), nn.ReLU()]
                self.init_channels = x
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.classifier(out)


class VotingLayer(nn.Module):
    def __init__(self, voting_size: int = 10):
        super().__init__()
        self.voting_size = voting_size

    def forward(self, x: torch.Tensor):
        return nn.functional.avg_pool1d(x.unsqueeze(1), self.voting_size, self.voting_size).squeeze(1)


class CIFAR10Net(nn.Module):
    """Layers named as the paper names them (``conv1, bn1, sn1, ... pool3, ... dp7, fc7, sn7,
    dp8, fc8, sn8, voting`` at its size), run in that order."""

    def __init__(self, num_classes=10, channels=4, hw=8, convs=1, hidden=None):
        super().__init__()
        for i in range(1, 2 * convs + 1):
            self.add_module(f"conv{i}", nn.Conv2d(3 if i == 1 else channels, channels, 3, padding=1))
            self.add_module(f"bn{i}", nn.BatchNorm2d(channels))
            self.add_module(f"sn{i}", nn.ReLU(inplace=True))
            if i % convs == 0:
                self.add_module(f"pool{i}", nn.MaxPool2d(2, 2))
        self.flatten_before = f"dp{2 * convs + 1}"
        widths = [channels * (hw // 4) ** 2, *([hidden] if hidden else []), 10 * num_classes]
        for i, (n_in, n_out) in enumerate(zip(widths, widths[1:]), start=2 * convs + 1):
            self.add_module(f"dp{i}", nn.Dropout(0.5))
            self.add_module(f"fc{i}", nn.Linear(n_in, n_out))
            self.add_module(f"sn{i}", nn.ReLU(inplace=True))
        self.voting = VotingLayer(10)

    def forward(self, x):
        for name, layer in self.named_children():
            if name == self.flatten_before:
                x = x.flatten(1)
            x = layer(x)
        return x


def vgg13(num_classes=10, **kargs):
    return VGG(VGG13, num_classes)


def cifarnet(num_classes=10, channels=4, hw=8, convs=1, hidden=None, **kargs):
    return CIFAR10Net(num_classes, channels, hw, convs, hidden)
