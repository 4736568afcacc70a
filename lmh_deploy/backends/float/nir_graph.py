"""A reference executor of a NIR graph itself (float64), the float side of ``verify`` for NIR.

It runs the NIR nodes as NIR defines them, independently of the IR mapping: Affine, Linear,
Conv2d (torch's conv2d), SumPool2d, AvgPool2d, Flatten, and forward-Euler LIF / IF / CubaLIF
with NIR's rules (spike at ``v > v_threshold``, then ``v = v_reset``; states from 0) or,
for files written by lmh-deploy, each layer's own rules from its ``lmh_rules`` metadata.
A node with several inputs sums them. The input is presented at every step; the logits are
the mean of the Output over the steps.
"""

from __future__ import annotations

from typing import Any

import nir
import numpy as np
import torch
import torch.nn.functional as F

from lmh_deploy.frontends.nir import flatten_output, input_shape, plain
from lmh_deploy.backends.record import RunRecord

NEURONS = (nir.LIF, nir.IF, nir.CubaLIF)


def _order(g: nir.NIRGraph) -> list[str]:
    preds = {k: [a for a, b in g.edges if b == k] for k in g.nodes}
    order: list[str] = []
    while len(order) < len(g.nodes):
        ready = [k for k in g.nodes if k not in order and all(p in order for p in preds[k])]
        if not ready:
            raise ValueError("NIR graph has a cycle; the reference executor runs feed-forward graphs only")
        order.extend(ready)
    return order


def _pair(v: Any) -> tuple[int, int]:
    arr = np.asarray(v).reshape(-1)
    return (int(arr[0]), int(arr[-1]))


def _synapse(node: nir.NIRNode, x: np.ndarray) -> np.ndarray:
    """One synaptic node on (B, ...) float64 inputs."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        y = x.reshape(len(x), -1) @ np.asarray(node.weight, dtype=np.float64).T
        return y + np.asarray(node.bias).reshape(-1) if isinstance(node, nir.Affine) else y
    if isinstance(node, nir.Flatten):
        return x.reshape(len(x), *flatten_output(node, x.shape[1:], "NIR Flatten"))
    w = np.asarray(getattr(node, "weight", np.zeros((1, 1, 1, 1))), dtype=np.float64)
    if isinstance(node, nir.Conv2d):
        shape = (w.shape[1], *_pair(node.input_shape))
        pad = node.padding if isinstance(node.padding, str) else _pair(node.padding)
        out = F.conv2d(
            torch.from_numpy(x.reshape(len(x), *shape)),
            torch.from_numpy(w),
            torch.from_numpy(np.asarray(node.bias, dtype=np.float64).reshape(-1)),
            stride=_pair(node.stride),
            padding=pad,
            dilation=_pair(node.dilation),
            groups=int(node.groups),
        )
        return out.numpy()
    kernel, stride = _pair(node.kernel_size), _pair(node.stride)
    y = F.avg_pool2d(torch.from_numpy(x), kernel, stride, _pair(node.padding), count_include_pad=True).numpy()
    return y * (kernel[0] * kernel[1]) if isinstance(node, nir.SumPool2d) else y


class _Neuron:
    """Euler-step state of one NIR neuron node (rules: NIR's, or lmh-deploy's metadata)."""

    def __init__(
        self, node: nir.NIRNode, shape: tuple[int, ...], dt: float, rules: dict[str, Any] | None
    ) -> None:
        self.node, self.dt = node, dt

        def get(attr: str) -> np.ndarray:
            return np.broadcast_to(np.asarray(getattr(node, attr), dtype=np.float64), shape)

        self.thr, self.v_reset = get("v_threshold"), get("v_reset")
        self.rules = rules or {}
        self.v = np.full(shape, float(self.rules.get("v_s_init", 0.0)))
        v_d_init = np.asarray(self.rules.get("v_d_init", 0.0), np.float64)  # one, or per neuron
        self.i = np.full(shape, v_d_init if v_d_init.ndim == 0 else v_d_init.reshape(shape))
        self.s_prev = np.zeros(shape, bool)
        self.get = get

    def step(self, current: np.ndarray) -> np.ndarray:
        n, dt, get = self.node, self.dt, self.get
        if isinstance(n, nir.IF):
            v = self.v + dt * get("r") * current
        else:
            if isinstance(n, nir.CubaLIF):
                self.i = self.i + dt / get("tau_syn") * (get("w_in") * current - self.i)
                current, tau = self.i, get("tau_mem")
            else:
                tau = get("tau")
            v = self.v + dt / tau * (get("v_leak") - self.v + get("r") * current)
        reset = self.rules.get("reset", "set")
        reset_value = float(self.rules["reset_value"]) if "reset_value" in self.rules else self.v_reset
        next_step = self.rules.get("reset_timing") == "next-step"
        if next_step:
            v = v - self.thr * self.s_prev if reset == "subtract" else np.where(self.s_prev, reset_value, v)
        spikes = v >= self.thr if self.rules.get("threshold_test") == ">=" else v > self.thr
        if not next_step:
            v = v - self.thr * spikes if reset == "subtract" else np.where(spikes, reset_value, v)
        self.v, self.s_prev = v, spikes
        return spikes.astype(np.float64)


def run_nir_reference(
    g: nir.NIRGraph, x: np.ndarray, timesteps: int, dt: float, *, source_neurons: dict[str, str]
) -> RunRecord:
    """Run ``x`` (B, *input shape) through ``g``; spikes (T, B, n) under the IR layer names."""
    order = _order(g)
    preds = {k: [a for a, b in g.edges if b == k] for k in g.nodes}
    graph_rules = plain(dict(g.metadata or {})).get("lmh_deploy_rules") or {}
    batch = len(x)
    x = np.asarray(x, dtype=np.float64)
    in_name = next(k for k in order if isinstance(g.nodes[k], nir.Input))
    in_shape = input_shape(g, in_name)
    frame = x.reshape(batch, *in_shape)
    state: dict[str, _Neuron] = {}
    ir_of = {nir_name: ir_name for ir_name, nir_name in source_neurons.items()}
    spikes: dict[str, list[np.ndarray]] = {ir: [] for ir in source_neurons}
    outputs = []
    for _ in range(timesteps):
        values: dict[str, np.ndarray] = {}
        for name in order:
            node = g.nodes[name]
            if isinstance(node, nir.Input):
                values[name] = frame
                continue
            inp = np.sum([values[p] for p in preds[name]], axis=0)
            if isinstance(node, NEURONS):
                if name not in state:
                    rules = plain(dict(node.metadata or {})).get("lmh_rules") or graph_rules.get(name)
                    state[name] = _Neuron(node, inp.shape[1:], dt, rules)
                out = state[name].step(inp)
                if name in ir_of:
                    spikes[ir_of[name]].append(out.reshape(batch, -1) > 0)
                values[name] = out
            elif isinstance(node, nir.Output):
                values[name] = inp
                outputs.append(inp.reshape(batch, -1))
            else:
                values[name] = _synapse(node, inp)
    trace = np.stack(outputs)
    rec = RunRecord(logits=trace.mean(0), readout_trace=trace)
    rec.spikes = {k: np.stack(v) for k, v in spikes.items()}
    return rec
