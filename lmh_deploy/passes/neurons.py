"""Neuron quantisation: threshold, bias, initial states and the four factor codes of one LM-H
layer at its state scale, under a numeric profile (:mod:`lmh_deploy.semantics.profiles`).

A layer whose factors or rules the profile cannot express raises :class:`IRError` naming the
layer and the rule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lmh_deploy.ir import LMH, QLMH, Graph, IRError
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import DEFAULT_PROFILE, FACTOR_NAMES, PROFILES, NumericProfile

#: Loihi's bias exponent is an unsigned 3-bit field.
BIAS_EXP_MAX = 7


def to_state_int(value: np.ndarray | float, scale: float, what: str, layer: str) -> np.ndarray:
    """``round(value * scale)`` as int64; :class:`IRError` naming ``layer`` if it overflows."""
    q = np.round(np.asarray(value, dtype=np.float64) * scale).astype(np.int64)
    if q.size and (q.max() > fx.STATE_MAX or q.min() < fx.STATE_MIN):
        raise IRError(
            f"{layer}: {what} does not fit {fx.STATE_BITS}-bit states at scale "
            f"{scale:.6g} (integer value {int(np.abs(q).max())})"
        )
    return q


def _outside(node: LMH, prof: NumericProfile) -> tuple[str, float] | None:
    """The first factor of ``node`` (and its offending value) outside ``prof``'s range."""
    for fname in FACTOR_NAMES:
        lo, hi = prof.factor_range(fname)
        value = np.asarray(getattr(node, fname), np.float64)
        # The lmh encoding's ranges are half-open in float ([-0.5, 0.5)): a sigmoid saturated
        # to the closed top end is stored as the largest code, as before profiles existed
        # (cuba keeps that for the lmh-encoded factors; its mu_d = 1, an undecaying current,
        # is refused rather than stored as 4095/4096).
        lmh_coded = prof.factor_encoding == "lmh" or (prof.factor_encoding == "cuba" and fname != "mu_d")
        top = hi + (1.0 if lmh_coded else 0.5)
        scaled = value * fx.FACTOR_ONE
        if scaled.min() < lo - 0.5:
            return fname, float(value.min())
        if scaled.max() > top:
            return fname, float(value.max())
    return None


def _factor_codes(name: str, node: LMH, prof: NumericProfile) -> dict[str, Any]:
    """Full multipliers of the four factors, refused when outside the profile's range."""
    outside = _outside(node, prof)
    if outside is not None:
        fname, bad = outside
        lo, hi = prof.factor_range(fname)
        hint = ""
        if prof.name == DEFAULT_PROFILE and fname == "mu_d" and bad > 0:
            hint = "; --profile cuba (or loihi-lif) holds current decays up to 4095/4096"
        elif prof.name == DEFAULT_PROFILE and fname == "lam_s" and bad < 0.5:
            # a trained SpikingJelly ParametricLIFNode(init_tau=2.0) moves tau below 2
            hint = (
                "; --profile cuba holds membrane decays down to 0 (SpikingJelly tau < 2, "
                "snnTorch beta < 0.5), and a compile without --profile picks it"
            )
        raise IRError(
            f"{name}: numeric profile {prof.name} cannot express factor "
            f"{fname}={bad:.6g} (its range is [{lo}, {hi}] / 4096){hint}"
        )
    return {
        fname: fx.quantize_multiplier(getattr(node, fname), *prof.factor_range(fname))
        for fname in FACTOR_NAMES
    }


def default_profile(graph: Graph) -> tuple[str, str | None]:
    """The numeric profile a compile without one uses, and a line saying why where it is not
    ``lmh``: ``cuba`` where ``lmh`` cannot hold some layer's synaptic current decay (``mu_d``
    above 1/2: rockpool's ``LIFTorch``, norse's ``LIFCell``) or membrane decay (``lam_s`` below
    1/2: a trained SpikingJelly ``ParametricLIFNode`` with tau < 2, snnTorch ``Leaky`` with
    beta < 0.5) and ``cuba`` holds every such layer; ``lmh`` otherwise (then its own refusal
    names the layer). cuba is lmh with wider ``mu_d`` and ``lam_s``, so a net that lmh holds
    gets lmh."""
    lmh, cuba = PROFILES[DEFAULT_PROFILE], PROFILES["cuba"]
    refused = {
        name: outside
        for name in graph.of_kind("lmh")
        if (outside := _outside(graph.node(name), lmh)) is not None
    }
    if not refused or any(_outside(graph.node(name), cuba) for name in refused):
        return lmh.name, None
    name, (fname, value) = next(iter(refused.items()))
    why = (
        f"{name}'s synaptic current decays by {value:.4g} a step, more than profile lmh holds (1/2)"
        if fname == "mu_d"
        else f"{name}'s membrane decay factor lam_s is {value:.4g}, below the 1/2 profile lmh holds "
        f"(SpikingJelly tau < 2, snnTorch beta < 0.5)"
    )
    return cuba.name, f"profile cuba (no --profile given): {why}"


def _soma_bias(name: str, node: LMH, bias: np.ndarray, prof: NumericProfile) -> np.ndarray:
    """The integer bias where the profile adds it, as ``mant << exp`` when the profile says so."""
    if prof.bias_to == "soma":
        if np.any(bias != 0) and np.any(node.mu_d != 0):
            raise IRError(
                f"{name}: numeric profile {prof.name} adds the bias to the soma; a "
                f"bias with mu_d != 0 builds up in the dendrite and cannot move there"
            )
        bias = np.round(bias * node.lam_d.reshape(-1)[0])  # lam_d is exactly 1 there
    if prof.bias_mantissa_bits is None:
        return bias.astype(np.int64)
    top = 1 << (prof.bias_mantissa_bits - 1)
    exps = np.full(bias.shape, -1)
    choices = range(BIAS_EXP_MAX, -1, -1) if prof.fixed_bias_exp is None else [prof.fixed_bias_exp]
    for e in choices:  # the smallest exponent whose mantissa fits wins
        mant = np.round(bias / (1 << e))
        exps = np.where((mant >= -top) & (mant < top), e, exps)
    if np.any(exps < 0):
        raise IRError(
            f"{name}: bias {int(np.abs(bias).max())} does not fit profile "
            f"{prof.name}'s {prof.bias_mantissa_bits}-bit mantissa << 3-bit exponent"
        )
    return np.round(bias / (1 << exps)).astype(np.int64) << exps


def wrap_limit(node: Any, prof: NumericProfile) -> int | None:
    """Largest worst-case ``a_in`` per step whose dendrite stays inside its range, for a
    dendrite decaying by more than 1/2 (None: the profile's current headroom alone).

    ``v_d' = R(mu_d v_d) + (a_in << shift)`` stays within ``max|a_in << shift| / (1 - mu_d)``.
    A wrapping dendrite (toward-zero products) may use the full 24 bits, not the saturating
    profiles' 20-bit headroom (which leaves room for lambda > 1). A saturating one keeps the
    bound ``2 * 2**headroom`` that ``|mu_d| <= 1/2`` gives under ``lmh``: with a current decay
    near 1 (``cuba``; steady state ``a / (1 - mu_d)``, 20x the input at 0.95) the current
    shrinks by ``2 (1 - mu_d)`` instead of saturating the dendrite."""
    if not isinstance(node, LMH):
        return None
    decay = min(float(np.abs(node.mu_d).max()), 1.0)
    if prof.overflow_v_d == "wrap" and prof.rounding == "toward-zero":
        return int(fx.STATE_MAX * (1.0 - decay)) >> prof.input_shift
    if decay <= 0.5:
        return None
    return int((1 << (prof.current_headroom_bits - prof.input_shift + 1)) * (1.0 - decay))


def weight_scale_cap(node: Any, prof: NumericProfile) -> float:
    """Largest weight scale whose state scale keeps a fixed-exponent bias and the threshold
    mantissa representable (profiles with a fixed weight exponent cannot shift instead)."""
    if prof.fixed_weight_exp is None:
        return math.inf
    per_scale = float(1 << prof.input_shift) * fx.WEIGHT_LAVA_SCALE * 2.0**prof.fixed_weight_exp
    caps = [math.inf]
    bias = float(np.abs(node.bias).max(initial=0.0))
    if isinstance(node, LMH):
        bias *= float(np.abs(node.lam_d).max()) if prof.bias_to == "soma" else 1.0
        if prof.threshold_mantissa_bits is not None:
            top = ((1 << prof.threshold_mantissa_bits) - 1) << prof.input_shift
            caps.append(0.999 * top / node.theta)
    else:
        per_scale /= 1 << prof.input_shift  # the readout's scale has no input shift
    if prof.bias_mantissa_bits is not None and prof.fixed_bias_exp is not None and bias > 0:
        top = ((1 << (prof.bias_mantissa_bits - 1)) - 1) << prof.fixed_bias_exp
        caps.append(
            0.999 * top / bias
            if isinstance(node, LMH)
            else 0.999 * ((1 << (prof.bias_mantissa_bits - 1)) - 1) / bias
        )
    return min(caps) / per_scale


def state_scale_cap(node: Any, prof: NumericProfile) -> float:
    """Largest state scale of the weights into ``node`` (before the profile's input shift) at
    which its threshold, reset value and initial states fit the states. (A bias beyond the
    states stays refused by :func:`to_state_int`: it means a broken layer, not fine weights.)"""
    if not isinstance(node, LMH):
        return math.inf
    values = [float(node.theta), abs(float(node.reset_value)), float(np.abs(node.v_d_init).max())]
    values += [] if node.v_s_init is None else [abs(float(node.v_s_init))]
    # 0.999: round(value * cap) must not round up past STATE_MAX
    return 0.999 * fx.STATE_MAX / max(values) / (1 << prof.input_shift)


def quantize_neuron(
    name: str, node: LMH, s: float, prof: NumericProfile
) -> tuple[QLMH, dict[str, np.ndarray], dict[str, Any]]:
    """The integer layer of float ``node`` at state scale ``s`` under ``prof``.

    Returns ``(QLMH, factor codes, report entries)``; raises :class:`IRError` naming the
    layer and the rule when the profile cannot express the layer.
    """
    codes = _factor_codes(name, node, prof)
    if prof.threshold_mantissa_bits is None:
        theta = int(to_state_int(node.theta, s, "threshold", name))
    else:  # theta = vth << input_shift, vth an unsigned mantissa
        vth = int(np.round(node.theta * s / (1 << prof.input_shift)))
        if vth >= 1 << prof.threshold_mantissa_bits:
            raise IRError(
                f"{name}: threshold mantissa {vth} exceeds profile {prof.name}'s "
                f"{prof.threshold_mantissa_bits} bits at scale {s:.6g}"
            )
        theta = vth << prof.input_shift
    if theta < 1:
        raise IRError(f"{name}: threshold {node.theta} rounds to 0 at scale {s:.6g}")
    # An initial soma of exactly half the threshold stays theta // 2 (the paper's code).
    v_s_init = (
        None
        if node.v_s_init is None or node.v_s_init == node.theta / 2
        else int(to_state_int(node.v_s_init, s, "v_s_init", name))
    )
    rules: dict[str, Any] = {
        "reset": node.reset,
        "threshold_test": node.threshold_test,
        "reset_timing": node.reset_timing,
        "reset_value": int(to_state_int(node.reset_value, s, "reset_value", name)),
        "v_d_init": fx.initial_ints(to_state_int(node.v_d_init, s, "v_d_init", name)),
        "v_s_init": v_s_init,
        "max_spikes": int(node.max_spikes),
        "v_s_min": None if node.v_s_min is None else int(to_state_int(node.v_s_min, s, "v_s_min", name)),
    }
    problem = prof.rule_problem(
        rules["reset"],
        rules["threshold_test"],
        rules["reset_timing"],
        rules["reset_value"],
        rules["v_d_init"],
        theta // 2 if v_s_init is None else v_s_init,
    )
    if problem:
        raise IRError(f"{name}: numeric profile {prof.name} cannot express {problem}")
    if node.v_s_min is not None and not prof.soma_floor:
        raise IRError(f"{name}: numeric profile {prof.name} cannot express a soma floor (v_s_min)")
    bias = _soma_bias(name, node, np.round(np.asarray(node.bias, np.float64) * s), prof)
    to_state_int(bias, 1.0, "bias", name)
    qn = QLMH(size=node.size, theta=theta, bias=bias, state_scale=s, profile=prof.name, **codes, **rules)
    return qn, codes, {"profile": prof.name, "rules": {**node.rules(), "v_s_init_int": v_s_init}}
