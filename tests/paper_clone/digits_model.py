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


def resnet(classes=10, width=8):
    """Two blocks (one identity shortcut, one 1x1 conv + BN), AdaptiveAvgPool, ``view``."""
    return snn(resnet20(classes, width=width, in_channels=1))
