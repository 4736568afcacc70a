"""A dense chain (an MLP) run whole: one compiled call per mini-batch, sample by sample.

For a graph ``input -> dense -> lmh -> dense -> lmh ... -> dense -> readout`` of dense
(non-convolution) layers whose int32 bounds hold (below), :func:`run_chain` replaces the
chunked run of :mod:`lmh_deploy.sim.simulator`: for each sample, each layer runs all ``T``
steps at once (its states, spikes and currents stay in the L1/L2 cache), the next layer's
currents are the compiled row gather of those spikes (:mod:`lmh_deploy.sim.gather`), and no
Python runs between layers, steps or samples. The neuron update is the fused kernel of
:mod:`lmh_deploy.sim.fused` itself (called from the compiled loop, not a copy), the gather
the one the chunked run uses: the same integers, so the same spikes, states and logits.

Eligible (:func:`chain_of`): every dense layer's binary-input sums fit int32 with int8
weight rows (``SynapsePath.gather_dtype``, ``w_t_int``), the first layer's (possibly graded)
sums too, every neuron layer is int32-safe for its synapse path's bound
(:func:`lmh_deploy.sim.neuron.int32_input_limit`, the margins of
:func:`lmh_deploy.sim.fused.kernel_form`), and every neuron layer has the lmh profile's rules
(:data:`CHAIN_RULES`; its kernel is referenced as a global so that the compiled chain is
cached on disk). Anything else runs chunked, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from lmh_deploy.ir import QLMH, QDense, QInput, QReadout
from lmh_deploy.sim import fused
from lmh_deploy.sim.fused import wide_vectors
from lmh_deploy.sim.gather import gather_binary
from lmh_deploy.sim.neuron import int32_input_limit, layer_form, rule_set
from lmh_deploy.sim.synapse import INT32_LIMIT, SynapsePath


@dataclass(frozen=True)
class ChainLayer:
    """One dense path and the neuron layer it feeds (kernel-ready, prepared once)."""

    dense: str
    neuron: str
    path: SynapsePath
    shifts: tuple[int, int]  # (right, left) of the kernel's input shift


def chain_of(order: list[str], nodes: dict, inputs: dict, paths: dict, params: dict) -> Chain | None:
    """The graph in ``order`` as a dense chain ending in a dense path into the readout, or
    None where it is not one or a bound does not hold (module docstring)."""
    if (
        len(order) < 4
        or not isinstance(nodes[order[0]], QInput)
        or not isinstance(nodes[order[-1]], QReadout)
    ):
        return None
    body, last, readout = order[1:-2], order[-2], order[-1]
    if len(body) % 2 or not body:
        return None
    chain: list[ChainLayer] = []
    previous = order[0]
    for dense, neuron in zip(body[::2], body[1::2], strict=True):
        if not isinstance(nodes[dense], QDense) or not isinstance(nodes[neuron], QLMH):
            return None
        if inputs[dense] != [previous] or inputs[neuron] != [dense]:
            return None
        path = paths[dense]
        if not _fits(path, first=not chain):
            return None
        p = params[neuron]
        if p.by_semantics:  # graded spikes, a soma floor: the semantics' own step (sim/neuron.py)
            return None
        if p.size != path.n_out or int32_input_limit(p, path.weight_exp) < path.bound:
            return None
        if rule_set(p)[0] != CHAIN_RULES:
            return None
        right, left = fused.input_shifts(path.weight_exp, p.input_shift)
        chain.append(ChainLayer(dense, neuron, path, (right, left)))
        previous = neuron
    if not isinstance(nodes[last], QDense) or inputs[last] != [previous] or inputs[readout] != [last]:
        return None
    if not _fits(paths[last], first=False):
        return None
    return Chain(chain, paths[last], params)


def _fits(path: SynapsePath, first: bool) -> bool:
    """``path`` is dense and its sums fit int32 (binary input, int8 rows, unless ``first``)."""
    if path.is_conv or path.sparse or path.bound > INT32_LIMIT:
        return False
    if first:
        return True
    return not path.graded and path.w_t_int.dtype == np.int8


#: The rule set the chain runs: the lmh profile's (half-up rounding, saturation, ``>=``,
#: subtract reset, same step), whose kernel is specialised (:data:`fused.SPECIALISED_RULES`).
CHAIN_RULES = (0, 0, 0, 0, 0, 0)
#: referenced as a global, so that the chain's compiled code is cached on disk
_KERNEL = fused.compiled(CHAIN_RULES, False, False)


@numba.njit(cache=True, nogil=True)
def _run(
    cur0,
    weights,
    peaks,
    shifts,
    factors,
    bias_d,
    bias_s,
    thetas,
    resets,
    rule_codes,
    v_d,
    v_s,
    s_prev,
    fired,
    neuron_spikes,
    record,
    spikes_out,
    spike_buf,
    cur_buf,
    counts,
    out_w,
    out_peak,
    out_raw,
):
    """The whole run, sample by sample."""
    wide_vectors()  # as in the kernel: the kernel may be inlined here
    batch = cur0.shape[0]
    steps = counts.shape[1]
    layers = len(v_d)
    step_counts = np.zeros(steps, np.int64)
    out_buf = np.zeros((steps, out_w.shape[1]), np.int32)
    empty_f = np.zeros((1, 1, 0), np.float32)
    empty_i = np.zeros((1, 1, 0), np.int64)
    sat = np.zeros(layers, np.int64)
    for b in range(batch):
        for k in range(layers):
            n = v_d[k].shape[1]
            if k == 0:
                cur = cur0[b].reshape((1, 1, n))
            else:
                cur = cur_buf[k - 1]
                flat = cur.reshape((steps, n))
                flat[:] = 0
                pre = spike_buf[k - 1]
                gather_binary(pre.reshape((steps, pre.shape[2])), weights[k - 1], flat, peaks[k - 1])
            spk = spike_buf[k]
            sat[k] += _KERNEL(
                cur,
                steps,
                shifts[k, 0],
                shifts[k, 1],
                0,
                factors[k],
                bias_d[k],
                bias_s[k],
                thetas[k],
                resets[k],
                rule_codes,
                v_d[k][b].reshape((1, n)),
                v_s[k][b].reshape((1, n)),
                s_prev[k][b].reshape((1, n)),
                fired[k][b].reshape((1, n)),
                neuron_spikes[k],
                spk,
                empty_f,
                empty_i,
                empty_i,
                step_counts,
            )
            for t in range(steps):
                counts[k, t] += step_counts[t]
            if record:
                out = spikes_out[k]
                for t in range(steps):
                    out[t, b] = spk[t, 0]
        last = spike_buf[layers - 1]
        out_buf[:] = 0
        gather_binary(last.reshape((steps, last.shape[2])), out_w, out_buf, out_peak)
        for t in range(steps):
            out_raw[t, b] = out_buf[t]
    return sat


class Chain:
    """A dense chain ready to run: its layers and the compiled loop's fixed arguments
    (prepared once per plan; a run adds only its states and buffers)."""

    def __init__(self, layers: list[ChainLayer], out_path: SynapsePath, params: dict) -> None:
        self.layers, self.out_path = layers, out_path
        self.names = [layer.neuron for layer in layers]
        ps = [params[name] for name in self.names]
        forms = [layer_form(p) for p in ps]
        self.sizes = [p.size for p in ps]
        hidden = [layer.path for layer in layers[1:]]
        self.fixed = (
            tuple(path.w_t_int for path in hidden) or (out_path.w_t_int,),  # a placeholder
            np.asarray([path.gather_peak for path in hidden] or [0], np.int64),
            np.asarray([layer.shifts for layer in layers], np.int64),
            tuple(f.factors for f in forms),
            tuple(f.bias_d for f in forms),
            tuple(f.bias_s for f in forms),
            np.asarray([p.theta for p in ps], np.int64),
            np.asarray([p.reset_value for p in ps], np.int64),
            rule_set(ps[0])[1],
        )
        self.placeholders = tuple(np.zeros((1, 1, 0), bool) for _ in ps)

    def run(self, states: dict, x_flat: np.ndarray, steps: int, spikes: dict | None):
        """All layers over ``steps`` steps for the static input ``x_flat`` (B, n_in), in
        place on ``states`` (int32 :class:`~lmh_deploy.sim.neuron.NeuronState` per layer);
        ``spikes``: layer -> (T, B, n) bool records to fill, or None (streaming).

        Returns (spike counts per layer and step (L, T), the readout path's raw sums
        (T, B, classes) int32, saturation count per layer)."""
        sums = self.layers[0].path.sums(x_flat)  # static: once per run
        cur0 = np.ascontiguousarray(sums.astype(np.int32, copy=False))
        batch = x_flat.shape[0]
        st = [states[name] for name in self.names]
        counts = np.zeros((len(st), steps), np.int64)
        out_raw = np.empty((steps, batch, self.out_path.n_out), np.int32)
        sat = _run(
            cur0,
            *self.fixed,
            tuple(s.v_d for s in st),
            tuple(s.v_s for s in st),
            tuple(s.s_prev for s in st),
            tuple(s.fired for s in st),
            tuple(s.neuron_spikes for s in st),
            spikes is not None,
            self.placeholders if spikes is None else tuple(spikes[name] for name in self.names),
            tuple(np.empty((steps, 1, n), bool) for n in self.sizes),
            tuple(np.empty((steps, 1, n), np.int32) for n in self.sizes[1:])
            or (np.empty((steps, 1, 0), np.int32),),
            counts,
            self.out_path.w_t_int,
            self.out_path.gather_peak,
            out_raw,
        )
        return counts, out_raw, sat
