"""Nets written the way SpikingJelly's activation_based tutorials write them.

Single-step (``step_mode='s'``, the default): an ``nn.Sequential`` of ``layer.*`` and
``neuron.*`` modules called once per step, ``functional.reset_net`` between samples, the
output firing rate as the prediction (tutorial "Single Fully Connected Layer SNN").
Multi-step (the conv Fashion-MNIST tutorial's ``CSNN``): ``functional.set_step_mode(self,
'm')``, ``forward`` repeats the frame over T (``x.unsqueeze(0).repeat(T, 1, 1, 1, 1)``), runs
the layers on (T, N, ...) and returns the mean over time. Written for these tests; the
modules are SpikingJelly's own.
"""

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

T = 4


def node(kind="LIF", tau=2.0, decay_input=True, v_reset=0.0):
    """One of SpikingJelly's neurons with its surrogate (ATan, as the tutorials use)."""
    common = {"v_reset": v_reset, "surrogate_function": surrogate.ATan()}
    if kind == "IF":
        return neuron.IFNode(**common)
    if kind == "PLIF":
        return neuron.ParametricLIFNode(init_tau=tau, decay_input=decay_input, **common)
    return neuron.LIFNode(tau=tau, decay_input=decay_input, **common)


def mlp(kind="LIF", tau=2.0, decay_input=True, v_reset=0.0, hidden=64):
    """Single-step: Flatten -> Linear -> node -> Linear -> node (rates out)."""
    return nn.Sequential(
        layer.Flatten(),
        layer.Linear(64, hidden),
        node(kind, tau, decay_input, v_reset),
        layer.Linear(hidden, 10),
        node(kind, tau, decay_input, v_reset),
    )


class CSNN(nn.Module):
    """Multi-step conv net: [Conv-BN-IF-MaxPool] x 2 -> Flatten -> Linear-IF -> Linear-IF.

    ``pool_currents``: [Conv-BN-MaxPool-IF] instead (the pool over the BN's output); ``kind``
    another neuron (``"PLIF"``: ``ParametricLIFNode(init_tau=tau)``, the conv tutorial's)."""

    def __init__(self, T=T, channels=8, kind="IF", pool_currents=False, tau=2.0):
        super().__init__()
        self.T = T

        def block(c_in):
            conv = layer.Conv2d(c_in, channels, kernel_size=3, padding=1, bias=False)
            norm, pool = layer.BatchNorm2d(channels), layer.MaxPool2d(2, 2)
            return (
                [conv, norm, pool, node(kind, tau)] if pool_currents else [conv, norm, node(kind, tau), pool]
            )

        self.conv_fc = nn.Sequential(
            *block(1),
            *block(channels),
            layer.Flatten(),
            layer.Linear(channels * 2 * 2, 32, bias=False),
            node(kind, tau),
            layer.Linear(32, 10, bias=False),
            node(kind, tau),
        )
        functional.set_step_mode(self, step_mode="m")

    def forward(self, x: torch.Tensor):
        x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)  # [N, C, H, W] -> [T, N, C, H, W]
        x_seq = self.conv_fc(x_seq)
        fr = x_seq.mean(0)
        return fr


class ZooNet(nn.Module):
    """Multi-step, the model zoo's idiom (``spiking_resnet``, ``spiking_vgg``): plain torch layers
    wrapped in ``layer.SeqToANNContainer`` (run on time and batch merged), neurons between them:
    [SeqToANN(Conv2d, BatchNorm2d) -> IFNode -> SeqToANN(pool)] x 2 -> layer.Flatten ->
    SeqToANN(Linear) -> IFNode. ``pool``: "max" (over spikes) or "avg"."""

    def __init__(self, T=T, channels=8, pool="max"):
        super().__init__()
        self.T = T

        def pool_layer():
            return nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)

        def block(c_in):
            return [
                layer.SeqToANNContainer(
                    nn.Conv2d(c_in, channels, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(channels)
                ),
                node("IF"),
                layer.SeqToANNContainer(pool_layer()),
            ]

        self.features = nn.Sequential(*block(1), *block(channels), layer.Flatten())
        self.fc = nn.Sequential(layer.SeqToANNContainer(nn.Linear(channels * 2 * 2, 10)), node("IF"))
        functional.set_step_mode(self, step_mode="m")

    def forward(self, x: torch.Tensor):
        x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        return self.fc(self.features(x_seq)).mean(0)


def rate(net, x, multi_step):
    """The output firing rate over T steps (multi-step: one call)."""
    if multi_step:
        out = net(x)
    else:
        out = sum(net(x) for _ in range(T)) / T
    functional.reset_net(net)
    return out


def train(net, x, y, *, multi_step=False, epochs=3, lr=1e-2, seed=0):
    """The tutorials' recipe: MSE between the firing rate and the one-hot label, Adam."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            loss = F.mse_loss(rate(net, x[idx], multi_step), F.one_hot(y[idx], 10).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()


@torch.no_grad()
def accuracy(net, x, y, multi_step=False):
    return float((rate(net, x, multi_step).argmax(1) == y).float().mean())


def izhikevich_mlp():
    """A neuron no adapter maps (``neuron.IzhikevichNode``) as the readout: refused naming it."""
    return nn.Sequential(
        layer.Flatten(),
        nn.Sequential(layer.Linear(64, 16), node("IF")),
        layer.Linear(16, 10),
        neuron.IzhikevichNode(),
    )
