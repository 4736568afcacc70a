"""The whole-run kernel of a dense chain (sim/chain.py) gives the chunked run's record bit for
bit (spikes, final states, readout, counts, saturation, synaptic events), and the reference
run's spikes, on MLPs of one and three hidden layers with unsigned 8-bit, signed 16-bit and
binary (spike) input, driven into saturation, whatever the number of threads the samples are
split over (ragged splits included); graphs it cannot serve exactly run chunked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lmh_deploy.models.architectures import build
from lmh_deploy.sim import simulate, simulate_batched
from lmh_deploy.sim.reference import simulate_reference
from lmh_deploy.sim.simulator import plan_for
from shared import QLIF_RULES, integer_chain
from test_sim_paths import assert_same_record

from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.ir import LMH, Dense, Graph, Input, Readout
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx

SHAPE = (1, 6, 6)


def _mlp(hidden: tuple[int, ...], arch: str = "mlp", inputs: str = "unsigned"):
    """A random net with random LM-H factors; ``inputs``: unsigned 8-bit, signed 16-bit or
    binary spikes."""
    torch.manual_seed(7)
    kw = {"hidden": hidden} if arch == "mlp" else {"width_mult": 0.25}
    model = build(arch, SHAPE, 10, timesteps=9, **kw).eval()
    with torch.no_grad():
        for neuron in model.neurons():
            for name in ("x_mu_d", "x_mu_s", "x_lam_d", "x_lam_s"):
                getattr(neuron, name).uniform_(-1, 1)
    graph = export_model(model, input_shape=SHAPE, timesteps=9, spikes=inputs == "spikes")
    if inputs == "signed":
        graph.replace("input", signed=True, bits=16)
    q, _ = quantize_graph(graph)
    first = q.of_kind("q_lmh")[0]  # drive the first layer into saturation, both signs
    q.replace(first, bias=np.where(np.arange(q.node(first).size) % 2 == 0, 8_300_000, -8_300_000))
    return q


def _inputs(q, n: int, seed: int) -> np.ndarray:
    node, rng = q.node("input"), np.random.default_rng(seed)
    if node.bits == 1:
        return (rng.random((n, *SHAPE)) < 0.3).astype(np.int64)
    return fx.quantize_input(
        rng.uniform(-1 if node.signed else 0, 1, (n, *SHAPE)), node.scale, node.bits, node.signed
    )


@pytest.mark.parametrize(
    "hidden, inputs",
    [((24,), "unsigned"), ((40, 24, 16), "unsigned"), ((24,), "signed"), ((24, 16), "spikes")],
)
def test_chain_equals_the_chunked_run_and_the_reference(hidden: tuple[int, ...], inputs: str) -> None:
    q = _mlp(hidden, inputs=inputs)
    assert plan_for(q, None).chain is not None
    x = _inputs(q, 7, 1)  # 7 samples: a ragged split over the threads
    assert q.node(q.of_kind("q_dense")[0]).graded == (inputs != "spikes")
    assert (x < 0).any() == (inputs == "signed")
    whole = simulate(q, x, 9)
    chunked = simulate(q, x, 9, chunk_steps=2)  # an explicit chunk length runs chunked
    assert sum(whole.saturation.values()) > 0
    assert all(s.any() for s in whole.spikes.values())
    assert_same_record(whole, chunked)
    assert_same_record(simulate_batched(q, x, 9, batch_size=4), chunked)
    ref = simulate_reference(q, x, 9)
    assert np.array_equal(ref["logits"], whole.logits)
    for name, spikes in ref["spikes"].items():
        assert np.array_equal(spikes, whole.spikes[name]), name
        for u, v in zip(ref["final_state"][name], whole.final_state[name], strict=True):
            assert np.array_equal(u, v), name
    streamed = simulate(q, x, 9, record_spikes=False)
    assert not streamed.spikes and np.array_equal(streamed.logits, whole.logits)
    assert streamed.synops == whole.synops
    for name, spikes in whole.spikes.items():
        stats = streamed.spike_stats[name]
        assert stats["spikes_per_step"].tolist() == spikes.sum((1, 2)).tolist()
        assert stats["active_neurons"] == int(spikes.any(0).sum())


@pytest.mark.parametrize(
    "why, kw",
    [
        ("currents beyond the int32 kernel's input bound", {"weight_exp": 14}),
        ("another rule set", {"profile": "loihi-lif"}),
        ("convolutions", {"arch": "cnn"}),
    ],
)
def test_graphs_the_chain_cannot_serve_run_chunked(why: str, kw: dict) -> None:
    rng = np.random.default_rng(2)
    layer = dict(theta=900 << 6, mu_d=np.full((1, 1), 3000), lam_s=np.full((1, 1), 3900), weight_exp=2)
    layer["bias"] = rng.integers(-4096, 4096, 7)
    if "weight_exp" in kw:  # the lmh profile's rules
        lmh = layer | {"mu_d": np.full((1, 1), 1000), "mu_s": np.full((1, 1), 100), "weight_exp": 14}
        lmh |= {"lam_d": np.full((1, 1), 4096)}
        q = integer_chain(rng, [lmh], n_in=36, timesteps=9)
        x = rng.integers(0, 256, (3, 36))
    elif "profile" in kw:  # Lava's own LIF rules (tests/shared.py)
        q = integer_chain(rng, [layer | QLIF_RULES], n_in=36, timesteps=9)
        x = rng.integers(0, 256, (3, 36))
    else:
        q = _mlp((24,), **kw)
        x = fx.quantize_input(rng.random((3, *SHAPE)), q.node("input").scale)
    assert plan_for(q, None).chain is None, why
    ref = simulate_reference(q, x, 9)
    assert np.array_equal(ref["logits"], simulate(q, x, 9).logits)


def test_array_code_only_runs_without_the_compiled_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan made while numba was in use does not run the chain once the array code is
    asked for (``neuron.array_code_only``, as ``LMH_DEPLOY_SIM_NO_NUMBA`` does)."""
    from lmh_deploy.sim import chain
    from lmh_deploy.sim import neuron as N

    q = _mlp((24,))
    x = fx.quantize_input(np.random.default_rng(3).random((2, *SHAPE)), q.node("input").scale)
    want = simulate(q, x, 9)
    assert plan_for(q, None).chain is not None

    def refuse(*args):
        raise AssertionError("the compiled chain ran")

    monkeypatch.setattr(chain, "_run", refuse)
    with N.array_code_only():
        assert_same_record(simulate(q, x, 9), want)


def test_any_split_over_threads_gives_the_same_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The samples split over 1-4 threads (9 samples: ragged splits into up to 4 parts, at
    least MIN_SAMPLES_PER_THREAD = 2 samples each) give the same integers, and simulate gives
    the same record at one thread and at two or more (numba's thread count; set here without
    starting numba's threading layer, which would fix multiprocessing's start method before
    Lava's tests import it)."""
    q = _mlp((24, 16))
    x = _inputs(q, 9, 4)
    chain = plan_for(q, None).chain
    flat = x.reshape(len(x), -1).astype(np.int64)
    runs = []
    for threads in (1, 2, 3, 4):
        spikes = {name: np.zeros((9, len(x), n), bool) for name, n in zip(chain.names, chain.sizes)}
        runs.append((chain.run(flat, 9, spikes, threads=threads), spikes))
    (first, first_spikes), *others = runs
    assert first.counts.any()
    for run, spikes in others:
        for name in chain.names:
            assert np.array_equal(spikes[name], first_spikes[name])
        for field in ("counts", "trace", "saturation", "active", "synops"):
            assert np.array_equal(getattr(run, field), getattr(first, field)), field
        for states, want in zip(run.states, first.states, strict=True):
            assert all(np.array_equal(u, v) for u, v in zip(states, want, strict=True))
    from lmh_deploy.sim import chain as chain_module

    threads = chain_module.sim_threads()
    monkeypatch.setattr(chain_module, "sim_threads", lambda: 1)
    one = simulate(q, x, 9)
    monkeypatch.setattr(chain_module, "sim_threads", lambda: max(threads, 2))
    assert_same_record(simulate(q, x, 9), one)


def test_a_chain_run_leaves_the_multiprocessing_start_method_to_lava() -> None:
    """Splitting a run over threads does not start numba's threading layer, which would fix
    multiprocessing's start method so that Lava, importing afterwards (``verify`` runs sim/
    first), could not set ``fork``: in a fresh process, an MLP's run, then Lava's runtime."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import multiprocessing, numpy as np\n"
        "from test_sim_chain import _inputs, _mlp\n"
        "from lmh_deploy.sim import simulate\n"
        "from lmh_deploy.sim.simulator import plan_for\n"
        "q = _mlp((24,))\n"
        "assert plan_for(q, None).chain is not None\n"
        "simulate(q, _inputs(q, 4, 0), 3)\n"
        "assert multiprocessing.get_start_method(allow_none=True) is None\n"
        "import lava.magma.runtime.runtime\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_hidden_sums_past_int16_take_the_int32_gather() -> None:
    """The chain's gather adds a step's rows in int16 only while ``spikes * peak <= 32767``:
    300 first-layer neurons that all fire into mantissas of 127 sum to 38100 (past 32767), so
    a hidden layer's peak read as 0 would wrap; the chain equals the chunked run and the
    reference run."""
    q = _mlp((300, 8))
    first, second = q.of_kind("q_lmh")[0], q.of_kind("q_dense")[1]
    q.replace(first, bias=np.full(300, 8_300_000))  # every neuron fires at every step
    q.replace(second, weight_mant=np.full_like(q.node(second).weight_mant, 127))
    assert plan_for(q, None).chain is not None
    x = _inputs(q, 2, 5)
    whole = simulate(q, x, 3)
    assert whole.spikes[first].all()
    assert_same_record(whole, simulate(q, x, 3, chunk_steps=2))
    assert np.array_equal(simulate_reference(q, x, 3)["logits"], whole.logits)


def test_a_readout_fed_by_two_paths_runs_chunked() -> None:
    """A readout fed by two dense paths is no chain: its order's body (input | d1, l1, d2, l2,
    d3 | d4, out) has an odd length, refused before the pairing (whose first two pairs fit);
    the chunked run equals the reference."""
    rng = np.random.default_rng(0)
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    lmh = lambda n: LMH(size=n, theta=1.0, mu_d=zero, mu_s=zero, lam_d=one, lam_s=one, bias=np.zeros(n))
    g = Graph(meta={"timesteps": 4})
    g.add("input", Input(shape=(6,)))
    g.add("d1", Dense(weight=rng.normal(0.6, 0.5, (8, 6))), ("input",))
    g.add("l1", lmh(8), ("d1",))
    g.add("d2", Dense(weight=rng.normal(0.3, 0.5, (5, 8))), ("l1",))
    g.add("l2", lmh(5), ("d2",))
    g.add("d3", Dense(weight=rng.normal(0, 0.5, (3, 5))), ("l2",))
    g.add("d4", Dense(weight=rng.normal(0, 0.5, (3, 5))), ("l2",))
    g.add("out", Readout(bias=np.zeros(3)), ("d3", "d4"))
    q, _ = quantize_graph(g)
    assert q.order() == ["input", "d1", "l1", "d2", "l2", "d3", "d4", "out"]
    assert plan_for(q, None).chain is None
    x = fx.quantize_input(rng.uniform(0, 1, (3, 6)), q.node("input").scale)
    assert np.array_equal(simulate(q, x, 4).logits, simulate_reference(q, x, 4)["logits"])


def _chain_parts(q):
    """``chain_of``'s arguments for ``q``'s plan."""
    plan = plan_for(q, None)
    return plan.order, plan.nodes, plan.inputs, plan.paths, plan.params


def _changed(path, **fields):
    """A copy of the synapse path ``path`` with ``fields`` replaced."""
    import copy

    new = copy.copy(path)
    new.__dict__.update(fields)
    return new


def test_chain_of_refuses_each_break_of_the_pattern() -> None:
    """chain_of takes ``input, (dense, neuron)+, dense, readout``, each node reading the one
    before, every path within its bounds; each single break of that, made in the plan's own
    dictionaries while every other check passes, gives None: the order not ending in the
    readout, a pair's neuron or the last path of another kind, a dense path or the readout
    reading another node, a later path (hidden or last) with graded input, a body of odd
    length (a dense path that no node reads, beside the last: its events would be lost), the
    first path's bound one past its layer's int32 input limit (at the limit: chained)."""
    from lmh_deploy.sim.chain import chain_of
    from lmh_deploy.sim.neuron import int32_input_limit

    q = _mlp((24, 16))
    order, nodes, inputs, paths, params = _chain_parts(q)
    input_, d1, l1, d2, l2, d3, out = order
    assert chain_of(order, nodes, inputs, paths, params) is not None
    assert chain_of([input_, d1, l1, d2, l2], nodes, inputs, paths, params) is None
    assert chain_of(order, nodes | {l1: nodes[d1]}, inputs, paths, params) is None
    assert chain_of(order, nodes | {d3: nodes[l2]}, inputs, paths, params) is None
    for reads in ({d2: [input_]}, {out: [d2]}):
        assert chain_of(order, nodes, inputs | reads, paths, params) is None, reads
    for path in (d2, d3):
        graded = paths | {path: _changed(paths[path], graded=True)}
        assert chain_of(order, nodes, inputs, graded, params) is None, path
    dead_end = [input_, d1, l1, d2, l2, "unread", d3, out]
    with_it = (nodes | {"unread": nodes[d3]}, inputs | {"unread": [l2]}, paths | {"unread": paths[d3]})
    assert chain_of(dead_end, *with_it, params) is None
    limit = int32_input_limit(params[l1], paths[d1].weight_exp)
    assert 0 < paths[d1].bound < limit
    for bound, chained in ((limit, True), (limit + 1, False)):
        at = paths | {d1: _changed(paths[d1], bound=bound)}
        assert (chain_of(order, nodes, inputs, at, params) is not None) == chained, bound


def test_a_path_is_chained_only_while_its_sums_fit_int32() -> None:
    """``_fits`` at its margins, on copies of a chain's paths: sums bounded by 2**31 - 1 fit
    int32, 2**31 does not; a later path takes binary spikes through int8 rows (graded input or
    int16 rows: refused), the first path any input."""
    from lmh_deploy.sim.chain import _fits
    from lmh_deploy.sim.synapse import INT32_LIMIT

    chain = plan_for(_mlp((24, 16)), None).chain
    first, later = chain.layers[0].path, chain.layers[1].path
    assert INT32_LIMIT == 2**31 - 1
    for path, is_later in ((first, False), (later, True)):
        assert _fits(_changed(path, bound=2**31 - 1), is_later)
        assert not _fits(_changed(path, bound=2**31), is_later)
    assert _fits(later, True) and not _fits(_changed(later, graded=True), True)
    assert not _fits(_changed(later, w_t_int=later.w_t_int.astype(np.int16)), True)
    assert _fits(_changed(first, graded=True, w_t_int=first.w_t_int.astype(np.int16)), False)


def test_a_run_splits_its_samples_into_parts_of_two_or_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """``min(threads, batch // MIN_SAMPLES_PER_THREAD)`` contiguous parts, at least one."""
    from lmh_deploy.sim import chain as chain_module

    q = _mlp((24,))
    chain = plan_for(q, None).chain
    assert chain_module.MIN_SAMPLES_PER_THREAD == 2
    split = chain_module.run_in_threads
    seen: list = []

    def recorded(fn, parts: list) -> list:
        seen.append(parts)
        return split(fn, parts)

    monkeypatch.setattr(chain_module, "run_in_threads", recorded)
    for batch, threads, want in (
        (1, 4, [(0, 1)]),
        (8, 1, [(0, 8)]),
        (5, 4, [(0, 2), (2, 5)]),
        (9, 3, [(0, 3), (3, 6), (6, 9)]),
    ):
        x = _inputs(q, batch, 0).reshape(batch, -1).astype(np.int64)
        chain.run(x, 3, None, threads=threads)
        assert seen.pop() == want, (batch, threads)


def test_a_chain_run_keeps_its_layers_state_dtype_and_an_int64_readout() -> None:
    """The states in the dtype of each layer's kernel form (int32 here: the SIMD width), the
    readout's input in int64 (as the chunked run's)."""
    from lmh_deploy.sim.neuron import layer_form

    q = _mlp((24, 16))
    plan = plan_for(q, None)
    x = _inputs(q, 3, 2)
    run = plan.chain.run(x.reshape(3, -1).astype(np.int64), 4, None)
    dtypes = [layer_form(plan.params[name]).state_dtype for name in plan.chain.names]
    assert dtypes == [np.int32, np.int32]
    assert [(v_d.dtype, v_s.dtype) for v_d, v_s in run.states] == [(d, d) for d in dtypes]
    assert run.trace.dtype == np.int64
    assert simulate(q, x, 4, chunk_steps=2).readout_trace.dtype == np.int64


def test_a_per_neuron_initial_dendrite_starts_every_sample_of_the_chain() -> None:
    """A first layer whose initial dendrite differs per neuron (an (n,) ``v_d_init``) starts
    each sample's row from it: the chain equals the chunked run and the reference run."""
    q = _mlp((24, 16))
    first = q.of_kind("q_lmh")[0]
    q.replace(first, v_d_init=np.arange(24) * 50_000 - 600_000)
    assert plan_for(q, None).chain is not None
    x = _inputs(q, 3, 6)
    whole = simulate(q, x, 4)
    assert_same_record(whole, simulate(q, x, 4, chunk_steps=2))
    ref = simulate_reference(q, x, 4)
    assert np.array_equal(ref["logits"], whole.logits)
    for u, v in zip(ref["final_state"][first], whole.final_state[first], strict=True):
        assert np.array_equal(u, v)
