"""Batched integer simulation of a quantised graph.

Uses :mod:`lmh_deploy.semantics.integer` for every integer operation, the same
functions the Lava ``fixed_pt`` ProcessModel calls, on the ideal timeline
(no synaptic delays: the Lava lowering offsets each layer so that its local
step ``t`` sees what this simulator computes at step ``t``). Several synapse
paths into one layer (residual blocks) add their currents.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmh_deploy.semantics import integer as fx
from lmh_deploy.ir import Graph, QDense, QInput, QLMH, QReadout, validate_quantized
from lmh_deploy.reports.record import RunRecord, dense_synops
from lmh_deploy.ir.synapses import qdense_fan_out


def lmh_params(node: QLMH) -> fx.LMHFixedParams:
    """The fixed-point parameter bundle of one LM-H node."""
    return fx.LMHFixedParams(mu_d=node.mu_d, mu_s=node.mu_s, lam_d_off=node.lam_d_off,
                             lam_s_off=node.lam_s_off, theta=int(node.theta), bias=node.bias)


def lava_weights(node: QDense):
    """The integer weights Lava holds (``2 * mantissa``), as floats for exact BLAS products.

    float32 when a binary-input sum cannot reach 2**24 (``dense_output`` re-checks per call).
    """
    w = fx.WEIGHT_LAVA_SCALE * node.weight_mant
    fan_in = int(np.prod(w.shape[1:]))
    dtype = np.float32 if not node.graded and 254 * fan_in < 2 ** 24 else np.float64
    return sp.csr_matrix(w, dtype=dtype) if sp.issparse(w) else w.astype(dtype)


def synaptic_input(node: QDense, weights, presyn: np.ndarray) -> np.ndarray:
    """Integer current of one synapse path (a convolution or a matrix product)."""
    if node.is_conv:
        return fx.conv_output(weights, node.weight_exp, presyn, node.conv_input_shape,
                              node.conv_stride, node.conv_padding)
    return fx.dense_output(weights, node.weight_exp, presyn)


def simulate(graph: Graph, x_int: np.ndarray, timesteps: int, *,
             record_states: bool = False, record_spikes: bool = True,
             device: str | None = None) -> RunRecord:
    """Run ``B`` samples for ``timesteps`` steps.

    ``x_int`` is the quantised input: (B, *shape) static (presented every step)
    or (T, B, *shape) time-major frames. With ``record_spikes=False`` the run streams:
    memory does not grow with T (only per-step spike counts, ``spike_stats``, are kept).
    ``device`` (e.g. ``"cuda"``, ``"cpu"``) runs the same integer semantics on torch
    tensors there (:func:`simulate_torch`); ``None`` uses numpy.
    """
    validate_quantized(graph)  # refuse an invalid graph in one line naming the node
    if device is not None:
        return simulate_torch(graph, x_int, timesteps, device=device,
                              record_states=record_states, record_spikes=record_spikes)
    order = graph.order()
    q_input = graph.node(order[0])
    assert isinstance(q_input, QInput)
    static = x_int.ndim == len(q_input.shape) + 1
    batch = x_int.shape[0] if static else x_int.shape[1]
    frames = x_int.reshape(batch, -1) if static else None
    state: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    params: dict[str, fx.LMHFixedParams] = {}
    weights, fan_out = {}, {}
    rec = RunRecord(logits=np.zeros((batch, 0), np.int64))
    readout_name = None
    for name in order:
        node = graph.node(name)
        if isinstance(node, QLMH):
            params[name] = lmh_params(node)
            state[name] = params[name].initial_state((batch, node.size))
            if record_spikes:
                rec.spikes[name] = np.zeros((timesteps, batch, node.size), bool)
            rec.spike_stats[name] = {"spikes_per_step": np.zeros(timesteps, np.int64),
                                     "fired": np.zeros((batch, node.size), bool),
                                     "neuron_steps": timesteps * batch * node.size}
            rec.saturation[name] = 0
            if record_states:
                rec.state_trace[name] = (np.zeros((timesteps, batch, node.size), np.int64),
                                         np.zeros((timesteps, batch, node.size), np.int64))
        elif isinstance(node, QDense):
            rec.synops[name] = 0
            weights[name] = lava_weights(node)
            fan_out[name] = qdense_fan_out(node)
        elif isinstance(node, QReadout):
            readout_name = name
    assert readout_name is not None
    readout = graph.node(readout_name)
    readout_trace = np.zeros((timesteps, batch, readout.bias.shape[0]), np.int64)
    for t in range(timesteps):
        values: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.node(name)
            if isinstance(node, QInput):
                values[name] = frames if static else x_int[t].reshape(batch, -1)
                continue
            inputs = graph.inputs_of(name)
            if isinstance(node, QDense):
                pre = values[inputs[0]]
                rec.synops[name] += dense_synops(fan_out[name], pre)
                values[name] = synaptic_input(node, weights[name], pre)
                continue
            a_in = sum(values[src] for src in inputs)
            if isinstance(node, QLMH):
                v_d, v_s, spikes, sat = fx.lmh_step(params[name], t, *state[name], a_in)
                state[name] = (v_d, v_s)
                if record_spikes:
                    rec.spikes[name][t] = spikes
                stats = rec.spike_stats[name]
                stats["spikes_per_step"][t] = np.count_nonzero(spikes)
                stats["fired"] |= spikes
                rec.saturation[name] += sat
                if record_states:
                    rec.state_trace[name][0][t] = v_d
                    rec.state_trace[name][1][t] = v_s
                values[name] = spikes.astype(np.int64)
            elif isinstance(node, QReadout):
                readout_trace[t] = a_in
    for stats in rec.spike_stats.values():
        stats["active_neurons"] = int(stats.pop("fired").sum())
    rec.final_state = state
    rec.readout_trace = readout_trace
    rec.logits = readout_trace.sum(0) + timesteps * readout.bias
    return rec


def simulate_torch(graph: Graph, x_int: np.ndarray, timesteps: int, *, device: str,
                   record_states: bool = False, record_spikes: bool = True) -> RunRecord:
    """:func:`simulate` on torch tensors on ``device``: integer-exact, same record.

    States, factors and currents are int64 tensors and :func:`fixedpoint.lmh_step` runs on
    them unchanged. Synaptic sums use float64 matmul / convolution, exact because every
    partial sum is an integer below 2**53 (checked per layer); TF32 is never used for float64.
    """
    import torch

    dev = torch.device(device)
    as_t = lambda a: torch.tensor(np.asarray(a, np.int64), device=dev)  # noqa: E731
    order = graph.order()
    q_input = graph.node(order[0])
    static = x_int.ndim == len(q_input.shape) + 1
    batch = x_int.shape[0] if static else x_int.shape[1]
    x_all = as_t(x_int)
    rec = RunRecord(logits=np.zeros((batch, 0), np.int64))
    params, state, weights, fan_out, fired, counts = {}, {}, {}, {}, {}, {}
    for name in order:
        node = graph.node(name)
        if isinstance(node, QLMH):
            params[name] = fx.LMHFixedParams(
                mu_d=as_t(node.mu_d), mu_s=as_t(node.mu_s), lam_d_off=as_t(node.lam_d_off),
                lam_s_off=as_t(node.lam_s_off), theta=int(node.theta), bias=as_t(node.bias))
            state[name] = (torch.zeros(batch, node.size, dtype=torch.int64, device=dev),
                           torch.full((batch, node.size), int(node.theta) // 2,
                                      dtype=torch.int64, device=dev))
            counts[name] = []
            fired[name] = torch.zeros(batch, node.size, dtype=torch.bool, device=dev)
            rec.saturation[name] = 0
            if record_spikes:
                rec.spikes[name] = np.zeros((timesteps, batch, node.size), bool)
            if record_states:
                rec.state_trace[name] = (np.zeros((timesteps, batch, node.size), np.int64),
                                         np.zeros((timesteps, batch, node.size), np.int64))
        elif isinstance(node, QDense):
            w = fx.WEIGHT_LAVA_SCALE * node.weight_mant
            if sp.issparse(w):
                w = w.toarray()
            peak = float(np.abs(w).max(initial=0)) * (fx.INPUT_MAX if node.graded else 1)
            if peak * int(np.prod(w.shape[1:])) >= 2.0 ** 53:
                raise OverflowError(f"{name}: synaptic sums exceed the exact float64 range")
            weights[name] = torch.as_tensor(w, dtype=torch.float64, device=dev)
            fan_out[name] = torch.as_tensor(qdense_fan_out(node), dtype=torch.float64, device=dev)
            rec.synops[name] = 0
    readout_name = graph.of_kind("q_readout")[0]
    readout = graph.node(readout_name)
    trace = []
    for t in range(timesteps):
        values = {}
        for name in order:
            node = graph.node(name)
            inputs = graph.inputs_of(name)
            if isinstance(node, QInput):
                values[name] = (x_all if static else x_all[t]).reshape(batch, -1)
            elif isinstance(node, QDense):
                pre = values[inputs[0]]
                active = (pre != 0).to(torch.float64)
                rec.synops[name] += int(torch.round((active @ fan_out[name]).sum()).item())
                pre_f = pre.to(torch.float64)
                if node.is_conv:
                    acc = torch.nn.functional.conv2d(
                        pre_f.reshape((batch,) + tuple(node.conv_input_shape)), weights[name],
                        stride=tuple(node.conv_stride), padding=tuple(node.conv_padding))
                    acc = acc.reshape(batch, -1)
                else:
                    acc = pre_f @ weights[name].T
                values[name] = fx.shift_sum(torch.round(acc).to(torch.int64), node.weight_exp)
            else:
                a_in = sum(values[src] for src in inputs)
                if isinstance(node, QReadout):
                    trace.append(a_in)
                    continue
                v_d, v_s, spikes, sat = fx.lmh_step(params[name], t, *state[name], a_in)
                state[name] = (v_d, v_s)
                rec.saturation[name] += int(sat)
                counts[name].append(spikes.sum())
                fired[name] |= spikes
                if record_spikes:
                    rec.spikes[name][t] = spikes.cpu().numpy()
                if record_states:
                    rec.state_trace[name][0][t] = v_d.cpu().numpy()
                    rec.state_trace[name][1][t] = v_s.cpu().numpy()
                values[name] = spikes.to(torch.int64)
    for name in counts:
        rec.spike_stats[name] = {
            "spikes_per_step": torch.stack(counts[name]).cpu().numpy().astype(np.int64),
            "active_neurons": int(fired[name].sum().item()),
            "neuron_steps": timesteps * batch * graph.node(name).size}
    rec.final_state = {k: (a.cpu().numpy(), b.cpu().numpy()) for k, (a, b) in state.items()}
    rec.readout_trace = torch.stack(trace).cpu().numpy()
    rec.logits = rec.readout_trace.sum(0) + timesteps * readout.bias
    return rec
