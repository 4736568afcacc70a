"""Numeric profiles and neuron rules: Lava (fixed_pt / floating_pt) == sim / float reference for
every rule and profile combination, and one-line refusals of what a profile cannot express."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from lmh_deploy.sim import simulate

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.ir import (
    LMH,
    Dense,
    Graph,
    Input,
    IRError,
    Readout,
)
from lmh_deploy.interop.nir_export import NIR_RULES
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import PROFILES, get_profile
from shared import QLIF_RULES, integer_chain

RULE_COMBOS = list(itertools.product(("subtract", "set"), (">=", ">"), ("same-step", "next-step")))


def _assert_lava_equals_sim(g: Graph, x: np.ndarray, steps: int) -> dict[str, float]:
    ref = simulate(g, x, steps, record_states=True)
    lava = run_lava(g, x, steps, "fixed_pt")
    rates = {}
    for name in ref.spikes:
        np.testing.assert_array_equal(lava.spikes[name], ref.spikes[name], err_msg=name)
        np.testing.assert_array_equal(lava.final_state[name][0], ref.final_state[name][0][-1:])
        np.testing.assert_array_equal(lava.final_state[name][1], ref.final_state[name][1][-1:])
        assert lava.saturation[name] == ref.saturation[name] or x.shape[0] > 1
        rates[name] = float(ref.spikes[name].mean())
    np.testing.assert_array_equal(lava.logits, ref.logits)
    return rates


def test_lava_fixed_pt_equals_sim_for_every_rule_combination() -> None:
    """One chain of 8 LM-H layers under the lmh profile, each with another rule combination
    (reset x threshold test x timing) and its own initial states (every other layer's initial
    dendrite per neuron) and reset value."""
    rng = np.random.default_rng(6)
    layers = []
    for reset, test, timing in RULE_COMBOS:
        layers.append(
            {
                "theta": int(rng.integers(20_000, 60_000)),
                "mu_d": rng.integers(-2048, 2048, (1, 7)),
                "mu_s": rng.integers(-1000, 1000, (1, 1)),
                "lam_d": rng.integers(3500, 6144, (1, 1)),
                "lam_s": rng.integers(2048, 6144, (1, 7)),
                "bias": rng.integers(-2000, 8000, 7),
                "reset": reset,
                "reset_value": int(rng.integers(-5000, 5000)),
                "threshold_test": test,
                "reset_timing": timing,
                "v_d_init": rng.integers(-900, 900, 7) if len(layers) % 2 else int(rng.integers(-900, 900)),
                "v_s_init": None if reset == "subtract" else int(rng.integers(0, 9000)),
                "weight_exp": 4 if not layers else 9,
            }
        )
    g = integer_chain(rng, layers)
    x = rng.integers(0, 256, (2, 6))
    rates = _assert_lava_equals_sim(g, x, 6)
    assert all(0 < r < 1 for r in rates.values()), rates  # every layer spikes, not always


def test_lava_fixed_pt_equals_sim_under_loihi_lif_with_wrap_and_clip() -> None:
    """loihi-lif: toward-zero products, u wraps, v clips symmetric, a_in << 6, bias on the soma;
    the first layer's input is large enough that u wraps and v clips."""
    rng = np.random.default_rng(7)
    layers = [
        dict(
            theta=100_000 << 6,
            mu_d=rng.integers(0, 4096, (1, 7)),
            lam_s=rng.integers(1, 4097, (1, 7)),
            bias=rng.integers(-4096, 4096, 7) << 3,
            weight_exp=2,
            **QLIF_RULES,
        ),
        dict(
            theta=900 << 6,
            mu_d=np.full((1, 1), 2000),
            lam_s=np.full((1, 1), 3500),
            bias=np.zeros(7, np.int64),
            weight_exp=3,
            **QLIF_RULES,
        ),
    ]
    g = integer_chain(rng, layers)
    x = rng.integers(0, 256, (1, 6))
    ref = simulate(g, x, 6, record_states=True)
    assert ref.saturation["lmh0"] > 0  # wrap/clip events happen and are counted
    rates = _assert_lava_equals_sim(g, x, 6)
    assert rates["lmh1"] > 0


def test_lava_fixed_pt_equals_sim_under_cuba_with_current_decays_near_one() -> None:
    """cuba: lmh's arithmetic with synaptic current decays up to 4095/4096 (rockpool's
    LIFTorch, 0.95 at its defaults), a dendrite offset per neuron (v_d_init: rockpool's trained
    per-neuron bias) and drive, graded spikes and
    binary ones; large inputs saturate the slowly decaying current, counted alike."""
    rng = np.random.default_rng(11)
    layers = [
        dict(
            theta=30_000,
            mu_d=rng.integers(3000, 4096, (1, 7)),
            mu_s=np.zeros((1, 1), np.int64),
            lam_d=np.full((1, 1), 4096),
            lam_s=rng.integers(3000, 4096, (1, 7)),
            bias=rng.integers(-300, 300, 7),
            v_d_init=rng.integers(-3000, 3000, 7),
            v_s_init=0,
            max_spikes=9,
            profile="cuba",
            weight_exp=9,
        ),
        dict(
            theta=900_000,
            mu_d=np.full((1, 1), 3891),
            mu_s=np.zeros((1, 1), np.int64),
            lam_d=np.full((1, 1), 4096),
            lam_s=np.full((1, 1), 3686),
            bias=np.zeros(7, np.int64),
            v_s_init=0,
            profile="cuba",
            weight_exp=12,
        ),
    ]
    g = integer_chain(rng, layers)
    x = rng.integers(0, 256, (2, 6))
    ref = simulate(g, x, 6, record_states=True)
    assert ref.saturation["lmh0"] > 0 and int(ref.spikes["lmh0"].max()) > 1
    rates = _assert_lava_equals_sim(g, x, 6)
    assert rates["lmh1"] > 0


def test_lava_fixed_pt_equals_sim_under_cuba_with_membrane_decays_below_one_half() -> None:
    """cuba's lam_s below lmh's 2048 (a trained SpikingJelly tau < 2: 1 - 1/1.65 is 1611),
    down to its bottom code 0 (a membrane that keeps nothing), per neuron, under SpikingJelly's
    rules (>=, hard reset to 0, same-step) and a subtractive one that leaves negative membranes
    (half-up products of negative states); Lava's fixed_pt model equals sim/."""
    rng = np.random.default_rng(2)
    codes = np.array([[0, 1, 1611, 2047, 2048, 700, 1200]])
    layers = [
        dict(
            theta=20_000,
            mu_d=np.zeros((1, 1), np.int64),
            mu_s=np.zeros((1, 1), np.int64),
            lam_d=np.full((1, 1), 4096),
            lam_s=codes,
            bias=rng.integers(-500, 500, 7),
            reset="set",
            reset_value=0,
            v_s_init=0,
            profile="cuba",
            weight_exp=1,
        ),
        dict(
            theta=3_000,
            mu_d=np.zeros((1, 1), np.int64),
            mu_s=np.zeros((1, 1), np.int64),
            lam_d=np.full((1, 1), 4096),
            lam_s=codes[:, ::-1].copy(),
            bias=np.zeros(7, np.int64),
            v_s_init=0,
            profile="cuba",
            weight_exp=4,
        ),
    ]
    g = integer_chain(rng, layers)
    x = rng.integers(0, 256, (3, 6))
    ref = simulate(g, x, 6, record_states=True)
    assert ref.spikes["lmh0"][..., [0, 2, 3]].sum(axis=(0, 1)).min() > 0  # lam_s 0, 1611, 2047 fire
    assert ref.final_state["lmh1"][1].min() < 0  # v_s over the steps: negative membranes
    rates = _assert_lava_equals_sim(g, x, 6)
    assert rates["lmh1"] > 0


def _float_graph(rng: np.random.Generator, rules: list[dict]) -> Graph:
    g = Graph(meta={"timesteps": 5})
    prev = g.add("input", Input(shape=(5,), x_max=1.0))
    size = 5
    for i, r in enumerate(rules):
        d = g.add(f"dense{i}", Dense(weight=rng.normal(0, 0.8, (6, size))), (prev,))
        prev = g.add(
            f"lmh{i}",
            LMH(
                size=6,
                theta=1.0,
                mu_d=np.full((1, 1), 0.2),
                mu_s=np.full((1, 1), -0.1),
                lam_d=np.full((1, 1), 1.1),
                lam_s=np.full((1, 1), 0.9),
                bias=rng.normal(0.1, 0.2, 6),
                **r,
            ),
            (d,),
        )
        size = 6
    d = g.add(f"dense{len(rules)}", Dense(weight=rng.normal(0, 1, (3, size))), (prev,))
    g.add("readout", Readout(bias=np.zeros(3)), (d,))
    return g


def test_lava_floating_pt_equals_the_float_reference_for_every_rule_combination() -> None:
    rng = np.random.default_rng(11)
    rules = [
        {"reset": r, "threshold_test": t, "reset_timing": m, "reset_value": -0.2, "v_s_init": 0.3}
        for r, t, m in RULE_COMBOS
    ]
    rules[0]["v_d_init"] = np.linspace(-0.5, 0.5, 6)  # an initial dendrite per neuron
    g = _float_graph(rng, rules)
    x = rng.uniform(0, 1, (3, 5))
    ref = simulate_float(g, x, 5)
    lava = run_lava(g, x * 255.0, 5, "floating_pt")
    for name in ref.spikes:
        np.testing.assert_array_equal(lava.spikes[name], ref.spikes[name], err_msg=name)
        assert 0 < ref.spikes[name].mean() < 1, name
    np.testing.assert_allclose(lava.logits / 5, ref.logits, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- refusals
def _lif_float(**overrides) -> Graph:
    rng = np.random.default_rng(0)
    rules = {"reset": "set", "reset_value": 0.0, "threshold_test": ">", "v_s_init": 0.0}
    node = {
        "mu_d": np.zeros((1, 1)),
        "mu_s": np.zeros((1, 1)),
        "lam_d": np.ones((1, 1)),
        "lam_s": np.full((1, 1), 0.9),
        "bias": np.zeros(6),
    }
    node.update(rules)
    node.update(overrides)
    g = Graph(meta={"timesteps": 4})
    g.add("input", Input(shape=(5,)))
    g.add("dense0", Dense(weight=rng.normal(0, 1, (6, 5))), ("input",))
    g.add("lmh0", LMH(size=6, theta=1.0, **node), ("dense0",))
    g.add("dense1", Dense(weight=rng.normal(0, 1, (3, 6))), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(3)), ("dense1",))
    return g


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"reset": "subtract"}, r"lmh0: numeric profile loihi-lif cannot express reset 'subtract'"),
        ({"threshold_test": ">="}, r"lmh0: .* cannot express threshold test '>='"),
        ({"v_s_init": 0.5}, r"lmh0: .* cannot express v_s_init"),
        ({"reset_value": 0.25}, r"lmh0: .* cannot express reset value"),
        ({"mu_s": np.full((1, 1), 0.1)}, r"lmh0: .* cannot express factor mu_s=0\.1"),
        ({"lam_d": np.full((1, 1), 1.2)}, r"lmh0: .* cannot express factor lam_d=1\.2"),
        ({"mu_d": np.full((1, 1), 0.3), "bias": np.full(6, 0.1)}, r"lmh0: .*bias with mu_d != 0"),
    ],
)
def test_loihi_lif_refuses_what_lava_lif_cannot_express(overrides, match: str) -> None:
    with pytest.raises(IRError, match=match):
        quantize_graph(_lif_float(**overrides), "loihi-lif")


def test_a_membrane_decay_below_one_half_lmh_refuses_naming_cuba_which_holds_it() -> None:
    """lam_s = 1 - 1/tau = 0.3934: a SpikingJelly ParametricLIFNode(init_tau=2.0) whose tau
    training moved to 1.65 (found on a trained conv net). An explicit --profile lmh refuses it
    in one line naming cuba; cuba holds it as the code round(4096 lam_s)."""
    match = (
        r"^lmh0: numeric profile lmh cannot express factor lam_s=0\.3934 \(its range is "
        r"\[2048, 6143\] / 4096\); --profile cuba holds membrane decays down to 0 \(SpikingJelly "
        r"tau < 2, snnTorch beta < 0\.5\), and a compile without --profile picks it$"
    )
    with pytest.raises(IRError, match=match):
        quantize_graph(_lif_float(lam_s=np.full((1, 1), 0.3934)), "lmh")
    q, report = quantize_graph(_lif_float(lam_s=np.full((1, 1), 0.3934)), "cuba")
    assert q.node("lmh0").lam_s.tolist() == [[1611]] and report["profile"]["name"] == "cuba"


def test_profile_is_stored_and_reported_and_unknown_names_refused() -> None:
    q, report = quantize_graph(_lif_float(bias=np.full(6, 0.05)), "loihi-lif")
    node = q.node("lmh0")
    assert node.profile == "loihi-lif" and q.meta["profile"] == "loihi-lif"
    assert report["profile"]["name"] == "loihi-lif" and report["profile"]["rounding"] == "toward-zero"
    assert node.theta % 64 == 0 and node.theta >> 6 < 2**17  # vth << 6
    assert node.lam_d.tolist() == [[4096]] and node.mu_s.tolist() == [[0]]
    exps = [
        next(e for e in range(8) if (b >> e) << e == b and -4096 <= b >> e < 4096) for b in node.bias.tolist()
    ]
    assert max(exps) <= 7  # every bias is a 13-bit mantissa << a 3-bit exponent
    with pytest.raises(
        ValueError,
        match=r"unknown numeric profile 'loihi'; choose one of lmh, "
        r"loihi-lif",
    ):
        get_profile("loihi")
    assert set(PROFILES) == {"lmh", "loihi-lif", "cuba"}


def test_lmh_profile_keeps_lambda_as_full_multiplier_identical_to_offset_form() -> None:
    """R((4096 + l) v) == v + R(l v) under half-up: the full-multiplier form is today's."""
    rng = np.random.default_rng(3)
    lam = rng.integers(-2048, 2048, 2000)
    v = rng.integers(fx.STATE_MIN, fx.STATE_MAX, 2000)
    np.testing.assert_array_equal(fx.product(lam + 4096, v, "half-up"), v + fx.mul_shift(lam, v))


def test_sim_on_torch_equals_numpy_for_every_profile_and_rule() -> None:
    """One code path for numpy and torch: the same integers under both profiles and all rules."""
    rng = np.random.default_rng(6)
    layers = [
        dict(
            theta=int(rng.integers(20_000, 60_000)),
            mu_d=rng.integers(-2048, 2048, (1, 7)),
            mu_s=rng.integers(-1000, 1000, (1, 1)),
            lam_d=rng.integers(3500, 6144, (1, 1)),
            lam_s=rng.integers(2048, 6144, (1, 7)),
            bias=rng.integers(-2000, 8000, 7),
            reset=r,
            reset_value=-321,
            threshold_test=t,
            reset_timing=m,
            weight_exp=4 if i == 0 else 9,
        )
        for i, (r, t, m) in enumerate(RULE_COMBOS)
    ]
    layers.append(
        dict(
            theta=900 << 6,
            mu_d=np.full((1, 1), 2000),
            lam_s=np.full((1, 1), 3500),
            bias=rng.integers(-4096, 4096, 7) << 6,
            weight_exp=3,
            **QLIF_RULES,
        )
    )
    g = integer_chain(rng, layers)
    x = rng.integers(0, 256, (4, 6))
    ref = simulate(g, x, 6, record_states=True)
    dev = simulate(g, x, 6, record_states=True, device="cpu")
    for name in ref.spikes:
        np.testing.assert_array_equal(dev.spikes[name], ref.spikes[name], err_msg=name)
        for a, b in zip(dev.state_trace[name], ref.state_trace[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
        assert dev.saturation[name] == ref.saturation[name]
    np.testing.assert_array_equal(dev.logits, ref.logits)
    assert ref.spikes["lmh8"].any()


def test_training_neuron_with_lava_lif_rules_equals_the_float_reference() -> None:
    """`--neuron lif` (set to 0, '>', start at 0): the PyTorch model, exported with its rules,
    gives the same spikes as the one float reference (float64, so no rounding differs)."""
    import torch

    from lmh_deploy.backends.float.torch_model import run_float
    from lmh_deploy.frontends.pytorch import export_model
    from lmh_deploy.models.architectures import mlp

    torch.manual_seed(2)
    model = mlp((9,), 4, neuron="lif", hidden=(11, 7), timesteps=6, lif_decay=0.8).double()
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(2.5)
    graph = export_model(model.eval(), input_shape=(9,), timesteps=6)
    assert graph.node("lmh0").rules() == NIR_RULES
    x = np.random.default_rng(3).uniform(0, 1, (10, 9))
    ref = simulate_float(graph, x, 6)
    torch_rec = run_float(model, x, 6)
    for name in ref.spikes:
        np.testing.assert_array_equal(torch_rec.spikes[name], ref.spikes[name], err_msg=name)
        assert 0 < ref.spikes[name].mean() < 1
    np.testing.assert_allclose(torch_rec.logits, ref.logits, rtol=1e-9, atol=1e-9)


def test_both_pytorch_frontends_keep_the_lif_rules() -> None:
    """`--neuron lif` models keep Lava LIF's rules through the checkpoint exporter and the
    torch.fx frontend alike (same graph, so --profile loihi-lif accepts both)."""
    import torch

    from lmh_deploy.frontends.pytorch import export_model
    from lmh_deploy.frontends.torch_fx import module_to_graph
    from lmh_deploy.models.architectures import mlp

    from lmh_deploy.models.neuron import lif_neuron

    class Net(torch.nn.Module):  # a user's module, written the plain PyTorch way
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.n1, self.fc2 = torch.nn.Linear(5, 6), lif_neuron(), torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.fc2(self.n1(self.fc1(x)))

    torch.manual_seed(1)
    model = mlp((5,), 3, neuron="lif", hidden=(6,), timesteps=3).eval()
    a = export_model(model, input_shape=(5,), timesteps=3)
    b = module_to_graph(Net(), input_shape=(5,), timesteps=3)
    (la,), (lb,) = a.of_kind("lmh"), b.of_kind("lmh")
    assert a.node(la).rules() == b.node(lb).rules() == NIR_RULES
    q, _ = quantize_graph(b, "loihi-lif")
    assert q.node(lb).profile == "loihi-lif"
