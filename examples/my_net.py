"""Your own PyTorch model, deployed with ``compile --model``: an snnTorch MLP, written the way
snnTorch's tutorials write one (``init_hidden=True``: each call is one time step and the
neurons keep their state between calls).

    python examples/my_net.py weights.pt     # trains it briefly on digits, saves its state_dict
    lmh-deploy compile weights.pt --model examples/my_net.py:build --input-shape 1,8,8 \\
        --timesteps 4 --dataset digits -o my_build
    lmh-deploy verify my_build

``build`` is the FACTORY that ``--model FILE.py:FACTORY`` names: it returns the module with
its spiking neurons in place; the weights file is its bare ``state_dict``
(docs/interop.md, section 1).
"""

from __future__ import annotations

import sys

import snntorch as snn
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from lmh_deploy.models.data import load_dataset

TIMESTEPS = 4


def build(hidden: int = 64) -> nn.Module:
    """Flatten -> Linear -> Leaky (reset by subtraction) -> Linear: the readout is a current."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, hidden),
        snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="subtract"),
        nn.Linear(hidden, 10),
    )


def mean_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The same input at every step; the logits are the mean output over the steps."""
    for neuron in model.modules():
        if isinstance(neuron, snn.Leaky):
            neuron.reset_mem()
    return torch.stack([model(x) for _ in range(TIMESTEPS)]).mean(0)


def main(out: str, epochs: int = 4) -> None:
    torch.manual_seed(0)
    train, test, _ = load_dataset("digits")
    model = build()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = train.tensors
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            cross_entropy(mean_output(model, x[batch]), y[batch]).backward()
            opt.step()
    with torch.no_grad():
        accuracy = (mean_output(model, test.tensors[0]).argmax(1) == test.tensors[1]).float().mean()
    torch.save(model.state_dict(), out)
    print(f"wrote {out}: test accuracy {100 * float(accuracy):.1f} % after {epochs} epochs")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "weights.pt")
