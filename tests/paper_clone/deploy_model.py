"""A user's builder file inside their clone of the paper's code: it builds the SNN exactly as
the clone's main.py does, so that lmh-deploy can load the saved state_dict into it.
``size`` goes to the architecture (widths, ``hw`` the input side; see Models/)."""

from Models.ResNet import *  # noqa: F403
from Models.VGG import *  # noqa: F403
from utils import *  # noqa: F403

ARCHS = {"resnet19": resnet19, "resnet20": resnet20, "vgg13": vgg13, "cifarnet": cifarnet}  # noqa: F405


def build(
    arch="resnet20", T=4, use_TEBN=False, online=False, time_slice=2, L=4, thresh=1.0, snn=True, **size
):
    model = ARCHS[arch](**size)
    model = replace_maxpool2d_by_avgpool2d(model)  # noqa: F405
    if use_TEBN:
        model = replace_batchnorm2d_by_TEBN(model, T)  # noqa: F405
    model = replace_activation_by_QCFS(model, L, thresh)  # noqa: F405
    if not snn:
        return model  # the ANN as trained, before conversion
    if online:
        return replace_QCFS_by_Oneuron(model, use_TEBN, False, T, time_slice)  # noqa: F405
    return replace_QCFS_by_Lneuron(model, use_TEBN, False, T)  # noqa: F405
