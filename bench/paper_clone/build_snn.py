"""The builder file a user of the paper's code writes inside their clone for
``lmh-deploy compile W.pt --model build_snn.py:FACTORY``: the networks as its ``main.py``
builds them (MaxPool -> AvgPool, ReLU -> QCFS, QCFS -> per-step LearnableNeuron)."""

from utils import *  # noqa: F403
from Models.ResNet import *  # noqa: F403
from Models.VGG import *  # noqa: F403


def _snn(ann, T=4):
    ann = replace_maxpool2d_by_avgpool2d(ann)  # noqa: F405
    ann = replace_activation_by_QCFS(ann, 4, 1.0)  # noqa: F405
    return replace_QCFS_by_Lneuron(ann, False, False, T)  # noqa: F405


def resnet19_snn(num_classes=10, T=4):
    return _snn(resnet19(num_classes), T)  # noqa: F405


def vgg13_snn(num_classes=10, T=4):
    return _snn(vgg13(num_classes), T)  # noqa: F405


def cifarnet_snn(T=4):
    return _snn(cifarnet(), T)  # noqa: F405
