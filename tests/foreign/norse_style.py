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


def train(model, x, y, *, epochs=3, lr=5e-3, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            loss = torch.nn.functional.cross_entropy(rate(model, x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


@torch.no_grad()
def accuracy(model, x, y):
    return float((rate(model, x).argmax(1) == y).float().mean())
