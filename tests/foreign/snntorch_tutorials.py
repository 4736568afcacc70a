"""Nets written as snnTorch's tutorials write them, and trained the way they train them.

Tutorial 5 ("Training Spiking Neural Networks with snntorch"): a ``nn.Module`` whose
``forward`` initialises the membranes with ``init_leaky()``, loops over ``num_steps`` itself
and returns the spike and membrane records stacked over time; the loss sums cross-entropy of
the output membrane over the steps and the prediction is the output neuron with most spikes.
Written for these tests; ``snn.Leaky`` / ``snn.Synaptic`` are snnTorch's own classes.
"""

import snntorch as snn
import torch
from torch import nn

NUM_STEPS = 4


class Tutorial5Net(nn.Module):
    """fc1 -> lif1 -> fc2 -> lif2, looping over ``num_steps`` inside forward (tutorial 5)."""

    def __init__(self, num_inputs=64, num_hidden=64, num_outputs=10, beta=0.9, num_steps=NUM_STEPS):
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(num_inputs, num_hidden)
        self.lif1 = snn.Leaky(beta=beta)
        self.fc2 = nn.Linear(num_hidden, num_outputs)
        self.lif2 = snn.Leaky(beta=beta)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec = []
        mem2_rec = []
        for _step in range(self.num_steps):
            cur1 = self.fc1(x)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


class SynapticLoopNet(nn.Module):
    """Tutorial 5's loop with ``snn.Synaptic`` (``init_synaptic()`` returns syn, mem)."""

    def __init__(self, num_hidden=64, alpha=0.5, beta=0.9, num_steps=NUM_STEPS):
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(64, num_hidden)
        self.lif1 = snn.Synaptic(alpha=alpha, beta=beta)
        self.fc2 = nn.Linear(num_hidden, 10)
        self.lif2 = snn.Synaptic(alpha=alpha, beta=beta)

    def forward(self, x):
        syn1, mem1 = self.lif1.init_synaptic()
        syn2, mem2 = self.lif2.init_synaptic()
        spk2_rec, mem2_rec = [], []
        for _step in range(self.num_steps):
            spk1, syn1, mem1 = self.lif1(self.fc1(x.flatten(1)), syn1, mem1)
            spk2, syn2, mem2 = self.lif2(self.fc2(spk1), syn2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec), torch.stack(mem2_rec)


class Tutorial6LoopNet(nn.Module):
    """Tutorial 6's conv layers with its functional pooling, ``F.max_pool2d(self.conv1(x), 2)``,
    in tutorial 5's loop over ``num_steps`` inside forward (reset to zero)."""

    def __init__(self, beta=0.8, num_steps=NUM_STEPS):
        super().__init__()
        self.num_steps = num_steps
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.lif1 = snn.Leaky(beta=beta, reset_mechanism="zero")
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.lif2 = snn.Leaky(beta=beta, reset_mechanism="zero")
        self.fc1 = nn.Linear(16 * 2 * 2, 10)
        self.lif3 = snn.Leaky(beta=beta, reset_mechanism="zero")

    def forward(self, x):
        import torch.nn.functional as F

        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        spk3_rec, mem3_rec = [], []
        for _step in range(self.num_steps):
            cur1 = F.max_pool2d(self.conv1(x), 2)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = F.max_pool2d(self.conv2(spk1), 2)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk3, mem3 = self.lif3(self.fc1(spk2.view(x.size(0), -1)), mem3)
            spk3_rec.append(spk3)
            mem3_rec.append(mem3)
        return torch.stack(spk3_rec), torch.stack(mem3_rec)


class RecurrentNet(nn.Module):
    """snn.RLeaky (all-to-all recurrent): not deployable, refused by name."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.lif1 = snn.RLeaky(beta=0.9, linear_features=16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        spk1, mem1 = self.lif1.init_rleaky()
        rec = []
        for _step in range(NUM_STEPS):
            spk1, mem1 = self.lif1(self.fc1(x), spk1, mem1)
            rec.append(self.fc2(spk1))
        return torch.stack(rec)


def conv_net(beta=0.8, pool_spikes=True, norm=False):
    """Tutorials 6/7: Conv2d, MaxPool2d, Leaky(init_hidden=True), ..., output Leaky(output=True).

    ``pool_spikes``: MaxPool2d after the Leaky (pools spikes); False is the tutorial's own
    order, Conv2d -> MaxPool2d -> Leaky (pools currents). ``norm``: a BatchNorm2d after each
    Conv2d (``Conv2d -> BatchNorm2d -> MaxPool2d -> Leaky``)."""

    def block(c_in, c_out):
        conv, pool = nn.Conv2d(c_in, c_out, 3, padding=1), nn.MaxPool2d(2)
        convs = [conv, nn.BatchNorm2d(c_out)] if norm else [conv]
        lif = snn.Leaky(beta=beta, init_hidden=True)
        return [*convs, lif, pool] if pool_spikes else [*convs, pool, lif]

    return nn.Sequential(
        *block(1, 8),
        *block(8, 16),
        nn.Flatten(),
        nn.Linear(16 * 2 * 2, 10),
        snn.Leaky(beta=beta, init_hidden=True, output=True),
    )


def forward_pass(net, data, num_steps=NUM_STEPS):
    """Tutorial 6's loop outside the net: reset the hidden states, call once per step."""
    from snntorch import utils

    spk_rec, mem_rec = [], []
    utils.reset(net)
    for _step in range(num_steps):
        spk_out, mem_out = net(data)
        spk_rec.append(spk_out)
        mem_rec.append(mem_out)
    return torch.stack(spk_rec), torch.stack(mem_rec)


def _train(net, x, y, loss, *, epochs, lr, seed):
    """The tutorials' loop: Adam, shuffled batches of 64, ``loss(net, x, y)`` per batch."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999))
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            net.train()
            value = loss(net, x[idx], y[idx])
            opt.zero_grad()
            value.backward()
            opt.step()
    net.eval()


def train_conv_net(net, x, y, *, epochs=4, lr=1e-2, seed=0):
    """Tutorial 6's training: ``SF.ce_rate_loss`` on the output spikes."""
    import snntorch.functional as SF

    rate_loss = SF.ce_rate_loss()

    def loss(net, xb, yb):
        return rate_loss(forward_pass(net, xb)[0], yb)

    _train(net, x, y, loss, epochs=epochs, lr=lr, seed=seed)


def train_loop_net(model, x, y, *, epochs=3, lr=5e-3, seed=0, rate=False):
    """Tutorial 5's training: sum over steps of CE(mem record[step], y); ``rate``: tutorial
    6's ``SF.ce_rate_loss`` on the spike record instead."""
    import snntorch.functional as SF

    ce, rate_loss = nn.CrossEntropyLoss(), SF.ce_rate_loss()

    def loss(net, xb, yb):
        spk_rec, mem_rec = net(xb)
        if rate:
            return rate_loss(spk_rec, yb)
        return sum(ce(mem_rec[step], yb) for step in range(mem_rec.shape[0]))

    _train(model, x, y, loss, epochs=epochs, lr=lr, seed=seed)


@torch.no_grad()
def loop_net_accuracy(model, x, y):
    """Tutorial 5's test: the output neuron with the most spikes."""
    spk_rec, _ = model(x)
    return float((spk_rec.sum(0).argmax(1) == y).float().mean())
