"""A ``forward()`` that loops over time itself (snnTorch tutorial 5 style) -> its first step.

snnTorch's tutorials write::

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        spk_rec = []
        for step in range(num_steps):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk_rec.append(spk2)
        return torch.stack(spk_rec, dim=0), torch.stack(mem_rec, dim=0)

torch.fx unrolls the Python loop, so each neuron module is called ``num_steps`` times in
the trace. Steps only talk to each other through the neurons' state arguments (``mem1``),
so the graph of step 0 -- the ancestors of the first element of the returned record,
following only each neuron call's input, not its state -- is the per-step network the rest of
the frontend maps. The deployed network runs that step ``num_steps`` times, with the neuron
state kept in the neurons, which is what the loop does.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx

from lmh_deploy.ir import IRError


class TimeLoopError(IRError):
    """A loop over time in ``forward()`` whose per-step network cannot be isolated."""


@dataclass(frozen=True)
class TimeLoop:
    """What the loop looked like: its step count and which returned record is the output."""

    steps: int
    #: index of the record (spikes over time) in the returned tuple; None: a bare tensor
    output_index: int | None


def _neuron_calls(gm: fx.GraphModule, is_neuron) -> dict[str, list[fx.Node]]:
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and is_neuron(gm.get_submodule(str(node.target))):
            calls.setdefault(str(node.target), []).append(node)
    return calls


def _first_element(record: object, steps: int, where: str) -> fx.Node:
    """``torch.stack([r0, r1, ...], dim=0)`` -> ``r0``."""
    if not (
        isinstance(record, fx.Node)
        and record.op == "call_function"
        and record.target is torch.stack
        and isinstance(record.args[0], (list, tuple))
    ):
        raise TimeLoopError(
            f"{where}: forward() loops over {steps} time steps; return the per-step "
            f"outputs stacked over time (torch.stack(spk_rec, dim=0)) so each step's output is known"
        )
    dim = record.args[1] if len(record.args) > 1 else record.kwargs.get("dim", 0)
    items = record.args[0]
    if dim != 0 or len(items) != steps or not isinstance(items[0], fx.Node):
        raise TimeLoopError(
            f"{where}: expected torch.stack(...) of one output per step over dim 0 "
            f"({steps} steps), got {len(items)} items over dim {dim}"
        )
    return items[0]


def _is_state(node: fx.Node, calls: dict[str, list[fx.Node]]) -> bool:
    """``neuron(...)[i]`` with i > 0: a membrane/synaptic record, not spikes."""
    neuron_nodes = {n for nodes in calls.values() for n in nodes}
    return bool(
        node.op == "call_function"
        and node.target is operator.getitem
        and node.args[0] in neuron_nodes
        and node.args[1] != 0
    )


def first_step(gm: fx.GraphModule, is_neuron) -> tuple[fx.GraphModule, TimeLoop] | None:
    """The one-step graph of a module whose forward loops over time; None if it does not.

    A loop is recognised by every neuron module being called the same number (> 1) of times.
    """
    calls = _neuron_calls(gm, is_neuron)
    counts = {path: len(nodes) for path, nodes in calls.items()}
    if not counts or max(counts.values()) == 1:
        return None
    if len(set(counts.values())) != 1:
        raise TimeLoopError(
            f"forward() calls its neurons different numbers of times ({counts}); a loop over "
            f"time must call every neuron once per step"
        )
    steps = next(iter(counts.values()))
    output = next(n for n in gm.graph.nodes if n.op == "output")
    value = output.args[0]
    records = list(value) if isinstance(value, (tuple, list)) else [value]
    firsts = [_first_element(r, steps, "model output") for r in records]
    spikes = [i for i, f in enumerate(firsts) if not _is_state(f, calls)]
    if not spikes:
        raise TimeLoopError(
            "model output: forward() returns only membrane/synaptic records; return the "
            "spike record (or the readout layer's output) first, e.g. torch.stack(spk_rec)"
        )
    index = spikes[0]
    target = firsts[index]

    keep: set[fx.Node] = set()
    todo = [target]
    while todo:
        node = todo.pop()
        if node in keep:
            continue
        keep.add(node)
        if node.op == "call_module" and str(node.target) in calls:
            inputs = [node.args[0]] if node.args and isinstance(node.args[0], fx.Node) else []
        else:
            inputs = list(node.all_input_nodes)
        todo.extend(inputs)

    step = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node not in keep:
            continue
        if node.op == "call_module" and str(node.target) in calls:
            env[node] = step.call_module(str(node.target), (env[node.args[0]],))
        else:
            env[node] = step.node_copy(node, lambda n: env[n])
    step.output(env[target])
    loop = TimeLoop(steps=steps, output_index=index if isinstance(value, (tuple, list)) else None)
    return fx.GraphModule(gm, step), loop
