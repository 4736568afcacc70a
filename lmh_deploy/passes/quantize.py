"""Stage 2: float graph IR -> integer graph IR (Loihi 2 fixed point).

Per Dense layer the quantity quantised is the float current per integer
presynaptic unit, ``W * a`` (``a = theta_pre`` for spikes: the paper's
``I = W s theta``; ``a = x_max / 255`` for the graded input). It becomes an 8-bit
mantissa ``m = round(W a * s_w)``, ``s_w = 127 / max|W a|``, and the layer's
states are counted in units of ``1 / S`` with ``S = 2**(exp + 1) * s_w``, so
the integer current is exactly ``(sum 2 m x) << exp``. The exponent is the
largest that keeps the worst-case current within ``2**20`` (negative, a floor
shift of the sum, for very wide layers). Thresholds, biases
and factors follow from ``S``; the arithmetic is :mod:`lmh_deploy.semantics.integer`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import DEFAULT_PROFILE, NumericProfile, get_profile
from lmh_deploy.ir import (LMH, Graph, Input, IRError, QDense, QInput, QLMH, QReadout, Readout,
                           validate, validate_quantized)
from lmh_deploy.ir.synapses import (abs_row_sums, chain_conv, chain_matrix, qdense_fan_in,
                                     synapse_chain)

#: Worst-case |synaptic input| per step is kept below 2**20: states integrate several steps
#: of input (and lam, mu gains), so 3 bits are left between one step's input and 24 bits.
CURRENT_HEADROOM_BITS = fx.STATE_BITS - 4
#: Loihi's bias exponent is an unsigned 3-bit field.
BIAS_EXP_MAX = 7


@dataclass(frozen=True)
class WeightQuant:
    """An 8-bit mantissa matrix with its per-layer scale and exponent."""

    mant: np.ndarray
    scale: float  # float value = mant / scale
    exp: int


def _round_mantissa(w_eff, scale: float):
    """``clip(round(w * scale), -127, 127)`` as int64, dense or CSR (zeros dropped)."""
    if sp.issparse(w_eff):
        m = sp.csr_matrix(w_eff, dtype=np.float64, copy=True)
        m.data = np.clip(np.round(m.data * scale), -fx.WEIGHT_MANT_MAX, fx.WEIGHT_MANT_MAX)
        m = m.astype(np.int64)
        m.eliminate_zeros()
        return m
    return np.clip(np.round(w_eff * scale), -fx.WEIGHT_MANT_MAX, fx.WEIGHT_MANT_MAX).astype(np.int64)


def _exponent(worst: int, headroom_bits: int = CURRENT_HEADROOM_BITS,
              limit: int | None = None) -> int:
    """Largest exponent keeping ``worst`` (unshifted worst-case current) within the headroom
    (``2**headroom_bits``, or ``limit`` when given)."""
    limit = (1 << headroom_bits) if limit is None else limit
    exp = 0
    # Wide layers (e.g. 784 graded inputs) can exceed the limit unshifted: shift the sum down.
    while exp > fx.WEIGHT_EXP_MIN and fx.shift_sum(worst, exp) > limit:
        exp -= 1
    while exp < fx.WEIGHT_EXP_MAX and fx.shift_sum(worst, exp + 1) <= limit:
        exp += 1
    return exp


def worst_rows(mants: list[Any], paths: list[tuple]) -> np.ndarray:
    """Worst-case unshifted |current| per postsynaptic neuron, summed over the paths.

    Kernels give one value per output channel, repeated over its ``repeat`` positions.
    """
    total = 0
    for m, path in zip(mants, paths):
        max_presyn, repeat = path[1], (path[2] if len(path) > 2 else 1)
        total = total + np.repeat(fx.WEIGHT_LAVA_SCALE * max_presyn * abs_row_sums(m), repeat)
    return np.asarray(total)


def quantize_joint(paths: list[tuple], headroom_bits: int = CURRENT_HEADROOM_BITS,
                   fixed_exp: int | None = None, max_scale: float = math.inf,
                   limit: int | None = None) -> tuple[list[Any], float, int]:
    """Quantise the synaptic weights of all paths into one neuron layer together.

    ``paths`` holds ``(w_eff, max_presyn[, repeat])`` per path: dense or CSR matrices, or
    4-D conv kernels (``repeat`` = output positions per channel), of the float current per
    presynaptic unit. All paths share one scale and exponent, so their integer currents
    add exactly in the neuron. Returns ``(mantissas, scale, exp)``.
    """
    peak = max((float(abs(p[0]).max()) if np.prod(p[0].shape) else 0.0) for p in paths)
    scale = fx.WEIGHT_MANT_MAX / peak if peak > 0 else 1.0
    scale = min(scale, max_scale)
    mants = [_round_mantissa(p[0], scale) for p in paths]
    worst = int(np.max(worst_rows(mants, paths), initial=0))
    if fixed_exp is None:
        return mants, scale, _exponent(worst, headroom_bits, limit)
    # A fixed exponent (netx derives its own from the written integers): shrink the mantissas
    # until the worst case fits, as netx's own exporter does.
    limit = (1 << headroom_bits) if limit is None else limit
    while fx.shift_sum(worst, fixed_exp) > limit and scale > 0:
        scale *= min(0.99, limit / fx.shift_sum(worst, fixed_exp))
        mants = [_round_mantissa(p[0], scale) for p in paths]
        worst = int(np.max(worst_rows(mants, paths), initial=0))
    return mants, scale, fixed_exp


def quantize_weights(w_eff: np.ndarray, max_presyn: int) -> WeightQuant:
    """Quantise ``w_eff`` (float current per presynaptic unit) to mantissa, scale, exponent."""
    (mant,), scale, exp = quantize_joint([(w_eff, max_presyn)])
    return WeightQuant(mant=mant, scale=scale, exp=exp)


def state_scale(wq: WeightQuant) -> float:
    """Integer state units per float unit of the layer fed by ``wq``."""
    return float(fx.WEIGHT_LAVA_SCALE * 2.0 ** wq.exp * wq.scale)


def _to_int(value: np.ndarray | float, scale: float, what: str, layer: str) -> np.ndarray:
    q = np.round(np.asarray(value, dtype=np.float64) * scale).astype(np.int64)
    if q.size and (q.max() > fx.STATE_MAX or q.min() < fx.STATE_MIN):
        raise IRError(f"{layer}: {what} does not fit {fx.STATE_BITS}-bit states at scale "
                      f"{scale:.6g} (integer value {int(np.abs(q).max())})")
    return q


def worst_case_state_bound(node: QLMH, max_current: int, timesteps: int) -> dict[str, int]:
    """Magnitude bound of vD, vS after ``timesteps`` steps with the largest possible input.

    ``max_current`` is in state units (after the profile's input shift).
    """
    mu_d, mu_s, lam_d, lam_s = (float(np.abs(getattr(node, f)).max()) / fx.FACTOR_ONE
                                for f in ("mu_d", "mu_s", "lam_d", "lam_s"))
    drive = max_current + float(np.abs(node.bias).max(initial=0))
    v_d = float(abs(node.v_d_init))
    v_s = float(abs(node.theta / 2 if node.v_s_init is None else node.v_s_init))
    peak_d, peak_s = v_d, v_s
    for _ in range(timesteps):
        v_d = mu_d * v_d + mu_s * v_s + drive
        v_s = lam_s * v_s + lam_d * v_d
        peak_d, peak_s = max(peak_d, v_d), max(peak_s, v_s)
    return {"v_d": int(math.ceil(peak_d)), "v_s": int(math.ceil(peak_s))}


def _factor_codes(name: str, node: LMH, prof: NumericProfile) -> dict[str, np.ndarray]:
    """Full multipliers of the four factors, refused when outside the profile's range."""
    codes = {}
    for fname in ("mu_d", "mu_s", "lam_d", "lam_s"):
        lo, hi = prof.factor_range(fname)
        value = np.asarray(getattr(node, fname), np.float64)
        # The lmh encoding's ranges are half-open in float ([-0.5, 0.5)): a sigmoid saturated
        # to the closed top end is stored as the largest code, as before profiles existed.
        top = hi + (1.0 if prof.factor_encoding == "lmh" else 0.5)
        scaled = value * fx.FACTOR_ONE
        if scaled.min() < lo - 0.5 or scaled.max() > top:
            bad = float(value.min() if scaled.min() < lo - 0.5 else value.max())
            raise IRError(f"{name}: numeric profile {prof.name} cannot express factor "
                          f"{fname}={bad:.6g} (its range is [{lo}, {hi}] / 4096)")
        codes[fname] = fx.quantize_multiplier(value, lo, hi)
    return codes


def _soma_bias(name: str, node: LMH, bias: np.ndarray, prof: NumericProfile) -> np.ndarray:
    """The integer bias where the profile adds it, as ``mant << exp`` when the profile says so."""
    if prof.bias_to == "soma":
        if np.any(bias != 0) and np.any(node.mu_d != 0):
            raise IRError(f"{name}: numeric profile {prof.name} adds the bias to the soma; a "
                          f"bias with mu_d != 0 builds up in the dendrite and cannot move there")
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
        raise IRError(f"{name}: bias {int(np.abs(bias).max())} does not fit profile "
                      f"{prof.name}'s {prof.bias_mantissa_bits}-bit mantissa << 3-bit exponent")
    return np.round(bias / (1 << exps)).astype(np.int64) << exps


def _wrap_limit(node: Any, prof: NumericProfile) -> int | None:
    """Largest worst-case ``a_in`` whose dendrite can never wrap, for a wrapping dendrite.

    ``v_d' = R(mu_d v_d) + (a_in << shift)`` with toward-zero products stays within
    ``max|a_in << shift| / (1 - mu_d)``, so that bound may reach 2**23 - 1 itself: the full
    24 bits, not the saturating profiles' 20-bit headroom (which leaves room for lambda > 1)."""
    if not isinstance(node, LMH) or prof.overflow_v_d != "wrap" or prof.rounding != "toward-zero":
        return None
    decay = min(float(np.abs(node.mu_d).max()), 1.0)
    return int(fx.STATE_MAX * (1.0 - decay)) >> prof.input_shift


def _scale_cap(node: Any, prof: NumericProfile) -> float:
    """Largest weight scale whose state scale keeps a fixed-exponent bias and the threshold
    mantissa representable (profiles with a fixed weight exponent cannot shift instead)."""
    if prof.fixed_weight_exp is None:
        return math.inf
    per_scale = float(1 << prof.input_shift) * fx.WEIGHT_LAVA_SCALE * 2.0 ** prof.fixed_weight_exp
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
        caps.append(0.999 * top / bias if isinstance(node, LMH) else
                    0.999 * ((1 << (prof.bias_mantissa_bits - 1)) - 1) / bias)
    return min(caps) / per_scale


def quantize_neuron(name: str, node: LMH, s: float, prof: NumericProfile
                    ) -> tuple[QLMH, dict[str, np.ndarray], dict[str, Any]]:
    """The integer layer of float ``node`` at state scale ``s`` under ``prof``.

    Returns ``(QLMH, factor codes, report entries)``; raises :class:`IRError` naming the
    layer and the rule when the profile cannot express the layer.
    """
    codes = _factor_codes(name, node, prof)
    if prof.threshold_mantissa_bits is None:
        theta = int(_to_int(node.theta, s, "threshold", name))
    else:  # theta = vth << input_shift, vth an unsigned mantissa
        vth = int(np.round(node.theta * s / (1 << prof.input_shift)))
        if vth >= 1 << prof.threshold_mantissa_bits:
            raise IRError(f"{name}: threshold mantissa {vth} exceeds profile {prof.name}'s "
                          f"{prof.threshold_mantissa_bits} bits at scale {s:.6g}")
        theta = vth << prof.input_shift
    if theta < 1:
        raise IRError(f"{name}: threshold {node.theta} rounds to 0 at scale {s:.6g}")
    # An initial soma of exactly half the threshold stays theta // 2 (the paper's code).
    v_s_init = None if node.v_s_init == node.theta / 2 else \
        int(_to_int(node.v_s_init, s, "v_s_init", name))
    rules = {"reset": node.reset, "threshold_test": node.threshold_test,
             "reset_timing": node.reset_timing,
             "reset_value": int(_to_int(node.reset_value, s, "reset_value", name)),
             "v_d_init": int(_to_int(node.v_d_init, s, "v_d_init", name)),
             "v_s_init": v_s_init}
    problem = prof.rule_problem(rules["reset"], rules["threshold_test"], rules["reset_timing"],
                                rules["reset_value"], rules["v_d_init"],
                                theta // 2 if v_s_init is None else v_s_init)
    if problem:
        raise IRError(f"{name}: numeric profile {prof.name} cannot express {problem}")
    bias = _soma_bias(name, node, np.round(np.asarray(node.bias, np.float64) * s), prof)
    _to_int(bias, 1.0, "bias", name)
    qn = QLMH(size=node.size, theta=theta, bias=bias, state_scale=s, profile=prof.name,
              **codes, **rules)
    return qn, codes, {"profile": prof.name, "rules": {**node.rules(), "v_s_init_int": v_s_init}}


def quantize_graph(graph: Graph, profile: str = DEFAULT_PROFILE) -> tuple[Graph, dict[str, Any]]:
    """Quantise a validated float graph under numeric ``profile``; returns ``(graph, report)``.

    Every chain of synapse nodes between two neuron layers becomes one ``QDense`` named
    after its last node; neuron layers fed by several chains (residual blocks) quantise
    them jointly and delay the shorter ones. A layer whose factors or rules the profile
    cannot express raises :class:`IRError` naming the layer and the rule. The input graph
    is not modified.
    """
    validate(graph)
    prof = get_profile(profile)
    q = Graph(meta=dict(graph.meta))
    q.meta["profile"] = prof.name
    timesteps = int(graph.meta.get("timesteps", 1))
    report: dict[str, Any] = {"profile": prof.as_dict(), "layers": []}
    depth: dict[str, int] = {}  # synaptic hops from the input: Lava's delay to this layer
    for name, node in graph.items():
        if isinstance(node, Input):
            scale = fx.INPUT_MAX / node.x_max
            q.add(name, QInput(shape=node.shape, scale=scale, bits=fx.INPUT_BITS))
            depth[name] = 0
            continue
        if not isinstance(node, (LMH, Readout)):
            continue  # synapse nodes are quantised with the neuron layer they feed
        chains = [synapse_chain(graph, pred) for pred in graph.inputs_of(name)]
        depth[name] = max(depth[src] for src, _ in chains) + 1
        paths, convs, units = [], [], []
        for src, chain in chains:
            graded = isinstance(graph.node(src), Input)
            unit = graph.node(src).x_max / fx.INPUT_MAX if graded else graph.node(src).theta
            units.append(unit)
            conv = chain_conv(graph, chain)  # kept as a kernel: no matrix is materialised
            convs.append(conv)
            if conv is not None:
                repeat = conv.output_shape[1] * conv.output_shape[2]
                paths.append((conv.weight * unit, fx.INPUT_MAX if graded else 1, repeat))
            else:
                paths.append((chain_matrix(graph, chain) * unit, fx.INPUT_MAX if graded else 1))
        shift = prof.input_shift if isinstance(node, LMH) else 0  # a readout sums raw a_in
        mants, w_scale, exp = quantize_joint(paths, prof.current_headroom_bits - prof.input_shift,
                                             prof.fixed_weight_exp, _scale_cap(node, prof),
                                             _wrap_limit(node, prof))
        for (src, chain), mant, path, conv, unit in zip(chains, mants, paths, convs, units):
            w_eff, max_pre = path[0], path[1]
            graded = max_pre == fx.INPUT_MAX
            geometry = {} if conv is None else {
                "conv_input_shape": tuple(conv.input_shape), "conv_stride": tuple(conv.stride),
                "conv_padding": tuple(conv.padding)}
            qd = QDense(weight_mant=mant, weight_exp=exp, graded=graded, weight_scale=w_scale,
                        delay=depth[name] - depth[src] - 1, **geometry)
            q.add(chain[-1], qd, (src,))
            err = float(abs(mant / w_scale - w_eff).max()) / unit
            peak = float(abs(w_eff).max()) / unit
            report["layers"].append({
                "name": chain[-1], "kind": "dense", "ops": [graph.node(c).kind for c in chain],
                "shape": [qd.output_size(), qd.input_size()], "conv": conv is not None,
                "sparse": bool(sp.issparse(mant)), "synapses": int(qdense_fan_in(qd).sum()),
                "weight_exp": exp, "weight_scale": w_scale, "graded_input": graded,
                "delay": depth[name] - depth[src] - 1, "max_weight_error": err,
                "max_weight_error_rel": err / max(peak, 1e-30)})
        rows = worst_rows(mants, paths)
        s = state_scale(WeightQuant(mants[0], w_scale, exp))
        inputs = tuple(chain[-1] for _, chain in chains)
        if isinstance(node, Readout):
            q.add(name, QReadout(bias=_to_int(node.bias, s, "bias", name), state_scale=s), inputs)
            continue
        s *= 1 << shift  # the neuron sees a_in << input_shift
        qn, codes, neuron_report = quantize_neuron(name, node, s, prof)
        q.add(name, qn, inputs)
        factor_err = max(float(np.abs(codes[f] / fx.FACTOR_ONE - getattr(node, f)).max())
                         for f in codes)
        max_current = fx.shift_sum(int(np.max(rows, initial=0)), exp) << shift
        bound = worst_case_state_bound(qn, max_current, timesteps)
        report["layers"].append({
            "name": name, "kind": "lmh", "size": node.size, "state_scale": s,
            "theta": qn.theta, "theta_float": node.theta, **neuron_report,
            "factor_rows": int(node.mu_d.shape[0]),
            "start_step": depth[name], "max_factor_error": factor_err,
            "factors": {k: np.round(getattr(node, k), 6).tolist() for k in LMH.FACTOR_RANGES},
            "max_current": max_current, "worst_case_state": bound,
            "state_limit": fx.STATE_MAX,
            "worst_case_fits_24bit": max(bound.values()) <= fx.STATE_MAX})
    validate_quantized(q)
    return q, report
