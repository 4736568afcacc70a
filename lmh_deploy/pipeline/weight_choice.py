"""``compile --weight-bits auto`` (the default): 8-bit weights, or each weight split across two
8-bit synapses (about 15 bits, :func:`~lmh_deploy.passes.weights.split_fine`) where the 8-bit
net's predictions fall short of the source's on the calibration inputs.

The measurement costs almost nothing: the bias correction already runs the source model on the
calibration inputs (:func:`~lmh_deploy.pipeline.compile.mean_counts`) and the calibration runs
the integer simulator on them (:func:`~lmh_deploy.pipeline.compile.calibrate`); both hand over
their predicted classes. Only where the 8-bit predictions agree on fewer than
:data:`AUTO_AGREEMENT` of the inputs is the net quantised and calibrated a second time, split;
the split is kept where it agrees on more. A net kept at 8 bits gives the artifact that
``--weight-bits 8`` gives, byte for byte: the choice is printed (:data:`WEIGHT_BITS_NOTE`, not
saved), and only a net that fell short records ``weight_bits_choice`` in its report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmh_deploy.ir import Graph, IRError
from lmh_deploy.semantics.profiles import get_profile

#: ``--weight-bits auto`` keeps 8-bit weights where their predictions agree with the source's
#: on at least this share of the calibration inputs (64 by default: at most one disagrees).
#: Above verify's :data:`~lmh_deploy.pipeline.verify.LOW_AGREEMENT` (0.95): the calibration
#: inputs are training samples, which a trained net separates more surely than test samples.
AUTO_AGREEMENT = 0.98


def _agreement(source: list[np.ndarray], deployed: list[np.ndarray]) -> float:
    a, b = np.concatenate(source), np.concatenate(deployed)
    return float(np.mean(a == b))


def _cores(qgraph: Graph) -> tuple[int | None, str | None]:
    """Loihi 2 cores the integer graph maps onto, or why it maps onto none."""
    from lmh_deploy.passes.loihi2_map import map_to_loihi2

    try:
        return int(map_to_loihi2(qgraph)["cores"]), None
    except IRError as exc:
        return None, str(exc)


def split_unavailable(graph: Graph, profile: str) -> str | None:
    """Why the graph cannot take the 16-bit split under ``profile`` (the two cases
    :func:`~lmh_deploy.passes.quantize.quantize_graph` and ``compile`` refuse
    ``--weight-bits 16`` for), or None where it can."""
    if "exact_weight_scale" in graph.meta:
        return "an imported netx file deploys its own 8-bit weights"
    prof = get_profile(profile)
    if prof.fixed_weight_exp is not None:
        return f"profile {prof.name} has one weight exponent, no second one for a split"
    return None


def choose_weight_bits(
    graph: Graph,
    qgraph: Graph,
    report: dict[str, Any],
    *,
    x: np.ndarray | None,
    profile: str,
    counts: dict[str, np.ndarray] | None,
    run_float: Any,
    source_predictions: list[np.ndarray] | None,
    sim_predictions: list[np.ndarray] | None,
    loihi2: bool,
) -> tuple[Graph, dict[str, Any], str]:
    """The integer graph and report to deploy under ``--weight-bits auto`` and the line that
    says which and why. ``qgraph``/``report`` are the 8-bit ones, calibrated on ``x``
    (``sim_predictions`` their predicted classes); ``source_predictions`` the source model's
    on ``x`` where the bias correction ran it (else it runs here); ``counts`` the bias
    correction's statistics, reused for the split."""
    from lmh_deploy.passes.quantize import quantize_graph
    from lmh_deploy.pipeline.compile import calibrate, mean_counts

    why_not = split_unavailable(graph, profile) or (
        "no calibration inputs to measure the 8-bit weights on" if x is None else None
    )
    if why_not is not None:
        return qgraph, report, f"--weight-bits auto: 8 ({why_not})"
    assert x is not None and source_predictions is not None and sim_predictions is not None
    timesteps = int(graph.meta["timesteps"])
    if not source_predictions:  # no bias correction ran the source model
        mean_counts(graph, x, timesteps, run_float=run_float, predictions=source_predictions)
    n = int(sum(len(p) for p in source_predictions))
    at8 = _agreement(source_predictions, sim_predictions)
    if at8 >= AUTO_AGREEMENT:
        return (
            qgraph,
            report,
            f"--weight-bits auto: 8 (predictions agree with the source's on {at8:.1%} of the {n} "
            f"calibration inputs, at least {AUTO_AGREEMENT:.0%})",
        )
    q16, r16 = quantize_graph(graph, profile, mean_counts=counts, weight_bits=16)
    if "profile_choice" in report:
        r16["profile_choice"] = report["profile_choice"]
    predictions16: list[np.ndarray] = []
    r16["calibration"] = calibrate(q16, x, timesteps, predictions=predictions16)
    at16 = _agreement(source_predictions, predictions16)
    choice: dict[str, Any] = {
        "asked": "auto",
        "calibration_samples": n,
        "target_agreement": AUTO_AGREEMENT,
        "agreement_8": at8,
        "agreement_16": at16,
    }
    refused = None
    if loihi2:
        cores8, _ = _cores(qgraph)
        cores16, refused = _cores(q16)
        choice["loihi2_cores"] = {"8": cores8, "16": cores16}
    if refused is None and at16 > at8:
        choice["chosen"] = 16
        choice["why"] = (
            f"8-bit weights agree with the source on {at8:.1%} of the {n} calibration inputs, under "
            f"{AUTO_AGREEMENT:.0%}; split into two 8-bit synapses each (about 15 bits, twice the "
            f"synapses) they agree on {at16:.1%}"
        )
        r16["weight_bits_choice"] = choice
        return q16, r16, f"--weight-bits auto: 16 ({choice['why']})"
    choice["chosen"] = 8
    choice["why"] = (
        f"8-bit weights agree with the source on {at8:.1%} of the {n} calibration inputs, under "
        f"{AUTO_AGREEMENT:.0%}, "
        + (
            f"but the split does not map onto Loihi 2 ({refused})"
            if refused is not None
            else f"and the split agrees on no more ({at16:.1%}): the weights are not what differs"
        )
    )
    report["weight_bits_choice"] = choice
    return qgraph, report, f"--weight-bits auto: 8 ({choice['why']})"
