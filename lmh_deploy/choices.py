"""Every closed set of choices a user makes, as Enums (the CLI shows them as click choices).

The values are the strings the lower layers (``lmh_deploy.models``, ``pipeline/``) take;
``NEURONS`` and ``SUPPORTED_DATASETS`` are read from these Enums, and ``tests/test_api.py``
checks that each Enum lists exactly its registry (``ARCHITECTURES``, ...), so a new
architecture is added in both places or a test fails.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import TypeVar

from lmh_deploy.errors import InputError


class Choice(str, Enum):
    """A string Enum whose str() and format() are its value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Backend(Choice):
    """Where ``run`` executes the compiled network."""

    SIM = "sim"  # our bit-exact integer simulator
    LAVA = "lava"  # Lava's CPU simulation of the fixed_pt ProcessModels
    LOIHI2 = "loihi2"  # Loihi 2 hardware (needs Intel's lava-loihi; refused otherwise)


class LavaConv(Choice):
    """Which convolutions a Lava run puts on Lava's own ``Conv`` process (those it computes
    exactly; the others are ``Sparse`` matrices): see :mod:`lmh_deploy.backends.lava.plan`."""

    AUTO = "auto"  # Sparse (faster) within a memory budget, Conv only where needed to fit it
    ALWAYS = "always"  # every one Conv computes exactly (least memory)
    NEVER = "never"  # none (every convolution a Sparse matrix)


class Target(Choice):
    """What ``compile`` prepares the artifact for."""

    LAVA_SIM = "lava-sim"
    LOIHI2 = "loihi2"


class ExportFormat(Choice):
    """Exchange formats of ``export``."""

    NIR = "nir"
    NETX = "netx"


class Dataset(Choice):
    """Datasets of ``lmh_deploy.models.data.load_dataset``."""

    DIGITS = "digits"
    MNIST5K = "mnist5k"
    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    EVENTS = "events"
    DIGITS_EVENTS = "digits-events"
    N_MNIST = "n-mnist"
    DVS_CIFAR10 = "dvs-cifar10"


class Arch(Choice):
    """The model zoo (``lmh_deploy.models.architectures``)."""

    MLP = "mlp"
    CNN = "cnn"
    VGG13 = "vgg13"
    RESNET19 = "resnet19"
    RESNET20 = "resnet20"


class Neuron(Choice):
    """Neuron of a trained network (qcfs: an ANN, the first stage of hybrid training)."""

    LMH = "lmh"
    LIF = "lif"
    QCFS = "qcfs"


class Factors(Choice):
    """How LM-H factors are learned: one set per layer, or one per time step."""

    PROGRESSIVE = "progressive"
    RADICAL = "radical"


class Loss(Choice):
    """Training loss: cross-entropy on the mean output, or TET (per step)."""

    CE = "ce"
    TET = "tet"


class Norm(Choice):
    """Normalisation layers (auto: none for the MLP, bn otherwise)."""

    AUTO = "auto"
    NONE = "none"
    BN = "bn"
    TDBN = "tdbn"


class Device(Choice):
    """A torch device (under torchrun, cuda means this process's GPU, cuda:LOCAL_RANK)."""

    CPU = "cpu"
    CUDA = "cuda"


E = TypeVar("E", bound=Choice)


def choice(kind: type[E], value: str | E, name: str) -> E:
    """``value`` as a member of ``kind``, or an :class:`InputError` listing the choices."""
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value).lower())
    except ValueError:
        options = ", ".join(m.value for m in kind)
        raise InputError(f"{name}: unknown value {value!r}; supported: {options}") from None


_TORCH_DEVICE = re.compile(r"^(cpu|cuda(:\d{1,2})?)$")


def check_sim_device(device: str | None) -> str | None:
    """``None`` (numpy), ``cpu``, ``cuda`` or ``cuda:N``."""
    if device is None:
        return None
    if not isinstance(device, str) or not _TORCH_DEVICE.match(device):
        raise InputError(f"--device: unknown device {device!r}; supported: cpu, cuda, cuda:N")
    return device
