"""A builder file for 8x8 one-channel digits, as a user of the paper's code writes one in
their clone: an ordinary ANN with nn.ReLU, converted as main.py converts (ReLU -> QCFS ->
per-step ``LearnableNeuron`` with the QCFS threshold 1); training saves a bare state_dict."""

from torch import nn

from Models.ResNet import resnet20
from modules import LearnableNeuron  # noqa: F401  (tests place the neuron themselves too)
from utils import replace_activation_by_QCFS, replace_QCFS_by_Lneuron


def snn(ann, T=4):
    return replace_QCFS_by_Lneuron(replace_activation_by_QCFS(ann, 4, 1.0), False, False, T)


def mlp(hidden=64, classes=10):
    return snn(
        nn.Sequential(
            nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, classes)
        )
    )


def cnn(channels=8, classes=10):
    """VGG-style blocks before main.py's ``replace_maxpool2d_by_avgpool2d``: Conv2d ->
    BatchNorm2d -> MaxPool2d -> ReLU (the pool over the currents), twice, then a Linear."""
    c = channels
    return snn(
        nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * c * 4, classes),
        )
    )  # fmt: skip


def resnet(classes=10, width=8):
    """Two blocks (one identity shortcut, one 1x1 conv + BN), AdaptiveAvgPool, ``view``."""
    return snn(resnet20(classes, width=width, in_channels=1))
