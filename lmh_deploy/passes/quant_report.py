"""The quantisation report: per synapse path the weight error, per neuron layer the scales,
factor error and a worst-case state bound (``compile_report.json``'s ``layers``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmh_deploy.ir import LMH, QLMH, Graph
from lmh_deploy.ir.synapses import DenseChain, qdense_fan_in
from lmh_deploy.passes.compose import SynapsePath
from lmh_deploy.passes.delays import layer_depths
from lmh_deploy.passes.weights import abs_max, fine_path_name, worst_rows
from lmh_deploy.semantics import integer as fx


@dataclass
class LayerQuant:
    """What quantising one neuron or readout layer decided, kept for the report."""

    name: str
    node: Any  # the float LMH or Readout node
    paths: list[SynapsePath]
    mants: list[Any]
    weight_scale: float
    weight_exp: int
    input_shift: int = 0
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # factor codes (LM-H only)
    neuron_entries: dict[str, Any] = field(default_factory=dict)  # from quantize_neuron


def worst_case_state_bound(node: QLMH, max_current: int, timesteps: int) -> dict[str, int]:
    """Magnitude bound of vD, vS after ``timesteps`` steps with the largest possible input.

    ``max_current`` is in state units (after the profile's input shift).
    """
    mu_d, mu_s, lam_d, lam_s = (
        float(np.abs(getattr(node, f)).max()) / fx.FACTOR_ONE for f in ("mu_d", "mu_s", "lam_d", "lam_s")
    )
    drive = max_current + float(np.abs(node.bias).max(initial=0))
    v_d = float(np.abs(node.v_d_init).max())
    v_s = float(abs(node.theta / 2 if node.v_s_init is None else node.v_s_init))
    peak_d, peak_s = v_d, v_s
    for _ in range(timesteps):
        v_d = mu_d * v_d + mu_s * v_s + drive
        v_s = lam_s * v_s + lam_d * v_d
        peak_d, peak_s = max(peak_d, v_d), max(peak_s, v_s)
    return {"v_d": int(math.ceil(peak_d)), "v_s": int(math.ceil(peak_s))}


def _fine_entries(path: str, q: Graph) -> dict[str, Any]:
    """Where ``path``'s weights are split (``--weight-bits 16``): the fine path, its exponent."""
    fine = fine_path_name(path)
    if fine not in q.nx_graph:
        return {}
    return {"fine_path": fine, "fine_weight_exp": int(q.node(fine).weight_exp)}


def _path_row(path: SynapsePath, mant: Any, q: Graph, layer: LayerQuant) -> dict[str, Any]:
    qd = q.node(path.name)
    if isinstance(path.weights, DenseChain):
        err = max(
            float(abs(sp.csr_matrix(mant[rows]) / layer.weight_scale - w).max())
            for rows, w in path.weights.row_blocks()
        )
    else:
        err = float(abs(mant / layer.weight_scale - path.weights).max())
    err /= path.unit
    peak = abs_max(path.weights) / path.unit
    return {
        "name": path.name,
        "kind": "dense",
        "ops": list(path.ops),
        "shape": [qd.output_size(), qd.input_size()],
        "conv": path.conv is not None,
        "sparse": bool(sp.issparse(qd.weight_mant)),
        "synapses": int(qdense_fan_in(qd).sum()),
        "weight_exp": layer.weight_exp,
        "weight_scale": layer.weight_scale,
        "graded_input": path.graded,
        # the width of the messages the path takes: the graded input's, graded spike counts, 1 bit
        "input_bits": (int(getattr(q.node(path.source), "bits", fx.SPIKE_COUNT_BITS)) if path.graded else 1),
        "delay": qd.delay,
        **_fine_entries(path.name, q),
        "max_weight_error": err,
        "max_weight_error_rel": err / max(peak, 1e-30),
    }


def _neuron_row(layer: LayerQuant, qn: QLMH, start_step: int, timesteps: int) -> dict[str, Any]:
    node = layer.node
    factor_err = max(
        float(np.abs(layer.codes[f] / fx.FACTOR_ONE - getattr(node, f)).max()) for f in layer.codes
    )
    rows = worst_rows(layer.mants, [(p.weights, p.max_presyn, p.repeat) for p in layer.paths])
    max_current = fx.shift_sum(int(np.max(rows, initial=0)), layer.weight_exp) << layer.input_shift
    bound = worst_case_state_bound(qn, max_current, timesteps)
    return {
        "name": layer.name,
        "kind": "lmh",
        "size": node.size,
        "state_scale": qn.state_scale,
        "theta": qn.theta,
        "theta_float": node.theta,
        **layer.neuron_entries,
        "factor_rows": int(node.mu_d.shape[0]),
        "start_step": start_step,
        "max_factor_error": factor_err,
        "factors": {k: np.round(getattr(node, k), 6).tolist() for k in LMH.FACTOR_RANGES},
        "max_current": max_current,
        "worst_case_state": bound,
        "state_limit": fx.STATE_MAX,
        "worst_case_fits_24bit": max(bound.values()) <= fx.STATE_MAX,
    }


def quantization_report(
    layers: list[LayerQuant], q: Graph, profile: dict[str, Any], timesteps: int
) -> dict[str, Any]:
    """The report of a quantised graph ``q``: per layer its synapse paths' rows, then its own."""
    depths = layer_depths(q)
    rows = []
    for layer in layers:
        rows += [_path_row(p, m, q, layer) for p, m in zip(layer.paths, layer.mants)]
        if isinstance(layer.node, LMH):
            rows.append(_neuron_row(layer, q.node(layer.name), depths[layer.name], timesteps))
    return {"profile": profile, "layers": rows}


#: A synapse path whose weights round by more than this share of max|W| gets a note (the
#: best an 8-bit mantissa does is 0.5 / 127 = 0.39 %).
LARGE_WEIGHT_ERROR = 0.02


def weight_error_notes(report: dict[str, Any]) -> list[str]:
    """One line per synapse path whose weights round coarsely: why, and the option that helps."""
    profile = report["profile"]
    fixed = profile.get("fixed_weight_exp") is not None
    notes = []
    for row in report["layers"]:
        rel = row.get("max_weight_error_rel")
        if row["kind"] != "dense" or rel is None or rel <= LARGE_WEIGHT_ERROR:
            continue
        bits = int(row.get("input_bits", 1))
        wide = bits > fx.INPUT_BITS_UNSIGNED
        if fixed:
            why = (
                f"profile {profile['name']} has no weight exponent, so the worst-case input current "
                "(and the threshold and bias) must fit its fixed-point widths with small mantissas"
            )
            fix = "--profile lmh picks an exponent per layer (at most 0.39 %)" + (
                f", or fewer than {bits} --input-bits" if wide else ""
            )
        elif wide:
            why = (
                f"its {bits}-bit inputs' worst-case sum must fit Lava's int32 accumulator and, "
                f"shifted by the lowest weight exponent ({fx.WEIGHT_EXP_MIN}), the current headroom"
            )
            fix = f"fewer --input-bits (e.g. {max(bits - 4, fx.INPUT_BITS_UNSIGNED)}) keep more weight bits"
        else:
            why = "the layer's weights span more than its 8-bit mantissas can hold"
            fix = "train with weight decay or a norm (--norm bn) for an even range"
        notes.append(f"{row['name']}: weights rounded by up to {rel:.1%} of max|W|: {why}; {fix}")
    return notes
