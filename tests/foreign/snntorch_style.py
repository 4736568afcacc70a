"""Test models written the way snnTorch's tutorials write them (init_hidden=True, per step).

Written for these tests; ``snn.Leaky`` / ``snn.Synaptic`` are snnTorch's own classes.
"""

import snntorch as snn
from torch import nn


def leaky_mlp(reset="subtract", beta=0.9, hidden=64, spiking_output=False, threshold=1.0, learn_beta=False):
    """Flatten -> Linear -> Leaky -> Linear [-> Leaky(output=True)]: rate or current readout
    (``learn_beta``: the hidden layer's beta is trained, as snnTorch's tutorials allow)."""
    layers = [
        nn.Flatten(),
        nn.Linear(64, hidden),
        snn.Leaky(
            beta=beta, threshold=threshold, init_hidden=True, reset_mechanism=reset, learn_beta=learn_beta
        ),
        nn.Linear(hidden, 10),
    ]
    if spiking_output:
        layers.append(
            snn.Leaky(beta=beta, threshold=threshold, init_hidden=True, output=True, reset_mechanism=reset)
        )
    return nn.Sequential(*layers)


def synaptic_mlp(reset="subtract", alpha=0.4, beta=0.9, hidden=64, reset_delay=True):
    """Flatten -> Linear -> Synaptic -> Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, hidden),
        snn.Synaptic(
            alpha=alpha, beta=beta, init_hidden=True, reset_mechanism=reset, reset_delay=reset_delay
        ),
        nn.Linear(hidden, 10),
    )


def leaky_convnet(reset="subtract", beta=0.8):
    """A small conv net, as snnTorch's convolutional tutorial (AvgPool for MaxPool)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.AvgPool2d(2),
        snn.Leaky(beta=beta, init_hidden=True, reset_mechanism=reset),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10),
    )
