"""rockpool nets as rockpool's own "Hello MNIST" tutorial writes and trains them (a builder
file for ``lmh-deploy compile --model rockpool_style.py:FACTORY``).

The tutorial (``docs/basics/hello_MNIST.ipynb``, rockpool 3.1): ``Sequential(LinearTorch((in,
hidden)), LIFTorch(hidden, tau_syn=Constant(50e-3), tau_mem=Constant(100e-3),
threshold=Constant(1.), bias=Constant(0.), dt=10e-3), LinearTorch((hidden, classes)),
LIFTorch(classes, ...))``; input ``(batch, time, channels)``; ``output, _, _ = net(x)``;
Adam on ``net.parameters().astorch()``; the class is ``output.sum(1).argmax(1)``. Here the
input is the digit's 64 pixels repeated over ``T`` steps (direct encoding instead of the
tutorial's Poisson events, so that every run sees the same input); the net is saved with
``net.save(path)``, as rockpool's tutorials save theirs.
"""

from __future__ import annotations

import torch
from rockpool.nn.combinators import Sequential
from rockpool.nn.modules import LIFTorch, LinearTorch
from rockpool.parameters import Constant

T = 8
DT = 10e-3


def mlp(hidden: int = 32, tau: float = 20e-3, bias: float = 0.0) -> object:
    """``LinearTorch -> LIFTorch -> LinearTorch`` with rockpool's default dt (1 ms) and 20 ms
    time constants held fixed (``Constant``: trained, they go negative): alpha = beta =
    exp(-1/20) = 0.951; the readout is the last LinearTorch's output, averaged over time."""
    lif = LIFTorch(hidden, tau_mem=Constant(tau), tau_syn=Constant(tau), bias=Constant(bias))
    return Sequential(LinearTorch((64, hidden)), lif, LinearTorch((hidden, 10)))


def mlp_trained_bias(hidden: int = 32, tau: float = 20e-3) -> object:
    """``mlp`` with ``LIFTorch``'s default bias (no ``bias=`` argument): a trainable
    per-neuron parameter, 0 at first, that training leaves different for every neuron."""
    lif = LIFTorch(hidden, tau_mem=Constant(tau), tau_syn=Constant(tau))
    return Sequential(LinearTorch((64, hidden)), lif, LinearTorch((hidden, 10)))


def tutorial_mlp(hidden: int = 32) -> object:
    """The Hello-MNIST network: two ``LinearTorch -> LIFTorch`` layers with the tutorial's
    constants (dt = 10 ms, tau_mem = 100 ms, tau_syn = 50 ms: alpha = 0.905, beta = 0.819);
    the class is the output neuron that spikes most."""

    def lif(n: int) -> LIFTorch:
        return LIFTorch(
            n,
            tau_syn=Constant(50e-3),
            tau_mem=Constant(100e-3),
            threshold=Constant(1.0),
            bias=Constant(0.0),
            dt=DT,
        )

    return Sequential(LinearTorch((64, hidden)), lif(hidden), LinearTorch((hidden, 10)), lif(10))


def two_hidden(hidden: tuple[int, int] = (48, 24)) -> object:
    """Two hidden ``LinearTorch -> LIFTorch`` layers and a ``LinearTorch`` readout (no bias,
    rockpool's default), time constants held fixed (10 ms synaptic, 30 ms membrane, dt 1 ms:
    beta = 0.905, alpha = 0.967), thresholds and biases trainable (the defaults). The class is
    the readout's output summed over time: where the second hidden layer stays silent on a
    digit, every logit is 0 (a tie the first class wins)."""

    def lif(n: int) -> LIFTorch:
        return LIFTorch(n, tau_mem=Constant(30e-3), tau_syn=Constant(10e-3))

    first, second = hidden
    return Sequential(
        LinearTorch((64, first)),
        lif(first),
        LinearTorch((first, second)),
        lif(second),
        LinearTorch((second, 10)),
    )


def run(net: object, x: torch.Tensor) -> torch.Tensor:
    """rockpool's own run of ``x`` (B, ...) repeated over ``T`` from a fresh state: (B, T, 10)."""
    net.reset_state()  # type: ignore[attr-defined]
    out, _, _ = net(x.reshape(x.shape[0], 1, -1).repeat(1, T, 1))  # type: ignore[operator]
    return out


def train(
    net: object,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 3,
    lr: float = 3e-3,
    over_time: str = "mean",
) -> None:
    """The tutorial's loop (Adam on ``net.parameters().astorch()``, mini-batches of 64), with
    cross-entropy on the output averaged (``over_time="sum"``: summed) over time (its MSE to
    a one-hot spike train silences the output at 8 steps of direct input: 14 % after 3
    epochs)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters().astorch(), lr=lr)  # type: ignore[attr-defined]
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            out = run(net, x[idx])
            logits = out.sum(1) if over_time == "sum" else out.mean(1)
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def accuracy(net: object, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((run(net, x).mean(1).argmax(1) == y).float().mean())
