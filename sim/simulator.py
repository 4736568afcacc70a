"""Batched integer simulation of a quantised graph, on numpy or on a torch device.

One code path for both: the integer step is :mod:`lmh_deploy.sim.neuron` (bit-exact with
:mod:`lmh_deploy.semantics`, fused and compiled with numba where available), the synaptic
sums are :class:`lmh_deploy.sim.synapse.SynapsePath` (defined once, exact by construction).
The run is on the ideal timeline (no synaptic delays: the Lava lowering offsets each layer
so that its local step ``t`` sees what this simulator computes at step ``t``); several
synapse paths into one layer (residual blocks) add their currents.

Time is cut into chunks of ``c`` steps. The graph is a DAG and a layer's step ``t`` depends
only on its inputs at ``t`` and its own state, so within a chunk every node runs all ``c``
steps before the next node: one synaptic product covers ``c * B`` rows, and one compiled
neuron call covers ``c`` steps. ``c = max(1, 1000 // B)`` by default: at batch 1 a whole
layer runs over many steps at once, at large batches the chunk stays in cache; on numpy,
fewer steps where a chunk's largest synaptic sums would reach 32 MiB (:func:`default_chunk_steps`).
A static input is presented every step, so its synaptic sums are computed once per run.

**Channels last inside.** On numpy, a layer fed only by convolutions and read only by
synapse paths keeps its states and spikes in (H, W, C) order (its neuron parameters
reordered once): the int8 convolution reads and writes that order, so no layer's spikes or
sums are transposed on the way; a dense layer after it reads its weight columns in that
order. The record (spikes, state traces, final states, per-neuron counts) is in the graph's
(C, H, W) order as always.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lmh_deploy.errors import InputError
from lmh_deploy.sim import neuron
from lmh_deploy.sim.conv import channels_last_order
from lmh_deploy.sim.chain import chain_of
from lmh_deploy.sim.neuron import as_numpy as _numpy
from lmh_deploy.sim.neuron import initial_state, numba_active, run_neuron_chunk
from lmh_deploy.sim.params import neuron_params
from lmh_deploy.sim.synapse import SynapsePath, lava_current, summed_bound, summed_current

from lmh_deploy.semantics.readout import readout_sum
from lmh_deploy.ir import QLMH, Graph, QDense, QInput, QReadout, validate_quantized
from lmh_deploy.ir.nodes import conv_output_hw
from lmh_deploy.ir.synapses import largest_presynaptic
from lmh_deploy.backends.record import RunRecord

#: Sample-steps per chunk (see the module docstring).
CHUNK_SAMPLE_STEPS = 1000


def spike_dtype(p) -> type:
    """What a layer's spikes are held in: bool, or int16 counts for graded spikes."""
    return np.int16 if p.max_spikes > 1 else bool


#: Bytes from which glibc's malloc maps every allocation afresh (its largest mmap threshold,
#: 32 MiB on 64-bit), and unmaps it when freed: each of its pages then faults on first touch
#: at every allocation, where a smaller array reuses the heap's pages.
FRESH_MAP_BYTES = 32 << 20


def default_chunk_steps(batch: int, timesteps: int = 0, row_bytes: int = 0) -> int:
    """Steps per chunk at this batch size: about ``CHUNK_SAMPLE_STEPS / batch``; where a
    chunk's largest synaptic sums (``row_bytes`` a sample-step) would reach
    :data:`FRESH_MAP_BYTES`, the ``timesteps`` are cut into the fewest equal chunks below it.
    ResNet-19 (bench/sim_vs_float.py, batch 16, T = 4): its 64-row float32 sums of 131,072
    outputs were 32 MiB, 8,193 page faults and ~12 ms of system time per convolution (torch's
    output), ~10 % of its run at one thread; in two chunks of two steps none fault."""
    steps = max(1, CHUNK_SAMPLE_STEPS // max(batch, 1))
    if row_bytes > 0 and timesteps > 0:
        fit = max(1, (FRESH_MAP_BYTES - (1 << 16)) // (row_bytes * max(batch, 1)))
        if fit < min(steps, timesteps):
            chunks = -(-timesteps // fit)
            steps = -(-timesteps // chunks)
    return steps


class _Value:
    """What a node delivers for the current chunk: (c, B, n) per step, or (B, n) for every
    step (``static``); synapse nodes deliver raw sums to be scaled by ``weight_exp``."""

    def __init__(
        self,
        data,
        static: bool = False,
        weight_exp: int | None = None,
        bound: float | None = None,
        active: int | None = None,
    ) -> None:
        self.data, self.static, self.weight_exp = data, static, weight_exp
        self.bound = bound  # on |raw sums| (synapse values)
        self.active = active  # number of nonzero values, where known (spikes of a layer)

    def per_step(self, steps: int, xp):
        """(c, B, n) data (a static value repeated)."""
        if not self.static:
            return self.data
        if xp is np:
            return np.ascontiguousarray(np.broadcast_to(self.data, (steps,) + self.data.shape))
        return self.data.unsqueeze(0).expand((steps,) + tuple(self.data.shape)).contiguous()

    def current(self, steps: int, xp):
        """The integer input ``a_in`` (int64)."""
        data = self.per_step(steps, xp)
        return data if self.weight_exp is None else lava_current(data, self.weight_exp)


def simulate(
    graph: Graph,
    x_int: np.ndarray,
    timesteps: int,
    *,
    record_states: bool = False,
    record_spikes: bool = True,
    record_final_state: bool = True,
    device: str | None = None,
    chunk_steps: int | None = None,
    batch_shards: bool = False,
) -> RunRecord:
    """Run ``B`` samples for ``timesteps`` steps.

    ``x_int`` is the quantised input: (B, *shape) static (presented every step) or
    (T, B, *shape) time-major frames. With ``record_spikes=False`` the run streams: memory
    grows with neither T nor B beyond logits and readout (only per-step spike counts,
    ``spike_stats``, are kept; no ``final_state``). ``record_final_state=False`` keeps the
    spikes but not the final states (two int64 per neuron and sample: the largest part of a
    record when T is small).
    ``device`` (e.g. ``"cuda"``, ``"cpu"``) runs the same integer semantics on torch tensors
    there; ``None`` uses numpy (and numba). ``chunk_steps`` overrides the chunk length.
    ``batch_shards``: split the batch over sim/'s threads, each shard's whole run in its own
    thread (:func:`shards_of`), instead of splitting the work inside each layer; the same
    record either way.
    """
    plan = plan_for(graph, device)
    options = (record_states, record_spikes, record_final_state, chunk_steps)
    x_int = np.asarray(x_int)
    axis = 0 if x_int.ndim == len(plan.input_shape) + 1 else 1  # static, or time-major frames
    batch = x_int.shape[axis] if x_int.ndim > axis else 1
    shards = shards_of(plan, batch, timesteps, device) if batch_shards else [(0, batch)]
    if len(shards) == 1:
        return _simulate_whole(plan, x_int, timesteps, device, *options)

    def shard(lo: int, hi: int) -> RunRecord:
        part = x_int[lo:hi] if axis == 0 else x_int[:, lo:hi]
        with neuron.one_thread_shard():
            return _simulate_whole(plan, part, timesteps, device, *options)

    with neuron.restore_torch_threads():
        records = neuron.run_in_threads(shard, shards, omp_team=False)
    from lmh_deploy.sim.batching import merged_records  # (batching imports this module)

    return merged_records(records, [lo for lo, _ in shards], shards[-1][1])


def shards_of(plan: _Plan, batch: int, timesteps: int, device: str | None) -> list[tuple[int, int]]:
    """The batch cut into contiguous shards, one per thread sim/ may use
    (:func:`~lmh_deploy.sim.neuron.sim_threads`), each run whole in its own thread with
    one thread inside (:func:`~lmh_deploy.sim.neuron.one_thread_shard`; its compiled kernels
    and torch's int8 products release the GIL, so the shards' layer pipelines overlap;
    Python between layers does not). Samples are independent: the merged record equals the
    unsharded run's bit for bit (as :mod:`lmh_deploy.sim.batching`'s mini-batches do). One
    shard on a torch device, or where the run is too small to pay for a thread
    (:func:`~lmh_deploy.sim.neuron.row_ranges`' share of neuron-steps)."""
    if device is not None:
        return [(0, batch)]
    sample_work = timesteps * sum(p.size for p in plan.params.values())
    return neuron.row_ranges(batch, sample_work, neuron.sim_threads())


def _simulate_whole(
    plan: _Plan,
    x_int: np.ndarray,
    timesteps: int,
    device: str | None,
    record_states: bool,
    record_spikes: bool,
    record_final_state: bool,
    chunk_steps: int | None,
) -> RunRecord:
    """:func:`simulate` of the whole batch ``x_int`` in this thread."""
    if (
        plan.chain is not None
        and not record_states
        and chunk_steps is None
        and x_int.shape[1:] == plan.input_shape
        and numba_active()
    ):  # an MLP: one compiled call for the whole run (sim/chain.py)
        return _whole_chain(plan, np.asarray(x_int, np.int64), timesteps, record_spikes, record_final_state)
    run = _Run(plan, x_int, timesteps, device, record_states, record_spikes, record_final_state)
    chunk = chunk_steps or default_chunk_steps(run.batch, timesteps, plan.sums_row_bytes)
    for t0 in range(0, timesteps, chunk):
        run.chunk(t0, min(timesteps, t0 + chunk))
    return run.finish()


def _whole_chain(plan: _Plan, x: np.ndarray, timesteps: int, record_spikes: bool, record_final_state: bool):
    """The record of a dense chain's run on the static input ``x`` (B, *shape), all ``T``
    steps in one compiled call (:class:`lmh_deploy.sim.chain.Chain`): the same record as
    the chunked run's (:meth:`_Run.finish`), made without its per-chunk machinery (at batch
    1 that machinery cost as much as a third of the run)."""
    chain, batch = plan.chain, x.shape[0]
    flat = x.reshape(batch, -1)
    rec = RunRecord(logits=np.zeros((batch, 0), np.int64))
    if record_spikes:
        rec.spikes = {
            name: np.empty((timesteps, batch, n), bool) for name, n in zip(chain.names, chain.sizes)
        }
    run = chain.run(flat, timesteps, rec.spikes if record_spikes else None)
    rec.synops = dict(zip(chain.dense, run.synops.tolist(), strict=True))
    for k, (name, n) in enumerate(zip(chain.names, chain.sizes, strict=True)):
        rec.saturation[name] = int(run.saturation[k])
        rec.spike_stats[name] = {
            "spikes_per_step": run.counts[k],
            "active_neurons": int(run.active[k]),
            "neuron_steps": timesteps * batch * n,
        }
        if record_spikes and record_final_state:
            v_d, v_s = run.states[k]
            rec.final_state[name] = (v_d.astype(np.int64), v_s.astype(np.int64))
    rec.readout_trace = run.trace
    readout = plan.nodes[plan.readout]
    rec.logits = readout_sum(rec.readout_trace, np.asarray(readout.bias, np.int64), readout.leaky)
    return rec


class _Plan:
    """What a graph fixes for every run: validated structure, synapse paths (with their
    measured costs), kernel parameters. Reused while the graph holds the same (immutable)
    node objects and edges, so small mini-batches do not pay the preparation again."""

    def __init__(self, graph: Graph, device: str | None) -> None:
        validate_quantized(graph)  # refuse an invalid graph in one line naming the node
        self.key = _structure(graph)
        self.order = graph.order()
        self.nodes = {name: graph.node(name) for name in self.order}
        self.inputs = {name: graph.inputs_of(name) for name in self.order}
        q_input = self.nodes[self.order[0]]
        if not isinstance(q_input, QInput):
            raise TypeError(f"the first node of the graph is {q_input.kind}, not q_input")
        self.input_shape = tuple(q_input.shape)
        #: layers kept in (H, W, C) order inside: name -> their (C, H, W) shape
        self.channels_last = _channels_last_layers(self.nodes, self.inputs) if device is None else {}
        self.paths = {}
        for name, node in self.nodes.items():
            if isinstance(node, QDense):
                (src,) = self.inputs[name]
                to_cl = any(name in self.inputs[layer] for layer in self.channels_last)
                self.paths[name] = SynapsePath(
                    node,
                    device,
                    self.channels_last.get(src),
                    to_cl,
                    largest_input=largest_presynaptic(graph, name),
                )
        #: bytes of the largest path's sums for one sample-step (float32 / int32 sums: 4 a
        #: value, else 8); 0 on a torch device (the chunk length ignores it there)
        widths = [p.n_out * (4 if p.float_dtype is np.float32 else 8) for p in self.paths.values()]
        self.sums_row_bytes = max(widths, default=0) if device is None else 0
        self.params = {}
        for name, node in self.nodes.items():
            if isinstance(node, QLMH):
                p = neuron_params(node)
                layout = self.channels_last.get(name)
                self.params[name] = p if layout is None else _reordered(p, channels_last_order(layout))
        readouts = [name for name, node in self.nodes.items() if isinstance(node, QReadout)]
        if not readouts:
            raise TypeError("the graph has no q_readout node")
        self.readout = readouts[0]
        #: the dense chain run whole (sim/chain.py), None where the graph is not one
        self.chain = (
            chain_of(self.order, self.nodes, self.inputs, self.paths, self.params)
            if device is None and numba_active()
            else None
        )


def _conv_output_shape(node: QDense) -> tuple[int, int, int]:
    c, h, w = (int(d) for d in node.conv_input_shape)
    kernel = tuple(np.asarray(node.weight_mant).shape[2:])
    return (int(np.asarray(node.weight_mant).shape[0]),) + conv_output_hw(
        h, w, kernel, node.conv_stride, node.conv_padding
    )


def _channels_last_layers(nodes: dict, inputs: dict) -> dict[str, tuple[int, int, int]]:
    """The neuron layers that run in (H, W, C) order: every input a convolution (not max
    pooled) feeding only this layer, every reader a synapse path (a convolution of this
    shape, or dense)."""
    readers: dict[str, list[str]] = {name: [] for name in nodes}
    for name, sources in inputs.items():
        for src in sources:
            readers[src].append(name)
    found = {}
    for name, node in nodes.items():
        sources = inputs[name]
        if not isinstance(node, QLMH) or not sources or node.max_spikes > 1:
            continue
        if not all(
            isinstance(nodes[s], QDense)
            and nodes[s].is_conv
            and nodes[s].max_pool is None
            and readers[s] == [name]
            for s in sources
        ):
            continue
        shapes = {_conv_output_shape(nodes[s]) for s in sources}
        if len(shapes) != 1:
            continue
        shape = shapes.pop()
        if all(
            isinstance(nodes[r], QDense)
            and (not nodes[r].is_conv or tuple(nodes[r].conv_input_shape) == shape)
            for r in readers[name]
        ):
            found[name] = shape
    return found


def _reordered(p, order: np.ndarray):
    """Neuron parameters ``p`` for neurons in ``order`` (per-neuron arrays reindexed)."""
    return replace(
        p,
        mu_d=np.ascontiguousarray(p.mu_d[:, order]),
        mu_s=np.ascontiguousarray(p.mu_s[:, order]),
        lam_d=np.ascontiguousarray(p.lam_d[:, order]),
        lam_s=np.ascontiguousarray(p.lam_s[:, order]),
        bias_d=np.ascontiguousarray(p.bias_d[order]),
        bias_s=np.ascontiguousarray(p.bias_s[order]),
        v_d_init=np.ascontiguousarray(p.v_d_init[order]) if np.ndim(p.v_d_init) else p.v_d_init,
    )


def _graph_order(a: np.ndarray, shape: tuple[int, int, int] | None) -> np.ndarray:
    """``a`` (..., n) from the (H, W, C) order of a (C, H, W) layer back to the graph's
    order (``shape`` None: ``a`` as it is)."""
    if shape is None:
        return a
    c, h, w = shape
    images = a.reshape(a.shape[:-1] + (h, w, c))
    return np.ascontiguousarray(np.moveaxis(images, -1, -3)).reshape(a.shape)


def _structure(graph: Graph) -> tuple:
    return (
        tuple((name, id(data["node"])) for name, data in graph.nx_graph.nodes(data=True)),
        tuple(graph.nx_graph.edges),
    )


_PLANS: dict[tuple, tuple[Graph, _Plan]] = {}
_MAX_PLANS = 8


def plan_for(graph: Graph, device: str | None) -> _Plan:
    key = (id(graph), device)
    cached = _PLANS.get(key)
    if cached is not None and cached[0] is graph and cached[1].key == _structure(graph):
        return cached[1]
    plan = _Plan(graph, device)
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[key] = (graph, plan)  # holds the graph (and its nodes): ids stay unique
    return plan


class _Run:
    """The state of one simulation: states and the record under construction."""

    def __init__(
        self,
        plan: _Plan,
        x_int: np.ndarray,
        timesteps: int,
        device: str | None,
        record_states: bool,
        record_spikes: bool,
        record_final_state: bool = True,
    ) -> None:
        self.plan, self.timesteps = plan, timesteps
        self.static = x_int.ndim == len(plan.input_shape) + 1
        self.batch = x_int.shape[0] if self.static else x_int.shape[1]
        if not self.static and x_int.shape[0] < timesteps:
            raise InputError(f"time-major input has {x_int.shape[0]} frames; cannot run {timesteps} steps")
        self.device = device
        if device is None:
            self.xp = np
            self.x = np.asarray(x_int, np.int64)
        else:
            import torch

            self.xp = torch
            self.x = torch.as_tensor(np.asarray(x_int, np.int64), device=torch.device(device))
        self.record_states, self.record_spikes = record_states, record_spikes
        self.record_final_state = record_final_state
        self.nodes, self.paths, self.params = plan.nodes, plan.paths, plan.params
        self.readout = plan.readout
        self.states, self.counts = {}, {}
        self.static_sums: dict[str, object] = {}
        self.input_active = np.zeros(int(np.prod(plan.input_shape)), np.int64)
        self.rec = RunRecord(logits=np.zeros((self.batch, 0), np.int64))
        for name, p in self.params.items():
            self._add_neuron(name, p)
        classes = self.nodes[self.readout].bias.shape[0]
        self.readout_trace = np.zeros((timesteps, self.batch, classes), np.int64)

    def _add_neuron(self, name: str, p) -> None:
        like = None if self.device is None else self.x
        # lazy: the first chunk's kernel starts the states (every run has one chunk at least)
        self.states[name] = initial_state(p, self.batch, like, lazy=self.timesteps > 0)
        self.counts[name] = np.zeros(self.timesteps, np.int64)
        shape = (self.timesteps, self.batch, p.size)
        if self.record_spikes:
            self.rec.spikes[name] = np.zeros(shape, spike_dtype(p))
        if self.record_states:
            self.rec.state_trace[name] = (np.zeros(shape, np.int64), np.zeros(shape, np.int64))

    # ------------------------------------------------------------------ one chunk
    def chunk(self, t0: int, t1: int) -> None:
        steps, values = t1 - t0, {}
        for name, node in self.nodes.items():
            if isinstance(node, QInput):
                values[name] = self._input(t0, t1)
            elif isinstance(node, QDense):
                values[name] = self._synapse(name, values[self.plan.inputs[name][0]], steps)
            elif isinstance(node, QLMH):
                values[name] = self._neuron(name, t0, steps, values)
            elif isinstance(node, QReadout):
                inputs = [values[src] for src in self.plan.inputs[name]]
                a_in = sum(v.current(steps, self.xp) for v in inputs)
                self.readout_trace[t0:t1] = _numpy(a_in)

    def _input(self, t0: int, t1: int) -> _Value:
        if self.static:
            flat = self.x.reshape(self.batch, -1)
            if t0 == 0:
                self.input_active += (self.timesteps * _numpy(flat != 0).sum(0)).astype(np.int64)
            return _Value(flat, static=True)
        frames = self.x[t0:t1].reshape(t1 - t0, self.batch, -1)
        self.input_active += _numpy(frames != 0).sum((0, 1)).astype(np.int64)
        return _Value(frames)

    def _synapse(self, name: str, pre: _Value, steps: int) -> _Value:
        path = self.paths[name]
        if pre.static:
            if name not in self.static_sums:
                self.static_sums[name] = path.sums(pre.data)
            return _Value(self.static_sums[name], static=True, weight_exp=path.weight_exp, bound=path.bound)
        rows = pre.data.reshape(steps * self.batch, -1)
        sums = path.sums(rows, pre.active).reshape(steps, self.batch, -1)
        return _Value(sums, weight_exp=path.weight_exp, bound=path.bound)

    def _neuron(self, name: str, t0: int, steps: int, values: dict) -> _Value:
        inputs = [values[src] for src in self.plan.inputs[name]]
        peak = None
        if len(inputs) == 1:  # the kernel applies the weight exponent itself
            value = inputs[0]
            currents, weight_exp, peak = value.data, value.weight_exp, value.bound
            if value.static:  # one (1, B, n) current for every step of the chunk
                currents = currents.reshape((1,) + tuple(currents.shape))
        else:
            parts = [(v.per_step(steps, self.xp), v.weight_exp, v.bound) for v in inputs]
            currents, weight_exp, peak = summed_current(parts), None, summed_bound(parts)
        state = self.states[name]
        size = self.params[name].size
        layout = self.plan.channels_last.get(name)
        if self.device is None:
            spikes = (
                self.rec.spikes[name][t0 : t0 + steps]
                if self.record_spikes and layout is None
                else np.empty((steps, self.batch, size), spike_dtype(self.params[name]))
            )
            trace = (
                tuple(
                    a[t0 : t0 + steps] if layout is None else np.empty_like(a[t0 : t0 + steps])
                    for a in self.rec.state_trace[name]
                )
                if self.record_states
                else None
            )
        else:
            import torch

            shape = (steps, self.batch, size)
            graded = self.params[name].max_spikes > 1
            spikes = torch.empty(shape, dtype=torch.int16 if graded else torch.bool, device=self.x.device)
            trace = (
                (
                    torch.empty(shape, dtype=torch.int64, device=self.x.device),
                    torch.empty(shape, dtype=torch.int64, device=self.x.device),
                )
                if self.record_states
                else None
            )
        # the last chunk of a run that records no final states leaves the states unwritten
        keep_states = t0 + steps < self.timesteps or (self.record_spikes and self.record_final_state)
        counts = run_neuron_chunk(
            self.params[name], t0, currents, weight_exp, state, spikes, trace=trace, steps=steps, peak=peak,
            keep_states=keep_states,
        )  # fmt: skip
        self.counts[name][t0 : t0 + steps] = _numpy(counts)
        if layout is not None:
            if self.record_spikes:
                self.rec.spikes[name][t0 : t0 + steps] = _graph_order(spikes, layout)
            if self.record_states:
                for target, part in zip(self.rec.state_trace[name], trace):
                    target[t0 : t0 + steps] = _graph_order(part, layout)
        if self.device is not None:
            if self.record_spikes:
                self.rec.spikes[name][t0 : t0 + steps] = spikes.cpu().numpy()
            if self.record_states:
                for target, part in zip(self.rec.state_trace[name], trace):
                    target[t0 : t0 + steps] = part.cpu().numpy()
        return _Value(spikes, active=int(counts.sum()))

    # ------------------------------------------------------------------ the record
    def finish(self) -> RunRecord:
        rec = self.rec
        for name, path in self.paths.items():
            (src,) = self.plan.inputs[name]
            if isinstance(self.nodes[src], QInput):
                rec.synops[name] = path.synops(self.input_active)
            else:  # the counts in the layer's own order (channels last or not): the path's rows'
                rec.synops[name] = path.synops(_numpy(self.states[src].neuron_spikes), rows_order=True)
        for name, state in self.states.items():
            rec.saturation[name] = int(state.saturation)
            rec.spike_stats[name] = {
                "spikes_per_step": self.counts[name],
                "active_neurons": state.active_count(),
                "neuron_steps": self.timesteps * self.batch * self.params[name].size,
            }
            if self.record_spikes and self.record_final_state:  # streaming keeps nothing per sample
                layout = self.plan.channels_last.get(name)
                rec.final_state[name] = (
                    _graph_order(_numpy(state.v_d).astype(np.int64), layout),
                    _graph_order(_numpy(state.v_s).astype(np.int64), layout),
                )
        rec.readout_trace = self.readout_trace
        readout = self.nodes[self.readout]
        rec.logits = readout_sum(self.readout_trace, np.asarray(readout.bias, np.int64), readout.leaky)
        return rec
