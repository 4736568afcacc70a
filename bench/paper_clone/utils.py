"""Model surgery with the names and arguments of the paper's ``utils.py`` (written for this
benchmark): MaxPool -> AvgPool, every ReLU -> QCFS(thresh), every QCFS -> LearnableNeuron
with the QCFS threshold as its own."""

from modules import *  # noqa: F403  (the paper's code imports its modules this way)
from torch import nn


def _swap(model, replace):
    for name, child in model._modules.items():
        if child is None:
            continue
        new = replace(child)
        model._modules[name] = new if new is not None else _swap(child, replace)
    return model


def replace_maxpool2d_by_avgpool2d(model):
    def pool(m):
        return nn.AvgPool2d(m.kernel_size, m.stride, m.padding) if isinstance(m, nn.MaxPool2d) else None

    return _swap(model, pool)


def replace_activation_by_QCFS(model, T, thresh):
    return _swap(model, lambda m: QCFS(up=thresh, t=T) if isinstance(m, nn.ReLU) else None)  # noqa: F405


def replace_QCFS_by_Lneuron(model, use_TEBN, use_SEW, T):
    def neuron(m):
        if isinstance(m, QCFS):  # noqa: F405
            return LearnableNeuron(scale=m.up.item(), use_TEBN=use_TEBN, use_SEW=use_SEW, T=T)  # noqa: F405
        return None

    return _swap(model, neuron)


def reset_net(model):
    for m in model.modules():
        if isinstance(m, LearnableNeuron):  # noqa: F405
            m.reset()
    return model
