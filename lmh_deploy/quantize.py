"""Stage 2: float graph IR -> integer graph IR (Loihi 2 fixed point).

Per Dense layer the quantity quantised is the float current per integer
presynaptic unit, ``W * a`` (``a = theta_pre`` for spikes: the paper's
``I = W s theta``; ``a = x_max / 255`` for the graded input). It becomes an 8-bit
mantissa ``m = round(W a * s_w)``, ``s_w = 127 / max|W a|``, and the layer's
states are counted in units of ``1 / S`` with ``S = 2**(exp + 1) * s_w``, so
the integer current is exactly ``(sum 2 m x) << exp``. The exponent is the
largest that keeps the worst-case current within ``2**20`` (negative, a floor
shift of the sum, for very wide layers). Thresholds, biases
and factors follow from ``S``; the arithmetic is :mod:`lmh_deploy.fixedpoint`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmh_deploy import fixedpoint as fx
from lmh_deploy.ir import (LMH, Dense, Graph, Input, IRError, QDense, QInput, QLMH, QReadout,
                           Readout, validate)

#: Worst-case |synaptic input| per step is kept below 2**20: states integrate several steps
#: of input (and lam, mu gains), so 3 bits are left between one step's input and 24 bits.
CURRENT_HEADROOM_BITS = fx.STATE_BITS - 4


@dataclass(frozen=True)
class WeightQuant:
    """An 8-bit mantissa matrix with its per-layer scale and exponent."""

    mant: np.ndarray
    scale: float  # float value = mant / scale
    exp: int


def quantize_weights(w_eff: np.ndarray, max_presyn: int) -> WeightQuant:
    """Quantise ``w_eff`` (float current per presynaptic unit) to mantissa, scale, exponent."""
    peak = float(np.max(np.abs(w_eff))) if w_eff.size else 0.0
    scale = fx.WEIGHT_MANT_MAX / peak if peak > 0 else 1.0
    mant = np.clip(np.round(w_eff * scale), -fx.WEIGHT_MANT_MAX, fx.WEIGHT_MANT_MAX).astype(np.int64)
    worst = fx.WEIGHT_LAVA_SCALE * max_presyn * int(np.abs(mant).sum(axis=1).max(initial=0))
    limit = 1 << CURRENT_HEADROOM_BITS
    exp = 0
    # Wide layers (e.g. 784 graded inputs) can exceed the limit unshifted: shift the sum down.
    while exp > fx.WEIGHT_EXP_MIN and fx.shift_sum(worst, exp) > limit:
        exp -= 1
    while exp < fx.WEIGHT_EXP_MAX and fx.shift_sum(worst, exp + 1) <= limit:
        exp += 1
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
    """Magnitude bound of vD, vS after ``timesteps`` steps with the largest possible input."""
    mu_d = float(np.abs(node.mu_d).max()) / fx.FACTOR_ONE
    mu_s = float(np.abs(node.mu_s).max()) / fx.FACTOR_ONE
    lam_d = 1 + float(np.abs(node.lam_d_off).max()) / fx.FACTOR_ONE
    lam_s = 1 + float(np.abs(node.lam_s_off).max()) / fx.FACTOR_ONE
    drive = max_current + float(np.abs(node.bias).max(initial=0))
    v_d, v_s = 0.0, node.theta / 2
    peak_d, peak_s = 0.0, v_s
    for _ in range(timesteps):
        v_d = mu_d * v_d + mu_s * v_s + drive
        v_s = lam_s * v_s + lam_d * v_d
        peak_d, peak_s = max(peak_d, v_d), max(peak_s, v_s)
    return {"v_d": int(math.ceil(peak_d)), "v_s": int(math.ceil(peak_s))}


def quantize_graph(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Quantise a validated float graph; returns ``(integer graph, per-layer report)``.

    The input graph is not modified.
    """
    validate(graph)
    q = Graph(meta=dict(graph.meta))
    timesteps = int(graph.meta.get("timesteps", 1))
    report: dict[str, Any] = {"layers": []}
    for name, node in graph.items():
        inputs = tuple(graph.inputs_of(name))
        if isinstance(node, Input):
            scale = fx.INPUT_MAX / node.x_max
            q.add(name, QInput(shape=node.shape, scale=scale, bits=fx.INPUT_BITS), inputs)
        elif isinstance(node, Dense):
            src = graph.node(inputs[0])
            graded = isinstance(src, Input)
            unit = src.x_max / fx.INPUT_MAX if graded else src.theta
            wq = quantize_weights(node.weight * unit, fx.INPUT_MAX if graded else 1)
            err = float(np.max(np.abs(wq.mant / wq.scale - node.weight * unit))) / unit
            q.add(name, QDense(weight_mant=wq.mant, weight_exp=wq.exp, graded=graded,
                               weight_scale=wq.scale), inputs)
            report["layers"].append({
                "name": name, "kind": "dense", "shape": list(node.weight.shape),
                "weight_exp": wq.exp, "weight_scale": wq.scale, "graded_input": graded,
                "max_weight_error": err,
                "max_weight_error_rel": err / max(float(np.abs(node.weight).max()), 1e-30)})
        elif isinstance(node, (LMH, Readout)):
            dense = q.node(inputs[0])
            assert isinstance(dense, QDense)
            s = state_scale(WeightQuant(dense.weight_mant, dense.weight_scale, dense.weight_exp))
            if isinstance(node, Readout):
                q.add(name, QReadout(bias=_to_int(node.bias, s, "bias", name), state_scale=s),
                      inputs)
                continue
            theta = int(_to_int(node.theta, s, "threshold", name))
            if theta < 1:
                raise IRError(f"{name}: threshold {node.theta} rounds to 0 at scale {s:.6g}")
            codes = {"mu_d": fx.quantize_factor(node.mu_d), "mu_s": fx.quantize_factor(node.mu_s),
                     "lam_d_off": fx.quantize_factor(node.lam_d, offset=1.0),
                     "lam_s_off": fx.quantize_factor(node.lam_s, offset=1.0)}
            qn = QLMH(size=node.size, theta=theta, bias=_to_int(node.bias, s, "bias", name),
                      state_scale=s, **codes)
            q.add(name, qn, inputs)
            factor_err = max(
                float(np.abs(fx.dequantize_factor(codes["mu_d"]) - node.mu_d).max()),
                float(np.abs(fx.dequantize_factor(codes["mu_s"]) - node.mu_s).max()),
                float(np.abs(fx.dequantize_factor(codes["lam_d_off"], 1.0) - node.lam_d).max()),
                float(np.abs(fx.dequantize_factor(codes["lam_s_off"], 1.0) - node.lam_s).max()))
            max_presyn = fx.INPUT_MAX if dense.graded else 1
            max_current = fx.shift_sum(fx.WEIGHT_LAVA_SCALE * max_presyn
                                       * int(np.abs(dense.weight_mant).sum(axis=1).max()),
                                       dense.weight_exp)
            bound = worst_case_state_bound(qn, max_current, timesteps)
            report["layers"].append({
                "name": name, "kind": "lmh", "size": node.size, "state_scale": s,
                "theta": theta, "theta_float": node.theta, "factor_rows": int(node.mu_d.shape[0]),
                "max_factor_error": factor_err,
                "factors": {k: np.round(getattr(node, k), 6).tolist() for k in LMH.FACTOR_RANGES},
                "max_current": max_current, "worst_case_state": bound,
                "state_limit": fx.STATE_MAX,
                "worst_case_fits_24bit": max(bound.values()) <= fx.STATE_MAX})
    return q, report
