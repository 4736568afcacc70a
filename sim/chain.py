"""A dense chain (an MLP) run whole: one compiled call per mini-batch, sample by sample.

For a graph ``input -> dense -> lmh -> dense -> lmh ... -> dense -> readout`` of dense
(non-convolution) layers whose int32 bounds hold (below), :meth:`Chain.run` replaces the
chunked run of :mod:`lmh_deploy.sim.simulator` for a static input: for each sample, the
first layer's sums are formed once (the input is the same every step), each layer runs all
``T`` steps at once (its states, spikes and currents stay in the L1/L2 cache), the next
layer's currents are the blocked event gather of those spikes over all ``T`` steps
(:func:`lmh_deploy.sim.gather.gather_blocks`: each step's active inputs listed once, then
four blocks of 32 outputs at a time, their int16 weight rows (64-byte aligned) held in the
cache, each block summed in one vector register; told each step's spike count by the
kernel, it skips silent steps), and no Python
runs between layers, steps or samples. The neuron update is the fused kernel of
:mod:`lmh_deploy.sim.fused` itself (called from the compiled loop, not a copy), and the
gather's sums are exact integer sums like the chunked run's: the same integers, so the same
spikes, states and logits.
The samples of a mini-batch are independent: they are split over numba's thread count
(``numba.set_num_threads``; each thread runs the compiled loop, which releases the GIL, on
its own samples and its own spike counts, added up afterwards), so any split gives the same
integers.

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
from lmh_deploy.sim.gather import BLOCK, block_rows, gather_blocks, padded_inputs
from lmh_deploy.sim.neuron import (
    contiguous_ranges,
    filled_rows,
    int32_input_limit,
    layer_form,
    rule_set,
    run_in_threads,
    sim_threads,
)
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
    if not isinstance(nodes[order[0]], QInput) or not isinstance(nodes[order[-1]], QReadout):
        return None
    body, last, readout = order[1:-2], order[-2], order[-1]  # no body: fewer than 5 nodes
    if len(body) % 2 or not body:
        return None
    chain: list[ChainLayer] = []
    previous = order[0]
    for dense, neuron in zip(body[::2], body[1::2]):
        if not isinstance(nodes[dense], QDense) or not isinstance(nodes[neuron], QLMH):
            return None
        if inputs[dense] != [previous] or inputs[neuron] != [dense]:
            return None
        path = paths[dense]
        if not _fits(path, later=bool(chain)):
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
    if not _fits(paths[last], later=True):
        return None
    return Chain(chain, last, paths[last], params)


def _fits(path: SynapsePath, later: bool) -> bool:
    """``path`` is dense and its sums fit int32; a ``later`` path (not the first) also takes
    binary input through int8 rows (the compiled gather's)."""
    if path.is_conv or path.sparse or path.pool_windows is not None or path.bound > INT32_LIMIT:
        return False
    return not later or (not path.graded and path.w_t_int.dtype == np.int8)


#: The rule set the chain runs: the lmh profile's (half-up rounding, saturation, ``>=``,
#: subtract reset, same step), whose kernel is specialised (:data:`fused.SPECIALISED_RULES`).
CHAIN_RULES = (0, 0, 0, 0, 0, 0)
#: referenced as globals, so that the chain's compiled code is cached on disk. They mark no
#: fired neurons (a sample's active neurons are those with spikes in its own count); the
#: first of a pair counts no saturation, only whether any value was out of range: then the
#: second, counting, reruns the sample's layer from its states before (fused.compiled) and
#: runs that layer's later samples (a layer that saturates once is likely to again)
_FAST = fused.compiled(CHAIN_RULES, False, False, mark_fired=False, count_saturation=False)
_COUNTING = fused.compiled(CHAIN_RULES, False, False, mark_fired=False)
#: the same for a layer whose factors are one number for all neurons (KernelForm.uniform)
_UNIFORM_FAST = fused.compiled(CHAIN_RULES, False, False, True, mark_fired=False, count_saturation=False)
_UNIFORM_COUNTING = fused.compiled(CHAIN_RULES, False, False, True, mark_fired=False)


@numba.njit(cache=True, nogil=True)
def _run(
    lo,
    hi,
    x,
    w_in,
    blocks,
    peaks,
    shifts,
    factors,
    bias_d,
    bias_s,
    thetas,
    resets,
    rule_codes,
    uniform,
    fans,
    v_d,
    v_s,
    record,
    spikes_out,
    out_blocks,
    out_peak,
    out_exp,
    trace,
):
    """Samples ``lo`` to ``hi`` of the static input ``x`` (B, n_in), one after another, in
    place on their rows of the states, ``spikes_out`` (when ``record``) and the readout's
    input ``trace`` (T, B, classes) int64; returns their spike counts per layer and step,
    saturation counts and neurons that fired (summed over the samples) per layer, and the
    synaptic events of every path (each thread of :meth:`Chain.run` adds up its own)."""
    wide_vectors()  # as in the kernel: the kernel may be inlined here
    steps = trace.shape[0]
    layers = len(v_d)
    sizes = np.array([v.shape[1] for v in v_d])
    counts = np.zeros((layers, steps), np.int64)
    neuron_spikes = np.zeros((layers, sizes.max()), np.int64)
    sat = np.zeros(layers, np.int64)
    active = np.zeros(layers, np.int64)
    synops = np.zeros(layers + 1, np.int64)
    step_counts = np.zeros(steps, np.int64)
    # spikes zero beyond the neurons (the gather reads whole 16-byte steps), currents of
    # whole blocks of outputs (the kernel reads the first n)
    spike_buf = [np.zeros((steps, 1, padded_inputs(n)), np.bool_) for n in sizes]
    cur_buf = [np.empty((steps, 1, -(-n // BLOCK) * BLOCK), np.int32) for n in sizes]
    idx = np.empty(steps * padded_inputs(sizes.max()), np.int32)
    starts = np.empty(steps + 1, np.int64)
    # the reset of the previous step's spikes (next-step timing) is not in CHAIN_RULES: the
    # kernel never reads or writes these
    no_prev = [np.zeros((1, n), np.bool_) for n in sizes]
    no_fired = no_prev[0]  # the kernels mark no fired neurons (_FAST, _COUNTING): never read
    sample_spikes = np.zeros(sizes.max(), np.int64)  # per neuron, one sample and layer
    before = np.empty((2, sizes.max()), v_d[0].dtype)  # a layer's states before the sample
    saturating = np.zeros(layers, np.bool_)  # layers that saturated: counted from then on
    cur0 = np.empty((1, 1, sizes[0]), np.int32)
    out_buf = np.empty((steps, out_blocks.shape[0] * BLOCK), np.int32)
    empty_f = np.zeros((1, 1, 0), np.float32)
    empty_i = np.zeros((1, 1, 0), np.int64)
    for b in range(lo, hi):
        for j in range(x.shape[1]):
            if x[b, j] != 0:
                synops[0] += steps * fans[0][j]
        for k in range(layers):
            n = sizes[k]
            if k == 0:  # the first layer's sums: the same every step (static input)
                cur = cur0
                _static_sums(x[b], w_in, cur.reshape(n))
            else:
                cur = cur_buf[k]
                pre = spike_buf[k - 1]
                # the previous layer's kernel left its spikes per step in step_counts
                gather_blocks(
                    pre.reshape((steps, pre.shape[2])),
                    step_counts,
                    blocks[k - 1],
                    peaks[k - 1],
                    cur.reshape((steps, cur.shape[2])),
                    idx,
                    starts,
                )
            spk = spike_buf[k]
            update = (
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
                no_prev[k],
                no_fired,
                sample_spikes[:n],
                spk,
                empty_f,
                empty_i,
                empty_i,
                step_counts,
            )
            vd_b, vs_b = v_d[k][b], v_s[k][b]
            if not saturating[k]:
                before[0, :n] = vd_b
                before[1, :n] = vs_b
                if (_UNIFORM_FAST(*update) if uniform[k] else _FAST(*update)) < 0:
                    # out of range somewhere: rerun from the states before, counting
                    vd_b[:] = before[0, :n]
                    vs_b[:] = before[1, :n]
                    sample_spikes[:n] = 0
                    saturating[k] = True
            if saturating[k]:
                sat[k] += _UNIFORM_COUNTING(*update) if uniform[k] else _COUNTING(*update)
            for t in range(steps):
                counts[k, t] += step_counts[t]
            for i in range(n):  # the sample's active neurons: those that spiked
                active[k] += sample_spikes[i] > 0
                neuron_spikes[k, i] += sample_spikes[i]
                sample_spikes[i] = 0
            if record:
                out = spikes_out[k]
                for t in range(steps):
                    out[t, b] = spk[t, 0, :n]
        last = spike_buf[layers - 1]
        last = last.reshape((steps, last.shape[2]))
        gather_blocks(last, step_counts, out_blocks, out_peak, out_buf, idx, starts)
        for t in range(steps):  # the readout's input a = shift(2 S, e) (synapse.lava_current)
            for o in range(trace.shape[2]):
                a = np.int64(out_buf[t, o]) * 2
                trace[t, b, o] = a << out_exp if out_exp >= 0 else a >> -out_exp
    for k in range(layers):  # events of the path reading layer k: its spikes x fan-out
        for i in range(sizes[k]):
            synops[k + 1] += neuron_spikes[k, i] * fans[k + 1][i]
    return counts, sat, active, synops


@numba.njit(inline="always")
def _static_sums(x_row, w_in, out):
    """``out = sum_j x_row[j] * w_in[j]`` in int32 (exact: the first path's bound is within
    int32, :func:`_fits`, and so is every partial sum)."""
    out[:] = 0
    for j in range(x_row.shape[0]):
        v = np.int32(x_row[j])
        if v != 0:
            w = w_in[j]
            for o in range(out.shape[0]):
                out[o] += v * np.int32(w[o])


#: Samples per thread below which a run is not split (thread start-up against the work)
MIN_SAMPLES_PER_THREAD = 2
#: the spike records of a run that records none (the compiled loop never reads them)
_NO_SPIKES = np.zeros((1, 1, 0), bool)


@dataclass
class ChainResult:
    """What a chain run gives back (per layer in chain order)."""

    counts: np.ndarray  # (L, T) spikes per layer and step
    trace: np.ndarray  # (T, B, classes) int64: the readout's input
    saturation: np.ndarray  # (L,)
    active: np.ndarray  # (L,) neurons that fired in a sample, summed over the samples
    synops: np.ndarray  # (L + 1,) synaptic events per dense path, in graph order
    states: list[tuple[np.ndarray, np.ndarray]]  # final (v_d, v_s), each (B, n)


class Chain:
    """A dense chain ready to run: its layers and the compiled loop's fixed arguments
    (prepared once per plan; a run adds only its states and buffers)."""

    def __init__(self, layers: list[ChainLayer], out_dense: str, out_path: SynapsePath, params: dict) -> None:
        self.layers, self.out_dense, self.out_path = layers, out_dense, out_path
        self.names = [layer.neuron for layer in layers]
        ps = [params[name] for name in self.names]
        forms = [layer_form(p) for p in ps]
        self.sizes = [p.size for p in ps]
        self.initial = [(p.v_d_init, p.v_s_init, f.state_dtype) for p, f in zip(ps, forms)]
        #: every dense path's synapses per presynaptic input (SynapsePath.synops's fan-out: a
        #: dense path's is an (n_in,) int64 array)
        self.fans = tuple(path.fan_out for path in [layer.path for layer in layers] + [out_path])
        self.dense = [layer.dense for layer in layers] + [out_dense]
        # the paths between hidden layers; a one-hidden-layer chain has none, and the compiled
        # loop (typed for a non-empty tuple) gets the readout's path, never read, in their place
        hidden = [layer.path for layer in layers[1:]] or [out_path]
        # np.asarray of Python ints (shifts, peaks, theta, reset value) is int64
        self.fixed = (
            tuple(block_rows(path.w_t_int) for path in hidden),
            np.asarray([path.gather_peak for path in hidden]),
            np.asarray([layer.shifts for layer in layers]),
            tuple(f.factors for f in forms),
            tuple(f.bias_d for f in forms),
            tuple(f.bias_s for f in forms),
            np.asarray([p.theta for p in ps]),
            np.asarray([p.reset_value for p in ps]),
            rule_set(ps[0])[1],
            np.asarray([f.uniform for f in forms]),
        )
        self.placeholders = (_NO_SPIKES,) * len(ps)
        self.out_blocks = block_rows(out_path.w_t_int)

    def run(
        self, x_flat: np.ndarray, steps: int, spikes: dict | None, threads: int | None = None
    ) -> ChainResult:
        """All layers over ``steps`` steps for the static input ``x_flat`` (B, n_in), from the
        initial states; ``spikes``: layer -> (T, B, n) bool records to fill, or None
        (streaming). The samples are split over ``threads`` threads (default: numba's thread
        count, :func:`~lmh_deploy.sim.neuron.sim_threads`), each running the compiled loop on
        its own samples: the same integers whatever the split."""
        batch = x_flat.shape[0]
        states = [
            (filled_rows(batch, n, vd, dtype), filled_rows(batch, n, vs, dtype))
            for n, (vd, vs, dtype) in zip(self.sizes, self.initial)
        ]
        trace = np.empty((steps, batch, self.out_path.n_out), np.int64)
        args = (
            np.ascontiguousarray(x_flat),
            self.layers[0].path.w_t_int,
            *self.fixed,
            self.fans,
            tuple(s[0] for s in states),
            tuple(s[1] for s in states),
            spikes is not None,
            self.placeholders if spikes is None else tuple(spikes[name] for name in self.names),
            self.out_blocks,
            self.out_path.gather_peak,
            self.out_path.weight_exp,
            trace,
        )
        if threads is None:
            threads = sim_threads()
        workers = max(1, min(threads, batch // MIN_SAMPLES_PER_THREAD))
        parts = run_in_threads(lambda lo, hi: _run(lo, hi, *args), contiguous_ranges(batch, workers))
        counts, sat, active, synops = (sum(p[i] for p in parts) for i in range(4))
        return ChainResult(counts, trace, sat, active, synops, states)
