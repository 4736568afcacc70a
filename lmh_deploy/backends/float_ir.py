"""Float64 reference simulation of a *float* graph IR (before quantisation).

Checks the export (BN folding, bias propagation, residual wiring) against the
PyTorch model, and measures what quantisation changes. Same call shape as
:func:`sim.simulate`; logits are ``mean_t I[t] + bias`` like the PyTorch model.
"""
from __future__ import annotations

import numpy as np

from lmh_deploy.ir import LMH, SYNAPSE_KINDS, Graph, Input, Readout
from lmh_deploy.reports.record import RunRecord
from lmh_deploy.ir.synapses import apply_synapse


def simulate_float(graph: Graph, x: np.ndarray, timesteps: int) -> RunRecord:
    """Run float inputs ``x`` (B, *shape) through Eq. 4 in float64; spikes per LM-H layer."""
    order = graph.order()
    batch = x.shape[0]
    frames = x.reshape(batch, -1).astype(np.float64)
    state, rec = {}, RunRecord(logits=np.zeros((batch, 0)))
    readout_name = graph.of_kind("readout")[0]
    trace = np.zeros((timesteps, batch, graph.node(readout_name).output_size()))
    for name in graph.of_kind("lmh"):
        node = graph.node(name)
        state[name] = (np.zeros((batch, node.size)), np.full((batch, node.size), node.theta / 2))
        rec.spikes[name] = np.zeros((timesteps, batch, node.size), bool)
    for t in range(timesteps):
        values: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.node(name)
            inputs = graph.inputs_of(name)
            if isinstance(node, Input):
                values[name] = frames
            elif node.kind in SYNAPSE_KINDS:
                values[name] = apply_synapse(node, values[inputs[0]])
            elif isinstance(node, LMH):
                k = min(t, node.mu_d.shape[0] - 1)
                v_d, v_s = state[name]
                current = sum(values[src] for src in inputs) + node.bias
                v_d = node.mu_d[k] * v_d + node.mu_s[k] * v_s + current
                m_s = node.lam_s[k] * v_s + node.lam_d[k] * v_d
                spikes = m_s >= node.theta
                state[name] = (v_d, m_s - spikes * node.theta)
                rec.spikes[name][t] = spikes
                values[name] = spikes * node.theta
            elif isinstance(node, Readout):
                trace[t] = sum(values[src] for src in inputs) + node.bias
    rec.final_state = state
    rec.readout_trace = trace
    rec.logits = trace.mean(0)
    return rec
