"""Stage 5: turn a run record into the numbers users read (spikes, synaptic ops, energy).

Energy constants are published per-operation figures; see ``docs/energy.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmh_deploy.ir import Graph, QDense, QLMH, QReadout
from lmh_deploy.backends.record import RunRecord
from lmh_deploy.ir.synapses import qdense_fan_in, qdense_fan_out

#: Loihi, Davies et al., IEEE Micro 38(1), 2018, Table 2 (pre-silicon figures), joules.
LOIHI_SYNOP_J = 23.6e-12
LOIHI_NEURON_UPDATE_ACTIVE_J = 81e-12
LOIHI_NEURON_UPDATE_INACTIVE_J = 52e-12
LOIHI_SPIKE_IN_TILE_J = 1.7e-12
#: 45 nm CMOS, Horowitz, ISSCC 2014: 32-bit float multiply (3.7 pJ) + add (0.9 pJ) per MAC.
ANN_MAC_J = 4.6e-12
#: The per-accumulate figure SNN papers use for synaptic ops on 45 nm (fp32 add, Horowitz 2014).
SNN_AC_45NM_J = 0.9e-12


def layer_spike_stats(rec: RunRecord, name: str) -> dict[str, Any]:
    """Per-step counts, fired-neuron count and neuron-steps of a layer, from rasters or stats."""
    if name in rec.spikes:
        s = rec.spikes[name]  # (T, B, n)
        return {
            "spikes_per_step": s.sum(axis=(1, 2)),
            "active_neurons": int(s.any(axis=0).sum()),
            "neuron_steps": int(s.size),
        }
    return rec.spike_stats[name]


def _synapse_paths(graph: Graph, rec: RunRecord, name: str, batch: int) -> list[dict[str, Any]]:
    """The synapse paths (QDense nodes) into neuron layer ``name`` and their counts."""
    paths = []
    for dense_name in graph.inputs_of(name):
        dense = graph.node(dense_name)
        if not isinstance(dense, QDense):
            raise TypeError(f"{name}: input {dense_name} is a {dense.kind}, not synapses")
        fan_out = float(np.mean(qdense_fan_out(dense)))
        synops = int(rec.synops[dense_name])
        paths.append(
            {
                "synapses": dense_name,
                "fan_in": int(dense.input_size()),
                "fan_out": fan_out,
                "synops": synops,
                "input_spikes": int(round(synops / fan_out)) if fan_out else 0,
                # the ANN runs each layer once per sample
                "ann_macs": int(qdense_fan_in(dense).sum()) * batch,
            }
        )
    return paths


def summarize(graph: Graph, rec: RunRecord, labels: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy, per-layer spikes and synops, energy estimate (Loihi vs the equivalent ANN).

    One entry per layer = the neurons (or readout) and the synapse paths feeding them (one,
    or two in a residual block: ``synapses`` names them joined by `` + ``, and
    ``synops_per_path`` splits the count): ``input_spikes`` (nonzero presynaptic values
    arriving), ``fan_out`` (synapses each one reaches, averaged over the arriving values),
    ``synops``, ``output_spikes``, ``firing_rate`` and ``spikes_per_step`` (summed over
    samples).
    """
    batch = rec.logits.shape[0]
    assert rec.readout_trace is not None, "every backend records the readout per step"
    steps = rec.readout_trace.shape[0]
    layers: list[dict[str, Any]] = []
    synops_total = neuron_updates = spikes_total = active_updates = macs_total = 0
    for name in graph.order():
        node = graph.node(name)
        if not isinstance(node, (QLMH, QReadout)):
            continue
        paths = _synapse_paths(graph, rec, name, batch)
        synops = sum(p["synops"] for p in paths)
        macs = sum(p["ann_macs"] for p in paths)
        input_spikes = sum(p["input_spikes"] for p in paths)
        fan_out = (
            sum(p["input_spikes"] * p["fan_out"] for p in paths) / input_spikes
            if input_spikes
            else float(np.mean([p["fan_out"] for p in paths]))
        )
        entry: dict[str, Any] = {
            "name": name,
            "kind": node.kind.removeprefix("q_"),
            "synapses": " + ".join(p["synapses"] for p in paths),
            "neurons": int(node.output_size()),
            "fan_in": sum(p["fan_in"] for p in paths),
            "fan_out": fan_out,
            "input_spikes": input_spikes,
            "synops": synops,
            "synops_per_sample": synops / batch,
            "ann_macs": macs,
        }
        if len(paths) > 1:  # a residual block: the main path and the shortcut
            entry["synops_per_path"] = {p["synapses"]: p["synops"] for p in paths}
        layer_joules = synops * LOIHI_SYNOP_J
        if isinstance(node, QLMH):
            stats = layer_spike_stats(rec, name)
            count = int(stats["spikes_per_step"].sum())
            entry.update(
                {
                    "output_spikes": count,
                    "spikes_per_sample": count / batch,
                    "firing_rate": count / max(stats["neuron_steps"], 1),
                    "spikes_per_step": stats["spikes_per_step"].astype(int).tolist(),
                    "saturation_events": int(rec.saturation.get(name, 0)),
                }
            )
            neuron_updates += stats["neuron_steps"]
            active_updates += stats["active_neurons"] * steps
            spikes_total += count
            active = stats["active_neurons"] * steps
            layer_joules += (
                active * LOIHI_NEURON_UPDATE_ACTIVE_J
                + count * LOIHI_SPIKE_IN_TILE_J
                + (stats["neuron_steps"] - active) * LOIHI_NEURON_UPDATE_INACTIVE_J
            )
        # this layer's share of energy_joules: its synaptic ops, neuron updates and spikes
        entry["energy_joules"] = layer_joules / batch
        layers.append(entry)
        synops_total += synops
        macs_total += macs
    energy = (
        synops_total * LOIHI_SYNOP_J
        + active_updates * LOIHI_NEURON_UPDATE_ACTIVE_J
        + (neuron_updates - active_updates) * LOIHI_NEURON_UPDATE_INACTIVE_J
        + spikes_total * LOIHI_SPIKE_IN_TILE_J
    ) / batch
    ann_energy = macs_total * ANN_MAC_J / batch
    out: dict[str, Any] = {
        "samples": batch,
        "timesteps": steps,
        "layers": layers,
        "totals": {
            "synops": int(synops_total),
            "spikes": int(spikes_total),
            "neuron_updates": int(neuron_updates),
            "saturation_events": int(sum(rec.saturation.values())),
        },
        "energy_joules": energy,
        "ann_energy_joules": ann_energy,
        "energy_ratio_ann_over_snn": ann_energy / energy if energy else None,
        "snn_energy_45nm_joules": synops_total * SNN_AC_45NM_J / batch,
        "energy_sources": {
            "snn": "Davies et al. 2018 (Loihi, Table 2)",
            "ann": "Horowitz 2014, 45 nm fp32 MAC = 4.6 pJ",
            "snn_45nm": "Horowitz 2014, 45 nm fp32 add = 0.9 pJ per synaptic op",
        },
    }
    if labels is not None:
        out["accuracy"] = float(np.mean(rec.predictions == labels))
    return out


def energy_sentence(summary: dict[str, Any]) -> str:
    """The energy estimate in words, its direction said: "12.3 nJ per sample on Loihi (...),
    8.3 times the energy of the equivalent ANN (1.5 nJ, ...)" or "... 2.5 times less than ..."."""
    snn, ann = summary["energy_joules"], summary.get("ann_energy_joules")
    head = f"energy estimate: {_joules(snn)} per sample on Loihi (Davies 2018 figures)"
    if not ann or not snn:
        return head
    ratio = snn / ann
    if ratio >= 1:
        how = f"{ratio:.1f} times the energy of"
    else:
        how = f"{1 / ratio:.1f} times less than"
    return f"{head}, {how} the equivalent ANN ({_joules(ann)}, Horowitz 2014)"


def _joules(joules: float) -> str:
    unit, factor = energy_unit(joules)
    return f"{joules * factor:.3g} {unit}"


def energy_unit(joules: float) -> tuple[str, float]:
    """A readable unit for ``joules``: ``("nJ", 1e9)`` means multiply by 1e9 to get nJ."""
    for unit, factor in (("pJ", 1e12), ("nJ", 1e9), ("µJ", 1e6), ("mJ", 1e3)):
        if abs(joules) * factor < 1000:
            return unit, factor
    return "J", 1.0
