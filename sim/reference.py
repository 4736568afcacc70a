"""The slow reference run: one step at a time, straight through the semantics functions.

No chunking, no compiled kernels, no choice of ways: :func:`lmh_deploy.semantics.integer.lmh_step`
for every layer and :func:`~lmh_deploy.semantics.integer.dense_output` /
:func:`~lmh_deploy.semantics.integer.conv_output` for every synapse path (then
:func:`~lmh_deploy.semantics.pooling.max_pool` where it pools). The fast paths
of :func:`lmh_deploy.sim.simulate` are tested and benchmarked against it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lmh_deploy.ir import QLMH, Graph, QDense, QInput, QReadout
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.pooling import max_pool
from lmh_deploy.semantics.readout import readout_sum


def _synapse(node: QDense, presyn: np.ndarray) -> np.ndarray:
    pool = node.max_pool
    if pool is not None:
        return max_pool(_synapse(dataclasses.replace(node, pool_kernel=None), presyn), pool.windows())
    weights = fx.WEIGHT_LAVA_SCALE * node.weight_mant
    if node.is_conv:
        return fx.conv_output(
            np.asarray(weights),
            node.weight_exp,
            presyn,
            node.conv_input_shape,
            node.conv_stride,
            node.conv_padding,
        )
    return fx.dense_output(weights, node.weight_exp, presyn)


def simulate_reference(graph: Graph, x_int: np.ndarray, timesteps: int) -> dict:
    """Spikes (T, B, n) per layer, final ``(v_d, v_s)`` and logits of a plain step loop."""
    order = graph.order()
    q_input = graph.node(order[0])
    assert isinstance(q_input, QInput)
    static = x_int.ndim == len(q_input.shape) + 1
    batch = x_int.shape[0] if static else x_int.shape[1]
    params = {n: fx.layer_params(graph.node(n)) for n in order if isinstance(graph.node(n), QLMH)}
    state = {n: (*p.initial_state((batch, graph.node(n).size)), None) for n, p in params.items()}
    spikes = {n: [] for n in params}
    trace, readout = [], None
    for t in range(timesteps):
        values = {}
        for name in order:
            node = graph.node(name)
            inputs = graph.inputs_of(name)
            if isinstance(node, QInput):
                values[name] = (x_int if static else x_int[t]).reshape(batch, -1).astype(np.int64)
            elif isinstance(node, QDense):
                values[name] = _synapse(node, values[inputs[0]])
            elif isinstance(node, QLMH):
                a_in = sum(values[src] for src in inputs)
                v_d, v_s, s_prev = state[name]
                v_d, v_s, s, _ = fx.lmh_step(params[name], t, v_d, v_s, a_in, s_prev)
                state[name] = (v_d, v_s, s)
                spikes[name].append(s)
                values[name] = s.astype(np.int64)
            elif isinstance(node, QReadout):
                trace.append(sum(values[src] for src in inputs))
                readout = node
    return {
        "spikes": {n: np.array(s) for n, s in spikes.items()},
        "final_state": {n: (v_d, v_s) for n, (v_d, v_s, _) in state.items()},
        "logits": readout_sum(np.array(trace, np.int64), readout.bias, readout.leaky) if readout else 0,
    }
