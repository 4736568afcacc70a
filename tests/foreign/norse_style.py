"""Nets written the way norse's tutorials write them: ``SequentialState`` of torch layers and
norse cells, run one step at a time with the state passed back (``out, state = model(x,
state)``), the readout a Linear layer averaged over the steps. Written for these tests; the
modules are norse's own."""

import torch
from norse.torch import LIFBoxCell, LIFBoxParameters, SequentialState
from norse.torch.functional.reset import reset_subtract, reset_value

T = 4


def mlp(hidden=64, tau_mem_inv=200.0, v_th=0.3, v_leak=0.0, subtract=False):
    """Flatten -> Linear -> LIFBoxCell -> Linear (dt = 1e-3: a decay of 1 - 0.2 per step)."""
    p = LIFBoxParameters(
        tau_mem_inv=torch.as_tensor(tau_mem_inv),
        v_th=torch.as_tensor(v_th),
        v_leak=torch.as_tensor(v_leak),
        reset_method=reset_subtract if subtract else reset_value,
    )
    return SequentialState(
        torch.nn.Flatten(), torch.nn.Linear(64, hidden), LIFBoxCell(p), torch.nn.Linear(hidden, 10)
    )


def rate(model, x):
    """Mean readout over T steps, the state passed back each step (norse's own loop)."""
    state, outs = None, []
    for _ in range(T):
        out, state = model(x, state)
        outs.append(out)
    return torch.stack(outs).mean(0)


def _fit(model, x, y, loss_of, *, epochs, lr, batch, seed):
    """Adam over shuffled mini-batches; ``loss_of(model, x_batch, y_batch)``."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for start in range(0, len(x), batch):
            idx = perm[start : start + batch]
            loss = loss_of(model, x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def train(model, x, y, *, epochs=3, lr=5e-3, seed=0):
    def loss_of(m, xb, yb):
        return torch.nn.functional.cross_entropy(rate(m, xb), yb)

    _fit(model, x, y, loss_of, epochs=epochs, lr=lr, batch=64, seed=seed)
    model.eval()


@torch.no_grad()
def accuracy(model, x, y):
    return float((rate(model, x).argmax(1) == y).float().mean())


# ---------------------------------------------------------------- norse's tutorial recipe
#: steps of the tutorial-style net (norse's default time constants: 5 ms synapse, 10 ms membrane)
TUTORIAL_T = 8


def tutorial_mlp(hidden=64):
    """``SequentialState(Flatten, Linear, LIFCell, Linear, LICell)`` with norse's default
    parameters (dt = 1e-3), as norse's MNIST tutorial builds it; the hidden Linear has no bias
    (as in norse's own cifar10/cartpole tasks): a bias into a decaying synaptic current has no
    Loihi mapping (``--profile loihi-lif`` adds biases to the membrane)."""
    from norse.torch import LICell, LIFCell

    return SequentialState(
        torch.nn.Flatten(),
        torch.nn.Linear(64, hidden, bias=False),
        LIFCell(),
        torch.nn.Linear(hidden, 10),
        LICell(),
    )


def voltages(model, x, steps=TUTORIAL_T):
    """The readout voltage per step, ``(T, B, 10)`` (the tutorial's loop over time)."""
    state, out = None, []
    for _ in range(steps):
        v, state = model(x, state)
        out.append(v)
    return torch.stack(out)


def decode(v):
    """norse's tutorial decoder: the largest voltage over time, log-softmax."""
    return torch.nn.functional.log_softmax(v.max(0).values, dim=1)


def train_tutorial(model, x, y, *, epochs=3, lr=1e-2, seed=0):
    def loss_of(m, xb, yb):
        return torch.nn.functional.nll_loss(decode(voltages(m, xb)), yb)

    _fit(model, x, y, loss_of, epochs=epochs, lr=lr, batch=32, seed=seed)
    model.eval()


@torch.no_grad()
def tutorial_accuracy(model, x, y, how="max"):
    v = voltages(model, x)
    logits = v.max(0).values if how == "max" else v.mean(0)
    return float((logits.argmax(1) == y).float().mean())
