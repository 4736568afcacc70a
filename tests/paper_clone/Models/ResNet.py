"""ResNets in the style of the paper's ``Models/ResNet.py``: ResNet-19 at the paper's size
(``bench/paper_scale.py``) and a CIFAR ResNet at tiny widths for tests (``resnet20``;
``in_channels=1`` for 8x8 digits)."""

import torch.nn as nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.residual_function(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A 3x3 stem of ``stem`` channels, stages of blocks (``stages``: width, blocks, first
    stride), global average pooling and the classifier (a hidden layer of ``fc_hidden``)."""

    def __init__(self, block, stem, stages, num_classes=10, in_channels=3, fc_hidden=None):
        super().__init__()
        self.in_channels = stem
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, stem, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(*[self._make_layer(block, *stage) for stage in stages])
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        if fc_hidden:
            self.fc = nn.Sequential(
                nn.Linear(self.in_channels, fc_hidden),
                nn.ReLU(inplace=True),
                nn.Linear(fc_hidden, num_classes),
            )
        else:
            self.fc = nn.Linear(self.in_channels, num_classes)

    def _make_layer(self, block, out_channels, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_channels, out_channels, s))
            self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x):
        output = self.stages(self.conv1(x))
        output = self.avg_pool(output)
        output = output.view(output.size(0), -1)
        return self.fc(output)


def resnet19(num_classes=10, width=64, **kargs):
    """The paper's ResNet-19: stem 64; stages 128 x3, 256 x3, 512 x2; fc 256."""
    stages = [(2 * width, 3, 1), (4 * width, 3, 2), (8 * width, 2, 2)]
    return ResNet(BasicBlock, width, stages, num_classes, fc_hidden=256)


def resnet20(num_classes=10, width=4, in_channels=3, blocks=(1, 1), **kargs):
    """Tiny: stages of ``blocks[i]`` blocks of ``width * 2**i`` channels, every stage but the
    first strided (the paper's ResNet-20: ``width=16, blocks=(3, 3, 3)``)."""
    stages = [(width << i, n, 1 if i == 0 else 2) for i, n in enumerate(blocks)]
    return ResNet(BasicBlock, width, stages, num_classes, in_channels)
