"""Model surgery in the paper's style: MaxPool -> AvgPool, every ReLU -> a LearnableNeuron."""

from modules import *  # noqa: F403  (the paper's code imports its modules this way)
from torch import nn


def replace_maxpool2d_by_avgpool2d(model):
    for name, child in model._modules.items():
        if isinstance(child, nn.MaxPool2d):
            model._modules[name] = nn.AvgPool2d(child.kernel_size, child.stride)
        elif child is not None and len(child._modules) > 0:
            replace_maxpool2d_by_avgpool2d(child)
    return model


def replace_relu_by_Lneuron(model, thresh=1.0):
    for name, child in model._modules.items():
        if isinstance(child, nn.ReLU):
            model._modules[name] = LearnableNeuron(scale=thresh)  # noqa: F405
        elif child is not None and len(child._modules) > 0:
            replace_relu_by_Lneuron(child, thresh)
    return model


def reset_net(model):
    for m in model.modules():
        if hasattr(m, "reset"):
            m.reset()
