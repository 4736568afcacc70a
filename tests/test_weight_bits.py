"""``compile --weight-bits 16``: each weight split across two 8-bit synapse paths into the same
neuron, the fine one 8 exponent steps lower (docs/fixed-point.md §5, "Split weights").

A narrow LIF ResNet-20 whose 8-bit rounding compounds over 19 layers agreed with its source
on 0.70 of 50 digits, 0.98 split (docs/interop.md); here: the split's error bound, Lava == sim
on a residual conv net with split paths (graded input, negative fine exponents, Lava's Conv and
Sparse), and a deep narrow chain whose last layers keep their spikes only when split.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lmh_deploy
from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.errors import UserError
from lmh_deploy.ir import LMH, Conv2d, Dense, Graph, Input, IRError, Readout
from lmh_deploy.passes.compose import presynaptic_unit
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.passes.weights import FINE_WEIGHT_SHIFT, fine_path_name
from lmh_deploy.pipeline.inputs import quantize
from lmh_deploy.semantics import integer as fx
from lmh_deploy.sim.simulator import simulate

T = 4


def _lmh(rng: np.random.Generator, n: int, theta: float = 1.0) -> LMH:
    def f(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, (1, n))

    return LMH(
        size=n, theta=theta, mu_d=f(0.0, 0.3), mu_s=f(0.0, 0.2), lam_d=f(0.9, 1.1), lam_s=f(0.6, 0.9),
        bias=rng.normal(0, 0.1, n),
    )  # fmt: skip


def _residual_conv_graph(seed: int = 0) -> Graph:
    """input (1, 6, 6) -> conv -> a -> conv -> b; (conv b, 1x1 conv a) -> c; dense -> readout."""
    rng = np.random.default_rng(seed)
    g = Graph(meta={"timesteps": T})
    g.add("input", Input(shape=(1, 6, 6), x_max=1.0))

    def conv(name: str, src: str, c_in: int, k: int) -> str:
        w = rng.normal(0, 1.2 / k, (4, c_in, k, k))
        return g.add(name, Conv2d(weight=w, input_shape=(c_in, 6, 6), padding=(k // 2, k // 2)), (src,))

    g.add("a", _lmh(rng, 144), (conv("in_a", "input", 1, 3),))
    g.add("b", _lmh(rng, 144), (conv("a_b", "a", 4, 3),))
    g.add("c", _lmh(rng, 144), (conv("b_c", "b", 4, 3), conv("a_c", "a", 4, 1)))
    g.add("c_out", Dense(weight=rng.normal(0, 0.3, (5, 144))), ("c",))
    g.add("readout", Readout(bias=rng.normal(0, 0.1, 5)), ("c_out",))
    return g


def _inputs(g: Graph, batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (batch, *g.node("input").shape))


def test_split_weights_hold_about_15_bits_and_keep_the_state_scale() -> None:
    g = _residual_conv_graph()
    q8, r8 = quantize_graph(g)
    q16, r16 = quantize_graph(g, weight_bits=16)
    assert r8["weight_bits"] == 8 and r16["weight_bits"] == 16
    rows8 = {r["name"]: r for r in r8["layers"] if r["kind"] == "dense"}
    rows16 = {r["name"]: r for r in r16["layers"] if r["kind"] == "dense"}
    assert set(rows8) == set(rows16) == {"in_a", "a_b", "b_c", "a_c", "c_out"}
    for name, row in rows16.items():
        fine = q16.node(fine_path_name(name))
        assert row["fine_path"] == fine_path_name(name) and "fine_path" not in rows8[name]
        assert fine.weight_exp == row["weight_exp"] - FINE_WEIGHT_SHIFT == row["fine_weight_exp"]
        assert np.abs(fine.weight_mant).max() <= fx.WEIGHT_MANT_MAX
        assert q16.inputs_of(fine_path_name(name)) == q16.inputs_of(name)
        # in mantissa steps of the coarse half: 8 bits, up to 1/2; split, up to 1/2**8 (the fine
        # half rounds to 1/2 of its step, or 1 where a remainder of 128 clips to 127)
        unit = presynaptic_unit(g.node(q16.inputs_of(name)[0]))
        steps8 = rows8[name]["max_weight_error"] * unit * rows8[name]["weight_scale"]
        steps16 = row["max_weight_error"] * unit * row["weight_scale"]
        assert 0.3 < steps8 <= 0.5 + 1e-6
        assert steps16 <= 2.0**-FINE_WEIGHT_SHIFT + 1e-9
    assert rows16["in_a"]["fine_weight_exp"] < 0  # the graded input's fine sum is floor-shifted
    # the coarse halves are the 8-bit weights (the graded input layer's scale shrank <= 1 % to
    # leave the fine half room in the headroom), so every state scale stays within 1 %
    for name in ("a", "b", "c"):
        s8, s16 = q8.node(name).state_scale, q16.node(name).state_scale
        assert 0.99 * s8 <= s16 <= s8, name
    assert set(q16.inputs_of("c")) == {"b_c", "a_c", "b_c_fine", "a_c_fine"}


@pytest.mark.parametrize("route", ["never", "always"])
def test_split_weights_lava_equals_sim(route: str) -> None:
    """Every spike, final state and logit of Lava fixed_pt equals sim/'s, with the split paths
    on Lava's Sparse (``never``) and on its Conv (``always``)."""
    from lmh_deploy.backends.lava.plan import plan_lowering
    from lmh_deploy.backends.lava.run import run_lava

    g = _residual_conv_graph()
    q, _ = quantize_graph(g, weight_bits=16)
    x = quantize(q, _inputs(g, 3, seed=1))
    want = simulate(q, x, T)
    got = run_lava(q, x, T, "fixed_pt", plan=plan_lowering(q, route))
    for name in want.spikes:
        assert 0 < want.spikes[name].mean() < 1, name  # every layer fires, not always
        assert np.array_equal(got.spikes[name], want.spikes[name]), name
        assert np.array_equal(got.final_state[name][0][0], want.final_state[name][0][-1]), name
        assert np.array_equal(got.final_state[name][1][0], want.final_state[name][1][-1]), name
    assert np.array_equal(got.readout_trace, want.readout_trace)
    assert np.array_equal(got.logits, want.logits)


def _deep_chain(depth: int, width: int, seed: int) -> Graph:
    """A narrow dense chain of ``depth`` LM-H layers (the ResNet-20 check's failing shape)."""
    rng = np.random.default_rng(seed)
    g = Graph(meta={"timesteps": 8})
    prev = g.add("input", Input(shape=(width,), x_max=1.0))
    for i in range(depth):
        d = g.add(f"d{i}", Dense(weight=rng.normal(0, 2.2 / np.sqrt(width), (width, width))), (prev,))
        prev = g.add(f"l{i}", _lmh(rng, width, theta=0.5), (d,))
    g.add("out", Dense(weight=rng.normal(0, 0.3, (4, width))), (prev,))
    g.add("readout", Readout(bias=np.zeros(4)), ("out",))
    return g


def test_deep_narrow_chain_keeps_its_spikes_only_split() -> None:
    """Float vs fixed spike agreement of the last layer of a 14-layer chain: the 8-bit
    rounding compounds over depth; split, the last layer stays within 1 % of the float model."""
    g = _deep_chain(depth=14, width=16, seed=4)
    x = _inputs(g, 40, seed=5)
    ref = simulate_float(g, x, 8).spikes["l13"]
    assert 0.1 < ref.mean() < 0.9
    agree = {}
    for bits in (8, 16):
        q, _ = quantize_graph(g, weight_bits=bits)
        agree[bits] = float((simulate(q, quantize(q, x), 8).spikes["l13"] == ref).mean())
    assert agree[16] >= 0.99
    assert agree[8] < agree[16] - 0.02


def test_weight_bits_refusals_are_one_line() -> None:
    g = _residual_conv_graph()
    with pytest.raises(IRError, match=r"^profile loihi-lif fixes the weight exponent at 0; --weight-bits 16"):
        quantize_graph(g, "loihi-lif", weight_bits=16)
    with pytest.raises(IRError, match=r"^weight bits 12: use 8 or 16$"):
        quantize_graph(g, weight_bits=12)
    from lmh_deploy.options import WEIGHT_BITS

    with pytest.raises(UserError, match=r"^--weight-bits: must be auto, 8 or 16, got 12$"):
        WEIGHT_BITS.check(12)
    with pytest.raises(UserError, match=r"^--weight-bits: must be auto, 8 or 16, got 'eight'$"):
        WEIGHT_BITS.check("eight")
    assert [WEIGHT_BITS.check(v) for v in ("auto", " AUTO", "8", "16", 16)] == ["auto", "auto", 8, 16, 16]


def test_api_compile_with_split_weights_verifies_on_lava(digits) -> None:
    """``lmh_deploy.compile(..., weight_bits=16)`` of an snnTorch conv net: the report and
    manifest say 16, every path but the max-pooled one is split, and verify's Lava run
    equals sim/ with the source agreeing."""
    import snntorch as snn
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.MaxPool2d(2), snn.Leaky(beta=0.8, init_hidden=True),
        torch.nn.Conv2d(6, 8, 3, padding=1), snn.Leaky(beta=0.8, init_hidden=True),
        torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10),
    )  # fmt: skip
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(3.0)
    x = digits[2][:20]
    dep = lmh_deploy.compile(
        net, example_input=x[:1], timesteps=4, calibration=digits[0][:32], weight_bits=16
    )
    report = dep.artifact.report
    assert report["weight_bits"] == dep.artifact.manifest["weight_bits"] == 16
    assert report["bias_correction"]["what"].startswith("mean rounding current of the split weights")
    split = {r["name"]: r.get("fine_path") for r in report["layers"] if r["kind"] == "dense"}
    assert len(split) == 3 and sum(fine is None for fine in split.values()) == 1  # the pooled conv
    v = dep.verify(x, lava_samples=1)
    assert v.lava_equals_sim and v.agreement >= 0.95


def test_verify_points_low_agreement_at_weight_bits_16(digits, monkeypatch) -> None:
    """verify's note: only for an 8-bit artifact under the agreement bar, never for a split one
    or a loihi-lif one (which cannot split); the CLI prints it after the Lava line."""
    import snntorch as snn
    import torch

    import lmh_deploy.cli as cli
    from lmh_deploy.pipeline.verify import LOW_AGREEMENT, weight_bits_advice

    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16),
        snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero"), torch.nn.Linear(16, 10),
    )  # fmt: skip
    deps = {
        (bits, profile): lmh_deploy.compile(
            net,
            example_input=digits[2][:1],
            timesteps=4,
            calibration=digits[0][:32],
            weight_bits=bits,
            profile=profile,
        )
        for bits, profile in ((8, None), (16, None), ("auto", "loihi-lif"))
    }
    assert deps["auto", "loihi-lif"].artifact.report["weight_bits_note"] == (
        "--weight-bits auto: 8 (profile loihi-lif has one weight exponent, no second one for a split)"
    )
    deps[8, "loihi-lif"] = deps.pop(("auto", "loihi-lif"))
    low = LOW_AGREEMENT - 0.01
    advice = weight_bits_advice(deps[8, None].artifact, low)
    assert advice is not None and "--weight-bits 16" in advice and f"{low:.1%}" in advice
    assert weight_bits_advice(deps[8, None].artifact, LOW_AGREEMENT) is None
    assert weight_bits_advice(deps[16, None].artifact, low) is None
    assert weight_bits_advice(deps[8, "loihi-lif"].artifact, 0.5) is None
    tried = dataclasses.replace(  # auto measured the split, found it no better, kept 8 bits
        deps[8, None].artifact,
        report={**deps[8, None].artifact.report, "weight_bits_choice": {"chosen": 8, "agreement_8": 0.9}},
    )
    assert weight_bits_advice(tried, low) is None
    result = deps[8, None].verify(digits[2][:8], lava_samples=0).result
    ff = result["float_vs_fixed"]
    assert ff["disagreements"] == round(8 * (1 - ff["prediction_agreement"]))
    assert 0 <= ff["disagreements_tied_in_source"] <= ff["disagreements"]
    assert ("advice" in result) == (result["float_vs_fixed"]["prediction_agreement"] < LOW_AGREEMENT)
    printed: list[str] = []
    monkeypatch.setattr(cli.out, "print", printed.append)
    cli._print_verify({**result, "advice": advice})
    assert printed[-1] == f"note: {advice}"


def test_verify_counts_the_disagreements_tied_in_the_source(monkeypatch) -> None:
    """verify reports how many disagreeing samples tie for the top in the source's own output
    (equal spike counts: argmax takes the lowest class), as information; agreement is still
    the argmax's."""
    import lmh_deploy.cli as cli
    from lmh_deploy.pipeline.verify import tied_at_top

    counts = np.array([[3, 3, 1], [0, 2, 1], [0, 0, 0], [1.5, 0.5, 1.5]])
    assert tied_at_top(counts).tolist() == [True, False, True, True]
    ff = {"accuracy_float": None, "accuracy_fixed": None, "spike_agreement": 0.99}
    ff |= {"prediction_agreement": 0.94, "disagreements": 3, "disagreements_tied_in_source": 2}
    result = {"float_vs_fixed": ff, "lava_vs_sim": {"samples": 0}}
    result["ran"] = {"float_vs_fixed": "source and sim/ on all 50 samples", "lava_vs_sim": "not run"}
    printed: list[str] = []
    monkeypatch.setattr(cli.out, "print", printed.append)
    cli._print_verify(result)
    assert printed[1].endswith(
        "prediction agreement 0.9400 (2 of the 3 that differ tie for the top in the source itself)"
    )


def _auto_artifact(depth: int, tmp_path, name: str, **options):
    """The depth-``depth`` chain built by compile's ``build_artifact`` on 64 calibration
    inputs, saved to ``tmp_path / name``."""
    from lmh_deploy.pipeline.compile import build_artifact, save_artifact

    g = _deep_chain(depth=depth, width=16, seed=4)
    g.meta["source"] = {"format": "test"}
    art = build_artifact(
        g, target=options.pop("target", "lava-sim"), calibration_x=_inputs(g, 64, seed=5), **options
    )
    save_artifact(art, tmp_path / name, {})
    return art


def test_weight_bits_auto_splits_where_8_bits_fall_short(tmp_path) -> None:
    """``--weight-bits auto`` (the default): a 6-layer narrow chain whose 8-bit predictions
    agree with the float model's on 57 of 64 calibration inputs is split (62 of 64); the
    report records why, the manifest says 16, and compile's printed line is not saved."""
    import json

    from lmh_deploy.options import WEIGHT_BITS_NOTE
    from lmh_deploy.pipeline.weight_choice import AUTO_AGREEMENT

    art = _auto_artifact(6, tmp_path, "auto", target="loihi2")
    choice = art.report["weight_bits_choice"]
    assert choice["agreement_8"] < AUTO_AGREEMENT and choice["agreement_16"] > choice["agreement_8"]
    assert (choice["chosen"], choice["calibration_samples"]) == (16, 64)
    assert art.report["weight_bits"] == art.manifest["weight_bits"] == 16
    assert "l5_fine" not in art.quant_graph.nx_graph and "d5_fine" in art.quant_graph.nx_graph
    assert art.report[WEIGHT_BITS_NOTE].startswith("--weight-bits auto: 16 (8-bit weights agree")
    cores = choice["loihi2_cores"]
    assert cores["16"] == art.resources["cores"] and cores["8"] <= cores["16"]
    saved = json.loads((tmp_path / "auto" / "compile_report.json").read_text())
    assert WEIGHT_BITS_NOTE not in saved and saved["weight_bits_choice"] == choice
    assert np.array_equal(
        np.concatenate([d.weight_mant.ravel() for n, d in art.quant_graph.items() if n == "d0"]),
        _auto_artifact(6, tmp_path, "16", weight_bits=16).quant_graph.node("d0").weight_mant.ravel(),
    )


def test_weight_bits_auto_keeps_a_net_fine_at_8_bits_byte_identical(tmp_path) -> None:
    """A 3-layer chain agrees at 8 bits on 63 of 64: ``auto`` (the default, no argument) writes
    the very files ``weight_bits=8`` writes, and says why it kept 8; a profile with one weight
    exponent keeps 8 without measuring (test_verify_points_low_agreement_at_weight_bits_16)."""
    from lmh_deploy.options import WEIGHT_BITS_NOTE

    auto = _auto_artifact(3, tmp_path, "auto")
    _auto_artifact(3, tmp_path, "8", weight_bits=8)
    files = sorted(p.name for p in (tmp_path / "auto").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "8").iterdir())
    for name in files:
        assert (tmp_path / "auto" / name).read_bytes() == (tmp_path / "8" / name).read_bytes(), name
    assert "weight_bits_choice" not in auto.report and auto.manifest["weight_bits"] == 8
    assert auto.report[WEIGHT_BITS_NOTE] == (
        "--weight-bits auto: 8 (predictions agree with the source's on 98.4% of the 64 "
        "calibration inputs, at least 98%)"
    )
