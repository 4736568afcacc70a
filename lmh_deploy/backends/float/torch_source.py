"""The user's own PyTorch module, run in PyTorch as its author runs it: one call per step.

This is the float side of ``verify`` for modules compiled with ``--model FILE.py:FACTORY``
(or ``lmh_deploy.compile(module, ...)``): every neuron's state is reset through its
adapter, the same input is presented for ``T`` calls, and the logits are the mean output
over the steps. Spikes of each neuron module are recorded under the name of the LM-H IR
node it became (``graph.meta["source_neurons"]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lmh_deploy.errors import InputError
from lmh_deploy.frontends.neurons import LEAKY_READOUT, adapter_for
from lmh_deploy.frontends.time_batched import time_batched_steps
from lmh_deploy.backends.record import RunRecord


@torch.no_grad()
def run_source(
    module: nn.Module,
    x: np.ndarray,
    timesteps: int,
    *,
    source_neurons: dict[str, str],
    output_index: int | None = None,
    time_loop: int | None = None,
    time_repeat: int | None = None,
    readout_cell: str | None = None,
    batch_time: bool = False,
) -> RunRecord:
    """Run ``x`` (B, *input_shape) for ``timesteps`` steps; spikes (T, B, n) per IR neuron.

    ``time_loop``: the module's forward() loops over this many steps itself and returns
    records stacked over time (one call runs all steps; snnTorch tutorial 5). ``time_repeat``:
    it repeats its input over a leading time axis itself, its layers run multi-step on
    (T, B, ...) and it returns the mean over time (SpikingJelly 'm' mode: only that mean is
    observable, so every step of the readout trace holds it). A module that takes all steps in
    one call with time merged into the batch (the paper's TEBN mode) is fed as the paper's
    ``eval_snn`` feeds it: the input repeated ``T`` times and merged to ``(T*B, ...)``, its
    output ``(T*B, classes)`` split back into steps. ``readout_cell``: the module path of a
    leaky-integrator readout (norse ``LICell``) whose state is kept between the steps.
    ``batch_time``: the module takes ``(B, T, ...)`` in one call and returns ``(B, T, ...)``
    (rockpool: the input repeated over ``T``, one call from a fresh state)."""
    batched = time_batched_steps(module)
    for own_steps, how in ((time_loop or time_repeat, "itself"), (batched, "in one call (use_TEBN)")):
        if own_steps is not None and own_steps != timesteps:
            raise InputError(
                f"{type(module).__name__}.forward() runs {own_steps} time steps {how}; it cannot "
                f"be run for {timesteps} (use --timesteps {own_steps})"
            )
    module.eval()
    layers = {ir_name: module.get_submodule(path) for ir_name, path in source_neurons.items()}
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    # a MaxPool2d over spikes became an OR layer of neurons: its output is recorded, no state
    neurons = {name: m for name, m in layers.items() if not isinstance(m, nn.MaxPool2d)}
    adapters = {ir_name: adapter_for(m, source_neurons[ir_name]) for ir_name, m in neurons.items()}
    # neurons that may send several spikes a step are recorded as their counts, others as 0/1
    graded = {n: adapters[n].graded_spikes for n in neurons}
    hooks: list[Any] = []
    cell = None if readout_cell is None else module.get_submodule(readout_cell)
    if cell is not None:
        hooks += LEAKY_READOUT.step_hooks(cell)
    for ir_name, m in layers.items():
        if ir_name in adapters:
            hooks += adapters[ir_name].step_hooks(m)

        def record(mod, args, out, key=ir_name):
            spikes = out[0] if isinstance(out, tuple) else out
            spikes = torch.round(spikes).to(torch.int16) if graded.get(key) else spikes != 0
            if time_repeat:  # a multi-step layer: (T, B, ...) in one call, or (T*B, ...) step-major
                captured[key].extend(spikes.reshape(time_repeat, len(x), -1))  # (SeqToANNContainer)
                return
            if batch_time:  # (B, T, ...) in one call
                captured[key].extend(spikes.transpose(0, 1).reshape(spikes.shape[1], spikes.shape[0], -1))
                return
            spikes = spikes.reshape(spikes.shape[0], -1)
            if batched is None:
                captured[key].append(spikes)
            else:  # (T*B, n), step-major as MergeTemporalDim leaves it
                captured[key].extend(spikes.reshape(batched, -1, spikes.shape[1]).unbind(0))

        hooks.append(m.register_forward_hook(record))
    try:
        param = next(nn.Module.parameters(module), None)  # rockpool overrides parameters()
        dtype = param.dtype if param is not None else torch.float32
        xt = torch.as_tensor(np.array(x), dtype=dtype)  # a copy: --inputs may be read-only (mmap)
        for name, m in neurons.items():
            adapters[name].reset(m)
        if cell is not None:
            LEAKY_READOUT.reset(cell)
        outputs = []
        if batched is not None:
            xt = xt.unsqueeze(0).repeat(batched, *([1] * xt.ndim)).flatten(0, 1)
        if batch_time:
            xt = xt.unsqueeze(1).repeat(1, timesteps, *([1] * (xt.ndim - 1)))
        for _ in range(1 if time_loop or time_repeat or batched or batch_time else timesteps):
            out = module(xt)
            if output_index is not None:
                out = out[output_index]
            if time_loop:  # (T, B, ...) records
                outputs.extend(out.reshape(out.shape[0], out.shape[1], -1).double())
            elif time_repeat:  # the mean over the steps
                outputs.extend([out.reshape(out.shape[0], -1).double()] * timesteps)
            elif batch_time:  # (B, T, ...)
                outputs.extend(out.transpose(0, 1).reshape(timesteps, out.shape[0], -1).double())
            elif batched:  # (T*B, ...), step-major
                outputs.extend(out.reshape(batched, -1, out[0].numel()).double())
            else:
                outputs.append(out.reshape(out.shape[0], -1).double())
        for name, m in neurons.items():
            adapters[name].reset(m)
        if cell is not None:
            LEAKY_READOUT.reset(cell)
    finally:
        for h in hooks:
            h.remove()
    trace = torch.stack(outputs).numpy()
    rec = RunRecord(logits=trace.mean(0), readout_trace=trace)
    for name, steps in captured.items():
        rec.spikes[name] = torch.stack(steps).numpy()
    return rec


def run_traced_source(module: nn.Module, x: np.ndarray, timesteps: int, meta: dict[str, Any]) -> RunRecord:
    """:func:`run_source` as the frontend found ``module`` to run (``meta``: the float graph's
    ``source_*`` entries: its neurons, output, own time loop or repeat, readout cell, time
    axis). Every run of a traced module goes through here, so the bias correction's counts
    and ``verify``'s float side see the same steps."""
    return run_source(
        module,
        x,
        timesteps,
        source_neurons=meta["source_neurons"],
        output_index=meta.get("source_output_index"),
        time_loop=meta.get("source_time_loop"),
        time_repeat=meta.get("source_time_repeat"),
        readout_cell=meta.get("source_readout_cell"),
        batch_time=bool(meta.get("source_batch_time")),
    )
