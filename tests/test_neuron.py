"""Tests of the float LM-H neuron (models.neuron) against Eq. 4 of the paper, by hand."""

from __future__ import annotations

import pytest
import torch

from lmh_deploy.models.neuron import FACTOR_NAMES, LMHNeuron, lif_neuron, spike_fn

FACTORS = dict(mu_d=0.25, mu_s=-0.125, lam_d=1.25, lam_s=0.75)


def _neuron(**kwargs) -> LMHNeuron:
    return LMHNeuron(**kwargs).double()


# --------------------------------------------------------------------------- Eq. 4 by hand


def test_three_steps_by_hand() -> None:
    """theta = 2, I = 1.6, 0.6, 1.8; vD[0] = 0, vS[0] = theta/2 = 1.

    t=1: vD = 0.25*0 - 0.125*1 + 1.6 = 1.475
         mS = 0.75*1 + 1.25*1.475 = 2.59375 >= 2 -> s = 1, vS = 0.59375
    t=2: vD = 0.25*1.475 - 0.125*0.59375 + 0.6 = 0.89453125
         mS = 0.75*0.59375 + 1.25*0.89453125 = 1.5634765625 < 2 -> s = 0, vS = 1.5634765625
    t=3: vD = 0.25*0.89453125 - 0.125*1.5634765625 + 1.8 = 1.8281982421875
         mS = 0.75*1.5634765625 + 1.25*1.8281982421875 = 3.457855224609375 -> s = 1,
         vS = 1.457855224609375
    """
    n = _neuron(theta=2.0)
    n.set_factors(**FACTORS)
    table = {k: v.detach() for k, v in n.factor_table().items()}
    for name, value in FACTORS.items():
        assert float(table[name].detach()) == pytest.approx(value, abs=1e-12)
    current = torch.tensor([1.6, 0.6, 1.8], dtype=torch.float64).reshape(3, 1, 1)
    out = n(current)
    assert out.flatten().tolist() == [2.0, 0.0, 2.0]  # output is s * theta

    # The same run one step at a time (stateful), checking both compartments.
    n.stateful = True
    n.reset_state()
    expected = [(1.475, 0.59375), (0.89453125, 1.5634765625), (1.8281982421875, 1.457855224609375)]
    for t, (v_d, v_s) in enumerate(expected):
        n(current[t : t + 1])
        assert float(n.v_d.detach()) == pytest.approx(v_d, abs=1e-12), f"vD at t={t + 1}"
        assert float(n.v_s.detach()) == pytest.approx(v_s, abs=1e-12), f"vS at t={t + 1}"
    assert n.step_offset == 3


def test_initial_state_is_zero_dendrite_half_threshold_soma() -> None:
    n = _neuron(theta=3.0)
    n.set_factors(mu_d=0.3, mu_s=0.2, lam_d=1.1, lam_s=0.9)
    n.stateful = True
    n(torch.zeros(1, 1, 1, dtype=torch.float64))
    # one step with zero input from vD = 0, vS = 1.5:
    # vD = 0.2*1.5 = 0.3; mS = 0.9*1.5 + 1.1*0.3 = 1.68
    assert float(n.v_d.detach()) == pytest.approx(0.3, abs=1e-12)
    assert float(n.v_s.detach()) == pytest.approx(1.68, abs=1e-12)


# --------------------------------------------------------------------------- LIF special case


def test_lif_special_case_equals_hand_written_lif() -> None:
    # Lava's LIF rules: start at 0, spike on v > theta, v set to 0.
    torch.manual_seed(0)
    theta, decay = 1.3, 0.7
    neuron = lif_neuron(theta=theta, decay=decay)
    table = neuron.factor_table()
    assert table["mu_d"].eq(0).all() and table["mu_s"].eq(0).all()
    assert table["lam_d"].eq(1).all() and table["lam_s"].eq(decay).all()
    current = torch.randn(20, 4, 5) * 0.8 + 0.3
    out = neuron(current)
    v = torch.zeros(4, 5)
    expected = []
    for t in range(current.shape[0]):
        v = decay * v + current[t]
        s = (v > theta).float()
        v = torch.where(s.bool(), torch.zeros_like(v), v)
        expected.append(s * theta)
    expected = torch.stack(expected)
    assert torch.equal(out, expected)
    assert 0 < (out > 0).float().mean() < 1  # the comparison is not vacuous
    with pytest.raises(ValueError):
        neuron.set_factors(mu_d=0.1)


# --------------------------------------------------------------------------- factors


def test_progressive_factor_ranges() -> None:
    n = LMHNeuron(theta=1.0, factors="progressive")
    table = {k: v.detach() for k, v in n.factor_table().items()}
    assert float(table["mu_d"]) == 0.0 and float(table["mu_s"]) == 0.0  # LIF/IF start
    assert float(table["lam_d"]) == 1.0 and float(table["lam_s"]) == 1.0
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name in FACTOR_NAMES:
            p = getattr(n, f"x_{name}")
            p.copy_((torch.randn(p.shape, generator=gen) * 4).clamp(-12, 12))
    for _ in range(50):
        with torch.no_grad():
            for name in FACTOR_NAMES:
                getattr(n, f"x_{name}").copy_((torch.randn(1, 1, generator=gen) * 4).clamp(-12, 12))
        table = {k: v.detach() for k, v in n.factor_table().items()}
        for name in ("mu_d", "mu_s"):
            assert -0.5 < float(table[name]) < 0.5
        for name in ("lam_d", "lam_s"):
            assert 0.5 < float(table[name]) < 1.5


def test_set_factors_round_trip_and_errors() -> None:
    n = LMHNeuron(theta=1.0)
    values = dict(mu_d=-0.3, mu_s=0.2, lam_d=1.3, lam_s=0.7)
    n.set_factors(**values)
    table = {k: v.detach() for k, v in n.factor_table().items()}
    for name, value in values.items():
        assert float(table[name]) == pytest.approx(value, abs=1e-6)
    n.set_factors(mu_d=-0.45, lam_s=1.4)  # partial update leaves the rest
    table = {k: v.detach() for k, v in n.factor_table().items()}
    assert float(table["mu_d"]) == pytest.approx(-0.45, abs=1e-6)
    assert float(table["lam_s"]) == pytest.approx(1.4, abs=1e-6)
    assert float(table["mu_s"]) == pytest.approx(0.2, abs=1e-6)
    for bad in (dict(mu_d=0.5), dict(mu_s=-0.5), dict(lam_d=1.5), dict(lam_s=0.5)):
        with pytest.raises(ValueError):
            n.set_factors(**bad)


def _reference(
    current: torch.Tensor,
    table: dict[str, torch.Tensor],
    theta: float,
    detach_reset: bool = True,
    gamma: float = 1.0,
) -> torch.Tensor:
    """Eq. 4 written out, step t using factor row min(t, K-1) (per-layer factors)."""
    v_d = torch.zeros_like(current[0])
    v_s = torch.full_like(current[0], theta / 2)
    rows = table["mu_d"].shape[0]
    out = []
    for t in range(current.shape[0]):
        k = min(t, rows - 1)
        mu_d, mu_s, lam_d, lam_s = (table[n][k, 0] for n in FACTOR_NAMES)
        v_d = mu_d * v_d + mu_s * v_s + current[t]
        m_s = lam_s * v_s + lam_d * v_d
        s = spike_fn(m_s - theta, gamma)
        reset = s * theta
        v_s = m_s - (reset.detach() if detach_reset else reset)
        out.append(s * theta)
    return torch.stack(out)


def test_radical_factors_differ_per_step() -> None:
    timesteps = 4
    n = _neuron(theta=1.0, factors="radical", timesteps=timesteps)
    rows = {
        "mu_d": [-2.0, 1.0, 2.5, -0.5],
        "mu_s": [1.5, -2.0, 0.0, 2.0],
        "lam_d": [0.0, 2.0, -1.5, 1.0],
        "lam_s": [-1.0, 1.5, 0.5, -2.5],
    }
    with torch.no_grad():
        for name, xs in rows.items():
            getattr(n, f"x_{name}").copy_(torch.tensor(xs, dtype=torch.float64).reshape(-1, 1))
    table = n.factor_table()
    for name in FACTOR_NAMES:
        assert table[name].shape == (timesteps, 1)
        assert len(set(table[name].flatten().tolist())) == timesteps  # every row its own value

    torch.manual_seed(1)
    current = torch.rand(6, 8, 3, dtype=torch.float64) * 1.2  # 6 > 4 steps: the last row is reused
    out = n(current)
    ref = _reference(current, {k: v.detach() for k, v in table.items()}, 1.0)
    assert torch.equal(out, ref)

    # Change only row 2: steps 0 and 1 are untouched, the run differs from step 2 on.
    with torch.no_grad():
        n.x_lam_s[2] = -2.5
    out2 = n(current)
    assert torch.equal(out2[:2], out[:2])
    assert not torch.equal(out2[2:], out[2:])

    # All rows equal to row 0 (a progressive neuron) gives another output.
    flat = _neuron(theta=1.0, factors="radical", timesteps=timesteps)
    with torch.no_grad():
        for name, xs in rows.items():
            getattr(flat, f"x_{name}").fill_(xs[0])
    assert not torch.equal(flat(current), out)


@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (1, 3, 3)])  # (T, B, C, H) and (T, B=C, C)
def test_per_channel_factors_broadcast_over_channels(shape: tuple[int, ...]) -> None:
    n = _neuron(theta=1.0, per_channel=3)
    with torch.no_grad():
        n.x_lam_s.copy_(torch.tensor([[-3.0, 0.0, 3.0]], dtype=torch.float64))
    n.stateful = True
    n(torch.full(shape, 0.2, dtype=torch.float64))
    # one step from vD = 0, vS = 0.5: vS = lam_s[c] * 0.5 + 0.2, varying along dimension C only
    lam_s = torch.sigmoid(torch.tensor([-3.0, 0.0, 3.0], dtype=torch.float64)) + 0.5
    expected = (lam_s * 0.5 + 0.2).reshape((1, 3) + (1,) * (len(shape) - 3)).expand(shape[1:])
    assert n.v_s.shape == shape[1:]
    assert torch.allclose(n.v_s, expected, atol=1e-12)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("gamma", [0.3, 1.0, 2.5])
def test_triangle_surrogate_gradient(gamma: float) -> None:
    x = torch.linspace(-3, 3, 241, dtype=torch.float64, requires_grad=True)
    y = spike_fn(x, gamma)
    assert torch.equal(y, (x >= 0).double())
    upstream = torch.linspace(0.5, 2.0, 241, dtype=torch.float64)
    (y * upstream).sum().backward()
    expected = upstream * torch.clamp(gamma - x.detach().abs(), min=0) / gamma**2
    assert torch.allclose(x.grad, expected, atol=1e-15)
    assert float(x.grad[120]) == pytest.approx(upstream[120].item() / gamma)  # peak 1/gamma at 0


def test_reset_is_detached_in_backward() -> None:
    torch.manual_seed(5)
    n = _neuron(theta=1.0, gamma=1.0)
    n.set_factors(mu_d=0.2, mu_s=-0.15, lam_d=1.1, lam_s=0.8)
    table = {k: v.detach() for k, v in n.factor_table().items()}
    current = (torch.rand(8, 3, 5, dtype=torch.float64) * 1.5).requires_grad_(True)
    weights = torch.randn(8, 3, 5, dtype=torch.float64)

    def grad_of(fn) -> torch.Tensor:
        current.grad = None
        (fn(current) * weights).sum().backward()
        return current.grad.clone()

    g_model = grad_of(n)
    g_detached = grad_of(lambda c: _reference(c, table, 1.0, detach_reset=True))
    g_attached = grad_of(lambda c: _reference(c, table, 1.0, detach_reset=False))
    assert g_model.abs().sum() > 0
    assert torch.allclose(g_model, g_detached, atol=1e-12)
    assert not torch.allclose(g_model, g_attached, atol=1e-6)
