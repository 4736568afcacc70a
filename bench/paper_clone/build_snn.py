"""The builder file a user of the paper's code writes inside their clone for
``lmh-deploy compile --model build_snn.py:FACTORY``: the networks as its ``main.py`` builds
them (MaxPool -> AvgPool, ReLU -> LearnableNeuron), untrained here."""

from utils import *  # noqa: F403
from Models.ResNet import *  # noqa: F403
from Models.VGG import *  # noqa: F403


def _snn(ann):
    return replace_relu_by_Lneuron(replace_maxpool2d_by_avgpool2d(ann))  # noqa: F405


def resnet19_snn(num_classes=10):
    return _snn(resnet19(num_classes))  # noqa: F405


def vgg13_snn(num_classes=10):
    return _snn(vgg13(num_classes))  # noqa: F405


def cifarnet_snn():
    return _snn(cifarnet())  # noqa: F405
