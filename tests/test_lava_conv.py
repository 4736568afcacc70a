"""Convolutions on Lava's own ``Conv`` process: where lowering may take that route (exactly
what ``Sparse`` would compute, so only there), where ``--lava-conv auto`` takes it (a memory
budget, at its exact bounds), the kernel layout Lava expects, and Lava == sim/ bit for bit on a
network whose paths take every route (Conv from graded input, graded spikes and a delay line,
into neurons and into the readout; Sparse and DelaySparse where Conv is not exact), with the
route forced either way and with both routes in one run."""

from __future__ import annotations

import numpy as np
import pytest

import lmh_deploy  # noqa: F401  - Python 3.11 Lava import fix
from lmh_deploy.backends.lava.memory import LAVA_COPIES, lava_need_bytes, path_weight_bytes
from lmh_deploy.backends.lava.plan import (
    CONV_OUTPUT_MAX,
    SPARSE_BUDGET_BYTES,
    delay_lines,
    lava_conv_exact,
    lava_conv_kernel,
    plan_lowering,
    qdense_delays,
    sparse_budget,
)
from lmh_deploy.errors import InputError
from lmh_deploy.ir import Graph, QDense, QInput, QLMH, QReadout
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim import simulate

T = 4
INPUT_SHAPE = (2, 7, 5)  # C, H, W: not square, so that a swapped X/Y would show


def _conv(rng, c_out, c_in_shape, kernel, stride, padding, exp, graded, delay=0, mant=None) -> QDense:
    if mant is None:
        mant = rng.integers(-127, 128, (c_out, c_in_shape[0], *kernel))
    return QDense(
        np.asarray(mant, np.int16),
        weight_exp=exp,
        graded=graded,
        weight_scale=1.0,
        delay=delay,
        conv_input_shape=c_in_shape,
        conv_stride=stride,
        conv_padding=padding,
    )


def _lmh(size: int, theta: int, max_spikes: int = 1) -> QLMH:
    def f(v: int) -> np.ndarray:
        return np.full((1, 1), v, np.int64)

    rng = np.random.default_rng(size)
    bias = rng.integers(-theta // 8, theta // 8, size)
    return QLMH(
        size=size,
        theta=theta,
        mu_d=f(-1229),
        mu_s=f(614),
        lam_d=f(5120),
        lam_s=f(3482),
        bias=bias,
        v_d_init=rng.integers(-theta // 4, theta // 4, size),  # per neuron, in (C, H, W) order
        state_scale=1.0,
        max_spikes=max_spikes,
    )


def mixed_routes_graph() -> Graph:
    """input (2x7x5, graded 8 bits) -> a -> b -> c -> readout, with a shortcut a -> c (one step
    late, from a's delay line) and one input -> c (two steps late: Lava's DelaySparse).

    Geometries differ in H and W (kernel, stride, padding); ``a`` sends graded spikes (up to
    3 a step) to two Convs, one through its delay line; ``b -> c`` has a negative exponent
    (Conv cannot floor a sum) and so does not take Conv.
    """
    rng = np.random.default_rng(7)
    g = Graph(meta={"timesteps": T})
    g.add("input", QInput(shape=INPUT_SHAPE, scale=255.0, bits=8))
    g.add("in_a", _conv(rng, 5, INPUT_SHAPE, (3, 3), (2, 1), (1, 2), 2, True), ("input",))  # -> 5x4x7
    g.add("a", _lmh(5 * 4 * 7, 300_000, max_spikes=3), ("in_a",))
    g.add("a_b", _conv(rng, 4, (5, 4, 7), (2, 3), (1, 2), (0, 1), 3, True), ("a",))  # -> 4x3x4
    g.add("b", _lmh(4 * 3 * 4, 8_000), ("a_b",))
    g.add("b_c", _conv(rng, 4, (4, 3, 4), (3, 3), (1, 1), (1, 1), -1, False), ("b",))
    g.add("a_c", _conv(rng, 4, (5, 4, 7), (2, 3), (1, 2), (0, 1), 3, True, delay=1), ("a",))
    g.add("input_c", _conv(rng, 4, INPUT_SHAPE, (3, 2), (2, 1), (0, 0), 0, True, delay=2), ("input",))
    g.add("c", _lmh(4 * 3 * 4, 100_000), ("b_c", "a_c", "input_c"))
    g.add("c_out", _conv(rng, 3, (4, 3, 4), (3, 4), (1, 1), (0, 0), 2, False), ("c",))  # -> 3x1x1
    g.add("readout", QReadout(bias=np.array([5, -7, 0]), state_scale=1.0), ("c_out",))
    return g


#: the Lava process each path of :func:`mixed_routes_graph` becomes with ``--lava-conv always``
ROUTES = {
    "in_a": "Conv",
    "a_b": "Conv",
    "b_c": "Sparse",
    "a_c": "Conv",
    "input_c": "DelaySparse",
    "c_out": "Conv",
}


def test_conv_route_is_taken_exactly_where_conv_computes_our_sums() -> None:
    rng = np.random.default_rng(0)
    q = mixed_routes_graph()
    lines = delay_lines(q, qdense_delays(q))
    assert lines == {"a": 1}  # the input has no delay line: input -> c is a DelaySparse
    assert {n: lava_conv_exact(q, n, lines) for n in ROUTES} == {n: r == "Conv" for n, r in ROUTES.items()}
    # the bound: every sum Conv can send fits its 24-bit output
    ones = np.full((1, 1, 1, 1), 127, np.int16)
    g = Graph(meta={"timesteps": T})
    g.add("input", QInput(shape=(1, 1, 1), scale=1.0, bits=15))
    g.add("d", _conv(rng, 1, (1, 1, 1), (1, 1), (1, 1), (0, 0), 0, True, mant=ones), ("input",))
    g.add("n", _lmh(1, 1000), ("d",))
    assert 2 * 127 * (2**15 - 1) <= CONV_OUTPUT_MAX < 2 * 127 * (2**16 - 1)
    assert lava_conv_exact(g, "d", {})
    g.replace("input", bits=16)
    assert not lava_conv_exact(g, "d", {})
    g.replace("d", weight_exp=2)  # the exponent counts: folded into the kernel, it shifts the sums
    g.replace("input", bits=13)
    assert lava_conv_exact(g, "d", {})
    g.replace("input", bits=14)
    assert not lava_conv_exact(g, "d", {})
    g.replace("input", bits=8)
    assert lava_conv_exact(g, "d", {})
    g.replace("d", conv_padding=(0, 128))  # Lava's Conv keeps its padding in int8
    assert not lava_conv_exact(g, "d", {})
    g.replace("d", conv_padding=(0, 127))
    assert lava_conv_exact(g, "d", {})
    g.replace("d", pool_kernel=(1, 1))  # a max pool of the currents stays on Sparse
    assert not lava_conv_exact(g, "d", {})


@pytest.mark.parametrize("stride, padding", [((1, 1), (0, 0)), ((2, 1), (1, 2)), ((1, 3), (2, 0))])
def test_lava_conv_model_on_our_kernel_equals_the_semantics(stride, padding) -> None:
    """Lava's own Conv arithmetic (``lava.proc.conv.utils.conv``, what ``PyConvModelFixed``
    calls), fed our kernel in its (W, H, C) layout, gives ``conv_output``'s sums."""
    from lava.proc.conv import utils

    rng = np.random.default_rng(1)
    c, h, w = 3, 9, 6
    node = _conv(rng, 4, (c, h, w), (3, 2), stride, padding, 5, True)
    x = rng.integers(0, 256, (1, c * h * w))
    want = fx.conv_output(2 * node.weight_mant.astype(np.int64), 5, x, (c, h, w), stride, padding)
    kernel = lava_conv_kernel(node)
    assert kernel.shape == (4, 2, 3, 3) and kernel.dtype == np.int32  # (C_out, W, H, C_in)
    got = utils.conv(
        x.reshape(c, h, w).transpose(2, 1, 0).astype(np.int32),
        kernel,
        kernel.shape[1:3],
        stride[::-1],
        padding[::-1],
        (1, 1),
        1,
    )
    assert np.array_equal(got.transpose(2, 1, 0).reshape(-1), want[0])


def test_auto_keeps_sparse_within_the_budget_and_moves_the_largest_savings_to_conv() -> None:
    q = mixed_routes_graph()
    saved = {
        n: path_weight_bytes(q, n, on_conv=False) - path_weight_bytes(q, n, on_conv=True) for n in ROUTES
    }
    assert saved["in_a"] > saved["a_b"] == saved["a_c"] > 0 > saved["c_out"]  # c_out: kernel > CSR
    all_sparse = lava_need_bytes(q, frozenset())
    assert plan_lowering(q, "never").conv == frozenset() and plan_lowering(q, "never").need == all_sparse
    assert plan_lowering(q, "always").conv == {n for n, r in ROUTES.items() if r == "Conv"}

    def conv(budget: int) -> set[str]:
        plan = plan_lowering(q, "auto", budget=budget)
        assert plan.need == lava_need_bytes(q, plan.conv) and plan.budget == budget
        return set(plan.conv)

    assert conv(all_sparse) == set()  # fits: every convolution on Sparse
    assert conv(all_sparse - 1) == {"in_a"}  # the largest saving first
    one = all_sparse - LAVA_COPIES * saved["in_a"]
    assert conv(one) == {"in_a"}
    assert conv(one - 1) == {"in_a", "a_b"}  # equal savings: graph order
    two = one - LAVA_COPIES * saved["a_b"]
    assert conv(two) == {"in_a", "a_b"} and conv(two - 1) == {"in_a", "a_b", "a_c"}
    assert conv(0) == {"in_a", "a_b", "a_c"}  # c_out's kernel takes more than its matrix: never moved
    # the default budget: at most SPARSE_BUDGET_BYTES, at most half the available memory
    assert sparse_budget(2 * SPARSE_BUDGET_BYTES + 2) == SPARSE_BUDGET_BYTES
    assert sparse_budget(2 * SPARSE_BUDGET_BYTES - 2) == SPARSE_BUDGET_BYTES - 1
    assert plan_lowering(q).conv == frozenset()  # a small net on any machine with 240 MB free
    with pytest.raises(InputError, match="--lava-conv: unknown value 'sometimes'"):
        plan_lowering(q, "sometimes")


#: ``--lava-conv always``, ``never``, and ``auto`` at a budget that puts one path on Conv
FORCED = {
    "always": ROUTES,
    "never": {n: "DelaySparse" if r == "DelaySparse" else "Sparse" for n, r in ROUTES.items()},
    "mixed": {
        n: "Conv" if n == "in_a" else "DelaySparse" if r == "DelaySparse" else "Sparse"
        for n, r in ROUTES.items()
    },
}


@pytest.mark.parametrize("route", list(FORCED))
def test_lava_equals_sim_on_every_route(route: str) -> None:
    from lava.proc.conv.process import Conv

    from lmh_deploy.backends.lava.lower import build_layers
    from lmh_deploy.backends.lava.run import run_lava

    q = mixed_routes_graph()
    if route == "mixed":
        plan = plan_lowering(q, "auto", budget=lava_need_bytes(q, frozenset()) - 1)
    else:
        plan = plan_lowering(q, route)
    layers = build_layers(q, T, samples=1, plan=plan)
    assert {n: type(c).__name__ for n, c in layers.connections.items()} == FORCED[route]
    assert int(layers.connections["a_b"].num_message_bits.init) == fx.SPIKE_COUNT_BITS  # graded spikes
    assert int(layers.connections["in_a"].num_message_bits.init) == 8  # graded input
    assert int(layers.connections["c_out"].num_message_bits.init) == 0  # binary spikes
    if route == "always":
        conv = layers.connections["a_c"]
        assert isinstance(conv, Conv) and tuple(conv.input_shape) == (7, 4, 5)  # (W, H, C)
    x = np.random.default_rng(3).integers(0, 256, (4, *INPUT_SHAPE))
    x[0, 0] = 255
    want = simulate(q, x, T)
    got = run_lava(q, x, T, "fixed_pt", plan=plan)
    for name in want.spikes:
        assert 0 < (want.spikes[name] > 0).mean() < 1, name  # every layer fires, not always
        assert np.array_equal(got.spikes[name], want.spikes[name]), name
        assert np.array_equal(got.final_state[name][0][0], want.final_state[name][0][-1]), name
        assert np.array_equal(got.final_state[name][1][0], want.final_state[name][1][-1]), name
    assert want.spikes["a"].max() > 1  # graded spikes reach the Convs after a
    assert np.array_equal(got.readout_trace, want.readout_trace)
    assert np.array_equal(got.logits, want.logits)


def test_lava_block_with_a_conv_readout_equals_sim() -> None:
    """The hierarchical Process: its ``inp`` feeds a Conv and a DelaySparse, its ``out``
    leaves a Conv, both through virtual ports."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    from lmh_deploy.backends.lava.network import LMHNetwork

    q = mixed_routes_graph()
    net = LMHNetwork(graph=q, timesteps=T, lava_conv="always")
    x = np.random.default_rng(4).integers(0, 256, (2, *INPUT_SHAPE))
    n = x.shape[0]
    steps = n * T + net.out_delay
    stream = np.zeros((net.inp.shape[0], steps))
    stream[:, : n * T] = np.repeat(x.reshape(n, -1).T, T, axis=1)
    source, sink = Source(data=stream), Sink(shape=net.out.shape, buffer=steps)
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    source.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    try:
        trace = sink.data.get()
    finally:
        source.stop()
    assert np.array_equal(net.logits(trace, n), simulate(q, x, T).logits)


def test_lava_conv_runs_with_128_or_more_input_channels() -> None:
    """Lava's Conv model computes with its int8 geometry Vars and the input's shape: on numpy 2
    that overflowed from 128 input channels (``256 % np.int8(1)``) in a Lava worker until
    ``lmh_deploy._lava_compat`` handed the geometry over as Python ints."""
    from lmh_deploy.backends.lava.lower import build_layers
    from lmh_deploy.backends.lava.run import run_lava

    rng = np.random.default_rng(5)
    shape = (130, 3, 2)
    g = Graph(meta={"timesteps": T})
    g.add("input", QInput(shape=shape, scale=1.0, bits=1))  # 0/1 spikes
    g.add("d", _conv(rng, 2, shape, (3, 3), (1, 1), (1, 1), 0, False), ("input",))
    g.add("n", _lmh(2 * 3 * 2, 3000), ("d",))
    readout = QDense(rng.integers(-127, 128, (3, 12)), weight_exp=0, graded=False, weight_scale=1.0)
    g.add("out", readout, ("n",))
    g.add("readout", QReadout(bias=np.zeros(3, np.int64), state_scale=1.0), ("out",))
    plan = plan_lowering(g, "always")
    assert type(build_layers(g, T, samples=1, plan=plan).connections["d"]).__name__ == "Conv"
    x = rng.integers(0, 2, (2, *shape))
    want = simulate(g, x, T)
    got = run_lava(g, x, T, "fixed_pt", plan=plan)
    assert 0 < want.spikes["n"].mean() < 1
    assert np.array_equal(got.spikes["n"], want.spikes["n"])
    assert np.array_equal(got.logits, want.logits)
