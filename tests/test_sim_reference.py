"""sim/ against a slow, obviously-correct reference loop written with Python integers."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmh_deploy.semantics import integer as fx
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.ir.synapses import qdense_matrix
from lmh_deploy.models.architectures import build, mlp
from lmh_deploy.sim import simulate


def reference(q, x_int: np.ndarray, steps: int) -> tuple[dict, list, dict]:
    """Eq. 4 with Python ints, one neuron and one synapse at a time (no numpy arithmetic)."""
    order = q.order()
    mats = {n: qdense_matrix(q.node(n), fx.WEIGHT_LAVA_SCALE) for n in q.of_kind("q_dense")}
    mats = {n: (m.toarray() if hasattr(m, "toarray") else np.asarray(m)).tolist() for n, m in mats.items()}
    lo, hi = -(1 << 23), (1 << 23) - 1

    def sat(v: int) -> int:
        return min(max(v, lo), hi)

    def mul(f: int, v: int) -> int:
        return (f * v + 2048) >> 12

    spikes_out, logits, finals = {}, [], {}
    for sample in x_int.reshape(x_int.shape[0], -1).tolist():
        state = {
            n: ([0] * q.node(n).size, [q.node(n).theta // 2] * q.node(n).size) for n in q.of_kind("q_lmh")
        }
        total = None
        for t in range(steps):
            values = {order[0]: sample}
            for name in order[1:]:
                node = q.node(name)
                ins = q.inputs_of(name)
                if node.kind == "q_dense":
                    pre = values[ins[0]]
                    acc = [sum(w * p for w, p in zip(row, pre)) for row in mats[name]]
                    e = node.weight_exp
                    values[name] = [a << e if e > 0 else a >> -e for a in acc]
                    continue
                a_in = [sum(vals) for vals in zip(*(values[i] for i in ins))]
                if node.kind == "q_readout":
                    step = [a + b for a, b in zip(a_in, node.bias.tolist())]
                    total = step if total is None else [u + v for u, v in zip(total, step)]
                    continue
                k = min(t, node.mu_d.shape[0] - 1)
                v_d, v_s = state[name]
                out = []
                for i in range(node.size):
                    col = lambda arr: int(arr[k][i if arr.shape[1] > 1 else 0])
                    d = sat(
                        mul(col(node.mu_d), v_d[i])
                        + mul(col(node.mu_s), v_s[i])
                        + a_in[i]
                        + int(node.bias[i])
                    )
                    m = sat(v_s[i] + mul(col(node.lam_s) - 4096, v_s[i]) + d + mul(col(node.lam_d) - 4096, d))
                    s = int(m >= node.theta)
                    v_d[i], v_s[i] = d, m - s * node.theta
                    out.append(s)
                values[name] = out
                spikes_out.setdefault(name, []).append(out)
        logits.append(total)
        for name, (v_d, v_s) in state.items():
            finals.setdefault(name, []).append((list(v_d), list(v_s)))
    return spikes_out, logits, finals


def assert_final_states(rec, finals: dict) -> None:
    """Every neuron's v_d and v_s after the last step, every sample, exactly."""
    for name, per_sample in finals.items():
        for b, (v_d, v_s) in enumerate(per_sample):
            assert rec.final_state[name][0][b].tolist() == v_d, (name, b)
            assert rec.final_state[name][1][b].tolist() == v_s, (name, b)


SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    hidden=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    steps=st.integers(1, 5),
    radical=st.booleans(),
    gain=st.sampled_from([1.0, 30.0]),
    batch=st.integers(1, 3),
)
def test_sim_equals_reference_on_random_mlps(seed, hidden, steps, radical, gain, batch) -> None:
    torch.manual_seed(seed)
    model = mlp(
        (1, 2, 3), 3, timesteps=steps, hidden=tuple(hidden), factors="radical" if radical else "progressive"
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.dim() == 2:  # linear weights; gain drives saturation
                p.mul_(gain)
        for neuron in model.neurons():
            for name in ("x_mu_d", "x_mu_s", "x_lam_d", "x_lam_s"):
                getattr(neuron, name).uniform_(-3, 3)  # negative mu, lam > 1 included
    q, _ = quantize_graph(export_model(model, input_shape=(1, 2, 3), timesteps=steps))
    x = fx.quantize_input(np.random.default_rng(seed).random((batch, 1, 2, 3)), q.node("input").scale)
    rec = simulate(q, x, steps)
    ref_spikes, ref_logits, finals = reference(q, x, steps)
    assert_final_states(rec, finals)
    for name, s in rec.spikes.items():
        want = np.array(ref_spikes[name], dtype=bool).reshape(batch, steps, -1).transpose(1, 0, 2)
        assert np.array_equal(s, want), name
    assert rec.logits.tolist() == ref_logits


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_sim_equals_reference_on_conv_and_residual(seed) -> None:
    torch.manual_seed(seed)
    model = build("resnet20", (1, 4, 4), 3, timesteps=2, width_mult=0.0625).eval()
    for neuron in model.neurons():
        neuron.set_factors(mu_d=-0.3, mu_s=0.2, lam_d=1.3, lam_s=0.8)
    q, _ = quantize_graph(export_model(model, input_shape=(1, 4, 4), timesteps=2))
    x = fx.quantize_input(np.random.default_rng(seed).random((1, 1, 4, 4)), q.node("input").scale)
    rec = simulate(q, x, 2)
    ref_spikes, ref_logits, finals = reference(q, x, 2)
    assert_final_states(rec, finals)
    for name, s in rec.spikes.items():
        assert np.array_equal(s[:, 0], np.array(ref_spikes[name], dtype=bool)), name
    assert rec.logits.tolist() == ref_logits


@pytest.mark.parametrize("arch, chunk_steps", [("mlp", None), ("cnn", None), ("cnn", 4)])
def test_streaming_keeps_the_same_statistics(arch: str, chunk_steps: int | None) -> None:
    """A streaming run (and one that records spikes but no final states) keeps the recorded
    run's logits, synaptic ops, step totals and active neurons: the dense chain's one call,
    and the chunked run whose last chunk keeps no states (one chunk of 6 steps: rows started
    in scratch; 4 + 2 steps: copied into it from the first chunk's states)."""
    torch.manual_seed(0)
    model = (
        mlp((1, 8, 8), 10, timesteps=6, hidden=(16, 8))
        if arch == "mlp"
        else build(arch, (1, 8, 8), 10, timesteps=6)
    )
    q, _ = quantize_graph(export_model(model.eval(), input_shape=(1, 8, 8), timesteps=6))
    x = fx.quantize_input(np.random.default_rng(0).random((4, 1, 8, 8)), q.node("input").scale)
    full = simulate(q, x, 6, chunk_steps=chunk_steps)
    assert full.final_state and any(s.any() for s in full.spikes.values())
    for streamed in (
        simulate(q, x, 6, record_spikes=False, chunk_steps=chunk_steps),
        simulate(q, x, 6, record_final_state=False, chunk_steps=chunk_steps),
    ):
        assert not streamed.final_state and np.array_equal(full.logits, streamed.logits)
        assert full.synops == streamed.synops
        for name, s in full.spikes.items():
            stats = streamed.spike_stats[name]
            assert stats["spikes_per_step"].tolist() == s.sum(axis=(1, 2)).tolist()
            assert stats["active_neurons"] == int(s.any(axis=0).sum())


@pytest.mark.parametrize("arch, shape", [("mlp", (1, 8, 8)), ("resnet20", (1, 8, 8)), ("cnn", (1, 8, 8))])
def test_torch_device_backend_equals_numpy_sim(arch: str, shape: tuple) -> None:
    """The torch path (CPU here; CUDA where present) is integer-exact against numpy."""
    torch.manual_seed(3)
    model = build(arch, shape, 10, timesteps=4, width_mult=0.25).eval()
    with torch.no_grad():
        for neuron in model.neurons():
            for name in ("x_mu_d", "x_mu_s", "x_lam_d", "x_lam_s"):
                getattr(neuron, name).uniform_(-3, 3)
        model.layers[-1].weight.mul_(20.0)
    q, _ = quantize_graph(export_model(model, input_shape=shape, timesteps=4))
    first = q.of_kind("q_lmh")[0]  # drive the first layer into saturation, both signs
    node = q.node(first)
    bias = np.where(np.arange(node.size) % 2 == 0, 8_300_000, -8_300_000)
    q.replace(first, bias=bias)
    x = fx.quantize_input(np.random.default_rng(3).random((5, *shape)), q.node("input").scale)
    want = simulate(q, x, 4, record_states=True)
    got = simulate(q, x, 4, record_states=True, device="cpu")
    assert want.saturation[first] > 0
    assert np.array_equal(got.logits, want.logits)
    assert got.synops == want.synops and got.saturation == want.saturation
    for name in want.spikes:
        assert np.array_equal(got.spikes[name], want.spikes[name]), name
        for a, b in zip(got.state_trace[name], want.state_trace[name]):
            assert np.array_equal(a, b), name
