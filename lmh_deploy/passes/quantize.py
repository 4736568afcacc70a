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
from lmh_deploy.ir import (LMH, Graph, Input, IRError, QDense, QInput, QLMH, QReadout, Readout,
                           validate, validate_quantized)
from lmh_deploy.ir.synapses import (abs_row_sums, chain_conv, chain_matrix, qdense_fan_in,
                                     synapse_chain)

#: Worst-case |synaptic input| per step is kept below 2**20: states integrate several steps
#: of input (and lam, mu gains), so 3 bits are left between one step's input and 24 bits.
CURRENT_HEADROOM_BITS = fx.STATE_BITS - 4


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


def _exponent(worst: int) -> int:
    """Largest exponent keeping ``worst`` (unshifted worst-case current) within the headroom."""
    limit = 1 << CURRENT_HEADROOM_BITS
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


def quantize_joint(paths: list[tuple]) -> tuple[list[Any], float, int]:
    """Quantise the synaptic weights of all paths into one neuron layer together.

    ``paths`` holds ``(w_eff, max_presyn[, repeat])`` per path: dense or CSR matrices, or
    4-D conv kernels (``repeat`` = output positions per channel), of the float current per
    presynaptic unit. All paths share one scale and exponent, so their integer currents
    add exactly in the neuron. Returns ``(mantissas, scale, exp)``.
    """
    peak = max((float(abs(p[0]).max()) if np.prod(p[0].shape) else 0.0) for p in paths)
    scale = fx.WEIGHT_MANT_MAX / peak if peak > 0 else 1.0
    mants = [_round_mantissa(p[0], scale) for p in paths]
    worst = int(np.max(worst_rows(mants, paths), initial=0))
    return mants, scale, _exponent(worst)


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

    Every chain of synapse nodes between two neuron layers becomes one ``QDense`` named
    after its last node; neuron layers fed by several chains (residual blocks) quantise
    them jointly and delay the shorter ones. The input graph is not modified.
    """
    validate(graph)
    q = Graph(meta=dict(graph.meta))
    timesteps = int(graph.meta.get("timesteps", 1))
    report: dict[str, Any] = {"layers": []}
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
        mants, w_scale, exp = quantize_joint(paths)
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
        max_current = fx.shift_sum(int(np.max(rows, initial=0)), exp)
        bound = worst_case_state_bound(qn, max_current, timesteps)
        report["layers"].append({
            "name": name, "kind": "lmh", "size": node.size, "state_scale": s,
            "theta": theta, "theta_float": node.theta, "factor_rows": int(node.mu_d.shape[0]),
            "start_step": depth[name], "max_factor_error": factor_err,
            "factors": {k: np.round(getattr(node, k), 6).tolist() for k in LMH.FACTOR_RANGES},
            "max_current": max_current, "worst_case_state": bound,
            "state_limit": fx.STATE_MAX,
            "worst_case_fits_24bit": max(bound.values()) <= fx.STATE_MAX})
    validate_quantized(q)
    return q, report
