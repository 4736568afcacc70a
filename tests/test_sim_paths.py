"""Whole-network sim/ runs: every execution path gives the same record, bit for bit
(numba kernels vs the pure numpy fallback, torch device, chunk lengths, mini-batches,
time-varying input, channels-last layers inside vs the graph's order, batch rows split
between threads), on MLP,
convolutional and residual nets driven into saturation; and each synaptic path (dense gemm,
int8 ``_int_mm``, oneDNN's int8 products (packed matrix product, direct convolution, columns
product), int8 event gather, CSR, conv gemm, conv event scatter), the dense chain and each
neuron kernel (fused int32/int64, array code) forced on every layer it can serve, against
the reference run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lmh_deploy.models.architectures import build
from lmh_deploy.sim import default_batch_size, simulate, simulate_batched
from lmh_deploy.sim import neuron as N
from lmh_deploy.sim.batching import bytes_per_sample
from lmh_deploy.sim.reference import simulate_reference
from lmh_deploy.sim.simulator import plan_for

from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from shared import threads_at_any_size


def _net(arch: str, shape: tuple, steps: int = 4, radical: bool = False, seed: int = 3):
    torch.manual_seed(seed)
    model = build(
        arch, shape, 10, timesteps=steps, width_mult=0.25, **({"factors": "radical"} if radical else {})
    ).eval()
    with torch.no_grad():
        for neuron in model.neurons():
            for name in ("x_mu_d", "x_mu_s", "x_lam_d", "x_lam_s"):
                getattr(neuron, name).uniform_(-3, 3)
    q, _ = quantize_graph(export_model(model, input_shape=shape, timesteps=steps))
    first = q.of_kind("q_lmh")[0]  # drive the first layer into saturation, both signs
    bias = np.where(np.arange(q.node(first).size) % 2 == 0, 8_300_000, -8_300_000)
    q.replace(first, bias=bias)
    return q


def assert_same_record(a, b) -> None:
    assert np.array_equal(a.logits, b.logits)
    assert np.array_equal(a.readout_trace, b.readout_trace)
    assert a.synops == b.synops and a.saturation == b.saturation
    assert a.spikes.keys() == b.spikes.keys()
    for name in a.spikes:
        assert np.array_equal(a.spikes[name], b.spikes[name]), name
    for name in a.final_state:
        for u, v in zip(a.final_state[name], b.final_state[name]):
            assert np.array_equal(u, v), name
    for name in a.state_trace:
        for u, v in zip(a.state_trace[name], b.state_trace[name]):
            assert np.array_equal(u, v), name
    for name, stats in a.spike_stats.items():
        other = b.spike_stats[name]
        assert np.array_equal(stats["spikes_per_step"], other["spikes_per_step"]), name
        assert stats["active_neurons"] == other["active_neurons"], name
        assert stats["neuron_steps"] == other["neuron_steps"], name


NETS = [("mlp", (1, 8, 8), False), ("cnn", (1, 8, 8), True), ("resnet20", (1, 8, 8), False)]


@pytest.mark.parametrize("arch, shape, radical", NETS)
def test_every_path_gives_the_same_record(arch: str, shape: tuple, radical: bool) -> None:
    q = _net(arch, shape, radical=radical)
    x = fx.quantize_input(np.random.default_rng(3).random((5, *shape)), q.node("input").scale)
    want = simulate(q, x, 6, record_states=True, chunk_steps=1)
    assert sum(want.saturation.values()) > 0
    # numpy runs keep conv-fed layers channels last inside (the torch run does not)
    assert bool(plan_for(q, None).channels_last) == (arch != "mlp")
    runs = {
        "default chunks": simulate(q, x, 6, record_states=True),
        "chunks of 4": simulate(q, x, 6, record_states=True, chunk_steps=4),
        "torch cpu": simulate(q, x, 6, record_states=True, device="cpu", chunk_steps=4),
        "mini-batches of 2": simulate_batched(q, x, 6, record_states=True, batch_size=2),
    }
    for threads in (2, 3):  # 5 rows split 2 + 3 and 1 + 2 + 2 (ragged)
        with threads_at_any_size(threads):
            runs[f"{threads} threads"] = simulate(q, x, 6, record_states=True)
    with N.array_code_only():
        runs["numpy fallback"] = simulate(q, x, 6, record_states=True, chunk_steps=3)
    for label, rec in runs.items():
        try:
            assert_same_record(rec, want)
        except AssertionError as err:
            raise AssertionError(label) from err
    ref = simulate_reference(q, x, 6)  # the semantics functions, one step at a time
    assert np.array_equal(ref["logits"], want.logits)
    for name, s in ref["spikes"].items():
        assert np.array_equal(s, want.spikes[name]), name
        assert all(np.array_equal(u, v) for u, v in zip(ref["final_state"][name], want.final_state[name])), (
            name
        )
    streamed = simulate(q, x, 6, record_spikes=False)
    assert not streamed.spikes and np.array_equal(streamed.logits, want.logits)
    for name, s in want.spikes.items():
        assert streamed.spike_stats[name]["spikes_per_step"].tolist() == s.sum((1, 2)).tolist()


def test_per_neuron_initial_dendrites_of_channels_last_layers() -> None:
    """A conv-fed layer runs in (H, W, C) order inside sim/: its per-neuron ``v_d_init`` (a
    trained bias, one per neuron, e.g. from a NIR file's ``lmh_rules``) is reordered with its
    other per-neuron parameters, so every neuron starts from its own value."""
    q = _net("cnn", (1, 8, 8))
    inside = plan_for(q, None).channels_last
    assert inside
    rng = np.random.default_rng(11)
    for name in inside:
        node = q.node(name)
        q.replace(name, v_d_init=rng.integers(-3 * node.theta, 3 * node.theta, node.size))
    x = fx.quantize_input(rng.random((3, 1, 8, 8)), q.node("input").scale)
    want = simulate_reference(q, x, 3)
    runs = {
        "numba": simulate(q, x, 3, record_states=True),
        "torch": simulate(q, x, 3, record_states=True, device="cpu"),
    }
    with N.array_code_only():
        runs["numpy fallback"] = simulate(q, x, 3, record_states=True)
    for label, rec in runs.items():
        assert np.array_equal(want["logits"], rec.logits), label
        for name, s in want["spikes"].items():
            assert np.array_equal(s, rec.spikes[name]), (label, name)
            assert all(np.array_equal(u, v) for u, v in zip(want["final_state"][name], rec.final_state[name]))


@pytest.mark.parametrize("arch, shape, radical", NETS[:2])
def test_time_varying_input_through_every_path(arch: str, shape: tuple, radical: bool) -> None:
    """(T, N, ...) frames: equal to static input when the frames repeat, and every path
    agrees on genuinely varying frames."""
    q = _net(arch, shape, radical=radical)
    rng = np.random.default_rng(5)
    x = fx.quantize_input(rng.random((3, *shape)), q.node("input").scale)
    repeated = np.broadcast_to(x, (5,) + x.shape).copy()
    assert_same_record(simulate(q, repeated, 5, chunk_steps=2), simulate(q, x, 5))
    frames = fx.quantize_input(rng.random((7, 3, *shape)), q.node("input").scale)
    want = simulate(q, frames, 7, chunk_steps=1, record_states=True)
    ref = simulate_reference(q, frames, 7)
    assert np.array_equal(ref["logits"], want.logits)
    assert all(np.array_equal(s, want.spikes[n]) for n, s in ref["spikes"].items())
    assert_same_record(simulate(q, frames, 7, device="cpu", record_states=True), want)
    assert_same_record(simulate_batched(q, frames, 7, batch_size=2, record_states=True), want)
    with N.array_code_only():
        assert_same_record(simulate(q, frames, 7, record_states=True), want)
    with pytest.raises(ValueError, match="has 7 frames; cannot run 8 steps"):
        simulate(q, frames, 8)


def test_batch_size_comes_from_the_memory_budget() -> None:
    q = _net("mlp", (1, 8, 8))
    per_sample = bytes_per_sample(q, 4)
    assert default_batch_size(q, 4, budget_bytes=10 * per_sample) == 10
    assert default_batch_size(q, 4, budget_bytes=1) == 1
    assert bytes_per_sample(q, 40, record_states=True) > bytes_per_sample(q, 40)
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        simulate_batched(q, np.zeros((2, 1, 8, 8), np.int64), 2, batch_size=0)


def test_run_backend_in_mini_batches_equals_one_batch() -> None:
    """``run``/``verify``'s entry point: sim and Lava records merged over mini-batches."""
    from lmh_deploy.pipeline.run import run_backend

    q = _net("mlp", (1, 8, 8), steps=3)
    x = fx.quantize_input(np.random.default_rng(2).random((5, 1, 8, 8)), q.node("input").scale)
    whole = simulate(q, x, 3)
    assert_same_record(run_backend(q, x, 3, "sim", batch_size=2), whole)
    streamed = run_backend(q, x, 3, "sim", batch_size=3, record_spikes=False)
    assert np.array_equal(streamed.logits, whole.logits) and not streamed.spikes
    lava = run_backend(q, x[:2], 3, "lava", batch_size=1)
    for name, s in lava.spikes.items():
        assert np.array_equal(s, whole.spikes[name][:, :2]), name
    assert np.array_equal(lava.logits, whole.logits[:2])
    with pytest.raises(ValueError, match="unknown backend 'loihi'"):
        run_backend(q, x, 3, "loihi")


# --------------------------------------------------------------------------- forced paths
# Each synaptic path and neuron kernel of sim/, forced on every layer it can serve, against
# the reference run (sim/reference.py: the semantics functions, one step at a time). The
# automatic choice picks one way per call from timings, so without forcing a way may never
# run in a test; here every one runs on the same saturating nets and must give the
# reference's spikes, states and logits bit for bit.
def _as_csr_matrices(q):
    """The same graph with every synapse path (convolutions unrolled) as a CSR matrix."""
    import scipy.sparse as sp

    from lmh_deploy.ir.synapses import qdense_matrix

    out = q.copy()
    for name in out.of_kind("q_dense"):
        node = out.node(name)
        out.replace(name, weight_mant=sp.csr_matrix(qdense_matrix(node)), conv_input_shape=None)
    return out


def _forced_sums(way: str, used: dict):
    def sums(self, pre, active=None):
        if way == "int8" and self.int8_ok:
            chosen = "int8"
        elif way == "events" and ("events" in self.ways or self.sparse):
            chosen = "csr events" if self.sparse else "conv events" if self.is_conv else "events"
        else:
            chosen = "csr gemm" if self.sparse else "conv gemm" if self.is_conv else "gemm"
        if way == "onednn" and "int8" in self.ways:
            out = self._int8(pre)
            chosen = _onednn_way(self)
        elif chosen == "int8":
            out = self.int8_sums(pre).numpy()
        else:
            out = self._events(pre) if "events" in chosen else self._gemm(pre)
        if chosen in ("events", "conv events"):  # compiled gather / scatter: int32 while the sums fit
            assert out.dtype == (np.int32 if self.bound <= 2**31 - 1 else np.int64), chosen
        if chosen == "gemm":  # float32 below 2**24 (these nets), float64 below 2**53
            assert out.dtype == self.float_dtype, (chosen, out.dtype)
        used[chosen] = used.get(chosen, 0) + 1
        return out

    return sums


def _onednn_way(path) -> str:
    """Which of the int8 way's products served ``path``'s last call."""
    if "int8" not in path.ways:
        return "int8 dropped (its first sums disagreed)"
    if path.conv is None:
        return "int8 _int_mm" if path.qlinear is False else "int8 packed product"
    kind = (
        "unrolled product"
        if path.qconv_dense is not None
        else "columns product"
        if path.qconv_cols is not None
        else "direct conv"
    )
    return f"int8 {kind} {path.conv.out_hw[0]}x{path.conv.out_hw[1]}"


#: the int8 way on this project's torch (oneDNN's u8 x s8 ops) per net: the packed matrix
#: product for dense layers, the product with the unrolled kernel where the input has no more
#: positions than the kernel has taps (conv.unrolled_fits), the columns product for other
#: stride-1 outputs of at most 16 positions (SMALL_CONV_OUTPUTS) and the direct convolution
#: for the others; without oneDNN,
#: ``torch._int_mm`` and no int8 convolution
ONEDNN_RUNS = {
    "mlp": {"int8 packed product"},
    "cnn": {"int8 packed product", "int8 columns product 4x4"},
    "resnet20": {
        "int8 packed product",
        "int8 direct conv 8x8",
        "int8 direct conv 4x4",  # stride 2
        "int8 columns product 4x4",
        "int8 unrolled product 2x2",
    },
}


#: path -> (synapse way forced, neuron code, graph as CSR matrices, ways that must have run)
FORCED = {
    "dense gemm, fused kernel": ("gemm", "fused", False, {"gemm"}),
    "int8 _int_mm, fused kernel": ("int8", "fused", False, {"int8"}),
    "int8 oneDNN products, fused kernel": ("onednn", "fused", False, None),  # ONEDNN_RUNS
    "int8 event gather, fused kernel": ("events", "fused", False, {"events"}),
    "dense gemm, fused kernel in int64": ("gemm", "fused int64", False, {"gemm"}),
    "dense gemm, array neuron code": ("gemm", "arrays", False, {"gemm"}),
    "dense chain, one compiled call": (None, "chain", False, {"chain"}),  # MLP only
    "CSR matrices, sparse product": ("gemm", "fused", True, {"csr gemm"}),
    "CSR matrices, sparse events": ("events", "arrays", True, {"csr events"}),
}
CONV_FORCED = {
    "conv gemm, fused kernel": ("gemm", "fused", False, {"conv gemm"}),
    "conv event scatter, fused kernel": ("events", "fused", False, {"conv events"}),
}
_REFERENCES: dict = {}


def _net_and_reference(arch: str, shape: tuple, radical: bool):
    key = (arch, shape, radical)
    if key not in _REFERENCES:
        q = _net(arch, shape, radical=radical)
        x = fx.quantize_input(np.random.default_rng(3).random((4, *shape)), q.node("input").scale)
        _REFERENCES[key] = q, x, simulate_reference(q, x, 5)
    return _REFERENCES[key]


FORCED_CASES = (
    [
        (*net, path)
        for net in NETS
        for path in FORCED
        if net[0] == "mlp" or "chain" not in path  # the chain serves dense nets only
    ]
    + [(*net, path) for net in NETS[1:] for path in CONV_FORCED]
)


@pytest.mark.parametrize("arch, shape, radical, path", FORCED_CASES)
def test_each_synaptic_path_forced_gives_the_reference_spikes(
    arch: str, shape: tuple, radical: bool, path: str, monkeypatch
) -> None:
    from lmh_deploy.sim import fused, simulator, synapse

    way, neuron_code, as_csr, must_run = {**FORCED, **CONV_FORCED}[path]
    q, x, ref = _net_and_reference(arch, shape, radical)
    used: dict = {}
    if neuron_code == "chain":  # the whole run in one compiled call (sim/chain.py), no sums
        whole_chain = simulator._whole_chain
        monkeypatch.setattr(simulator, "_whole_chain", lambda *a: used.setdefault("chain", whole_chain(*a)))
        monkeypatch.setattr(synapse.SynapsePath, "sums", _forced_sums("gemm", used))
        # a copy: a plan of q made under the int64 case's patch, memoised, has no chain
        rec = simulate(q.copy(), x, 5)
        assert set(used) == {"chain"}, used  # no chunk ran
    else:
        monkeypatch.setattr(synapse.SynapsePath, "sums", _forced_sums(way, used))
    if as_csr:
        monkeypatch.setattr(synapse, "DENSE_ENOUGH", 2.0)  # keep even a full matrix CSR
        q = _as_csr_matrices(q)
    if neuron_code == "fused int64":
        monkeypatch.setattr(fused, "raw_limit", lambda form, left: -1)
    if neuron_code == "arrays":
        with N.array_code_only():
            rec = simulate(q, x, 5, chunk_steps=2)
    elif neuron_code != "chain":
        assert N.numba_active()
        rec = simulate(q, x, 5, chunk_steps=2)
    if must_run is None:  # the int8 way itself, as the automatic choice runs it
        must_run = ONEDNN_RUNS[arch] if synapse._onednn_has("qlinear_pointwise") else {"int8 _int_mm"}
        assert not any("dropped" in way for way in used), used
    assert must_run <= set(used), (must_run, used)
    assert sum(rec.saturation.values()) > 0
    assert np.array_equal(rec.logits, ref["logits"])
    for name, s in ref["spikes"].items():
        assert np.array_equal(rec.spikes[name], s), name
        for got, want in zip(rec.final_state[name], ref["final_state"][name]):
            assert np.array_equal(got, want), name


def test_sim_runs_leave_the_multiprocessing_start_method_unset() -> None:
    """A sim/ run (neuron kernel in threads, the dense chain) reads numba's thread count
    without starting numba's threading layer, which would fix the multiprocessing start
    method: Lava's import sets it (``mp.set_start_method('fork')``) and fails where it is set
    already (``verify`` runs sim/ and then Lava in one process). A fresh process: this test
    process may have imported Lava already."""
    code = (
        "import multiprocessing as mp, numpy as np\n"
        "from lmh_deploy.sim.neuron import sim_threads\n"
        "import test_sim_paths as t\n"
        "for arch in ('mlp', 'cnn'):\n"
        "    q = t._net(arch, (1, 8, 8))\n"
        "    x = np.ones((4, 1, 8, 8), np.int64)\n"
        "    t.simulate(q, x, 4)\n"
        "assert sim_threads() >= 1\n"
        "assert mp.get_start_method(allow_none=True) is None, mp.get_start_method()\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("arch, shape, radical", NETS)
def test_batch_shards_give_the_unsharded_record(arch: str, shape: tuple, radical: bool) -> None:
    """A run whose batch is split into shards, one per thread, each shard's layer pipeline
    run whole in its own thread (``simulate(..., batch_shards=True)``), gives the one-thread run's
    record bit for bit: spikes, states, logits, saturation, synops and spike counts, for
    static input (the MLP also by its whole-run chain) and time-major frames, at batch
    sizes 1, 2 and odd, with fewer samples than threads, streaming too."""
    from lmh_deploy.sim.simulator import shards_of

    q = _net(arch, shape, radical=radical)
    plan, rng = plan_for(q, None), np.random.default_rng(8)
    scale = q.node("input").scale
    for batch in (1, 2, 5):
        inputs = {
            "static": fx.quantize_input(rng.random((batch, *shape)), scale),
            "frames": fx.quantize_input(rng.random((6, batch, *shape)), scale),
        }
        for kind, x in inputs.items():
            for states in (False, True):
                with threads_at_any_size(1):
                    want = simulate(q, x, 6, record_states=states)
                    assert shards_of(plan, batch, 6, None) == [(0, batch)]
                for threads in (2, 3):
                    with threads_at_any_size(threads):
                        assert len(shards_of(plan, batch, 6, None)) == min(threads, batch)
                        assert shards_of(plan, batch, 6, "cpu") == [(0, batch)]  # torch: whole
                        got = simulate(q, x, 6, record_states=states, batch_shards=True)
                        streamed = simulate(q, x, 6, record_spikes=False, batch_shards=True)
                    label = (batch, kind, states, threads)
                    try:
                        assert_same_record(got, want)
                    except AssertionError as err:
                        raise AssertionError(label) from err
                    assert np.array_equal(streamed.logits, want.logits), label
                    assert streamed.saturation == want.saturation and streamed.synops == want.synops, label
                    for name, stats in streamed.spike_stats.items():
                        assert stats["active_neurons"] == want.spike_stats[name]["active_neurons"], label
                        assert stats["neuron_steps"] == want.spike_stats[name]["neuron_steps"], label
                        assert np.array_equal(
                            stats["spikes_per_step"], want.spike_stats[name]["spikes_per_step"]
                        )


def test_batch_shards_run_on_one_thread_each_and_restore_torchs_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each shard runs in its own thread with sim/'s threads (numba's count) and torch's
    intra-op threads at one (no shard splits again, none oversubscribes the cores); the
    caller's torch thread count is back afterwards; a shard's failure reaches the caller
    after every shard has ended."""
    import threading

    from lmh_deploy.sim import simulator

    q = _net("cnn", (1, 8, 8))
    x = fx.quantize_input(np.random.default_rng(2).random((4, 1, 8, 8)), q.node("input").scale)
    seen: list[tuple[int, int, int, int]] = []
    real = simulator._simulate_whole

    def spy(plan, part, *args):
        seen.append((threading.get_ident(), len(part), N.sim_threads(), torch.get_num_threads()))
        return real(plan, part, *args)

    monkeypatch.setattr(simulator, "_simulate_whole", spy)
    monkeypatch.setattr(N, "MIN_THREAD_WORK", 1)
    # numba's thread count 2, read as sim_threads reads it without a started threading layer
    # (starting it here would fix multiprocessing's start method for the Lava tests)
    import numba
    from numba.np.ufunc import parallel

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    monkeypatch.setattr(parallel, "_is_initialized", False)
    assert N.sim_threads() == 2 and simulator.shards_of(plan_for(q, None), 4, 6, None) == [(0, 2), (2, 4)]
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        simulate(q, x, 6, batch_shards=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)
    assert len(seen) == 2 and len({ident for ident, *_ in seen}) == 2
    assert all(part == 2 and threads == 1 and intra == 1 for _, part, threads, intra in seen)

    def failing(plan, part, *args):
        if len(seen) < 4:
            seen.append((threading.get_ident(), len(part), 0, 0))
            raise ValueError("shard failed")
        return real(plan, part, *args)

    monkeypatch.setattr(simulator, "_simulate_whole", failing)
    with pytest.raises(ValueError, match="shard failed"):
        simulate(q, x, 6, batch_shards=True)
    assert len(seen) == 4  # both shards ran to their end before the caller saw the failure


def test_run_in_threads_called_inside_a_part_runs_its_parts_in_place() -> None:
    """A part that splits again (a batch shard whose layer splits its rows; the tests' own
    ``threads_at_any_size`` makes every layer split) runs those parts in its own thread, not
    in the pool whose workers are all busy with the outer parts: that deadlocked."""
    import threading

    from lmh_deploy.sim.neuron import run_in_threads

    def inner(lo: int, hi: int) -> tuple[int, str]:
        return lo, threading.current_thread().name

    def outer(lo: int, hi: int) -> list:
        return run_in_threads(inner, [(lo, lo + 1), (lo + 1, hi)])

    results: list = []
    caller = threading.Thread(target=lambda: results.append(run_in_threads(outer, [(0, 2), (2, 4), (4, 6)])))
    caller.daemon = True  # a deadlock must fail the test, not hang the suite
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "nested run_in_threads deadlocked"
    [parts] = results
    assert [[lo for lo, _ in inner_parts] for inner_parts in parts] == [[0, 1], [2, 3], [4, 5]]
    for inner_parts in parts:  # each outer part ran its inner parts in its own thread
        assert len({name for _, name in inner_parts}) == 1
