"""Model surgery in the style of the paper's ``utils.py`` (written for these tests)."""

from torch import nn

from modules import QCFS, TEBN, LearnableNeuron, OnlineNeuron


def _replace(model, pick, make):
    for name, module in model._modules.items():
        if module is None:
            continue
        _replace(module, pick, make)
        if pick(module):
            model._modules[name] = make(module)
    return model


def _is_activation(module):
    name = type(module).__name__.lower()
    return "relu" in name or "qcfs" in name


def replace_maxpool2d_by_avgpool2d(model):
    return _replace(
        model,
        lambda m: type(m).__name__ == "MaxPool2d",
        lambda m: nn.AvgPool2d(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding),
    )


def replace_batchnorm2d_by_TEBN(model, T):
    return _replace(model, lambda m: type(m).__name__ == "BatchNorm2d", lambda m: TEBN(m.num_features, T))


def replace_activation_by_QCFS(model, T, thresh):
    return _replace(model, _is_activation, lambda m: QCFS(up=thresh, t=T))


def replace_QCFS_by_Lneuron(model, use_TEBN, use_SEW, T):
    return _replace(
        model, _is_activation, lambda m: LearnableNeuron(m.up.item(), use_TEBN=use_TEBN, use_SEW=use_SEW, T=T)
    )


def replace_QCFS_by_Oneuron(model, use_TEBN, use_SEW, T, time_slice):
    return _replace(
        model,
        _is_activation,
        lambda m: OnlineNeuron(use_TEBN=use_TEBN, use_SEW=use_SEW, T=T, time_slice=time_slice),
    )


def reset_net(model):
    for module in model.modules():
        if "Neuron" in type(module).__name__:
            module.reset()
    return model
