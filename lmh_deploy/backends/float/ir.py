"""Float64 reference simulation of a *float* graph IR (before quantisation).

Checks the export (BN folding, bias propagation, residual wiring) against the
PyTorch model, and measures what quantisation changes. Same call shape as
:func:`sim.simulate`; logits are ``mean_t I[t] + bias`` like the PyTorch model.
"""

from __future__ import annotations

import numpy as np

from lmh_deploy.semantics.readout import readout_sum
from lmh_deploy.ir import LMH, SYNAPSE_KINDS, Graph, Input, Readout, validate
from lmh_deploy.backends.record import RunRecord
from lmh_deploy.ir.synapses import apply_synapse
from lmh_deploy.semantics.reference import float_initial_state, lmh_float_step


def simulate_float(graph: Graph, x: np.ndarray, timesteps: int) -> RunRecord:
    """Run float inputs through Eq. 4 (with each layer's rules) in float64.

    ``x``: static ``(B, *shape)`` (every step) or time-major frames ``(T', B, *shape)``.
    """
    validate(graph)  # refuse an invalid graph in one line naming the node
    order = graph.order()
    static = x.ndim == len(graph.node(order[0]).shape) + 1
    batch = x.shape[0] if static else x.shape[1]
    x = np.asarray(x, np.float64)
    frames = x.reshape(batch, -1)
    state, rec = {}, RunRecord(logits=np.zeros((batch, 0)))
    readout_name = graph.of_kind("readout")[0]
    trace = np.zeros((timesteps, batch, graph.node(readout_name).output_size()))
    for name in graph.of_kind("lmh"):
        node = graph.node(name)
        state[name] = float_initial_state(node, (batch, node.size))
        rec.spikes[name] = np.zeros((timesteps, batch, node.size), np.int16 if node.max_spikes > 1 else bool)
    for t in range(timesteps):
        values: dict[str, np.ndarray] = {}
        for name in order:
            node = graph.node(name)
            inputs = graph.inputs_of(name)
            if isinstance(node, Input):
                values[name] = frames if static else x[t].reshape(batch, -1)
            elif node.kind in SYNAPSE_KINDS:
                values[name] = apply_synapse(node, values[inputs[0]])
            elif isinstance(node, LMH):
                prev = rec.spikes[name][t - 1] if t else None
                v_d, v_s, spikes = lmh_float_step(
                    node, t, *state[name], np.sum([values[src] for src in inputs], axis=0), prev
                )
                state[name] = (v_d, v_s)
                rec.spikes[name][t] = spikes
                values[name] = spikes * node.theta
            elif isinstance(node, Readout):
                trace[t] = sum(values[src] for src in inputs) + node.bias
    rec.final_state = state
    rec.readout_trace = trace
    readout = graph.node(readout_name)
    assert isinstance(readout, Readout)
    rec.logits = readout_sum(trace, np.zeros(1), readout.leaky) / timesteps
    return rec
