"""Stage 5: turn a run record into the numbers users read (spikes, synaptic ops, energy).

Energy constants are published per-operation figures; see ``docs/energy.md``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lmh_deploy.ir import Graph, QDense, QLMH, QReadout
from lmh_deploy.reports.record import RunRecord
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
        return {"spikes_per_step": s.sum(axis=(1, 2)), "active_neurons": int(s.any(axis=0).sum()),
                "neuron_steps": int(s.size)}
    return rec.spike_stats[name]


def summarize(graph: Graph, rec: RunRecord, labels: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy, per-layer spikes and synops, energy estimate (Loihi vs the equivalent ANN).

    One entry per layer = a Dense and the neurons (or readout) it feeds: ``input_spikes``
    (nonzero presynaptic values arriving), ``fan_out`` (synapses each one reaches),
    ``synops``, ``output_spikes``, ``firing_rate`` and ``spikes_per_step`` (summed over samples).
    """
    batch = rec.logits.shape[0]
    steps = rec.readout_trace.shape[0]
    layers: list[dict[str, Any]] = []
    synops_total = neuron_updates = spikes_total = active_updates = macs_total = 0
    for name in graph.order():
        node = graph.node(name)
        if not isinstance(node, (QLMH, QReadout)):
            continue
        (dense_name,) = graph.inputs_of(name)
        dense = graph.node(dense_name)
        assert isinstance(dense, QDense)
        fan_in, fan_out = dense.input_size(), float(np.mean(qdense_fan_out(dense)))
        synops = int(rec.synops[dense_name])
        macs = int(qdense_fan_in(dense).sum()) * batch  # the ANN runs each layer once per sample
        entry: dict[str, Any] = {
            "name": name, "kind": node.kind.removeprefix("q_"), "synapses": dense_name,
            "neurons": int(node.output_size()), "fan_in": int(fan_in), "fan_out": fan_out,
            "input_spikes": int(round(synops / fan_out)) if fan_out else 0, "synops": synops, "synops_per_sample": synops / batch,
            "ann_macs": macs}
        if isinstance(node, QLMH):
            stats = layer_spike_stats(rec, name)
            count = int(stats["spikes_per_step"].sum())
            entry.update({
                "output_spikes": count, "spikes_per_sample": count / batch,
                "firing_rate": count / max(stats["neuron_steps"], 1),
                "spikes_per_step": stats["spikes_per_step"].astype(int).tolist(),
                "saturation_events": int(rec.saturation.get(name, 0))})
            neuron_updates += stats["neuron_steps"]
            active_updates += stats["active_neurons"] * steps
            spikes_total += count
        layers.append(entry)
        synops_total += synops
        macs_total += macs
    energy = (synops_total * LOIHI_SYNOP_J
              + active_updates * LOIHI_NEURON_UPDATE_ACTIVE_J
              + (neuron_updates - active_updates) * LOIHI_NEURON_UPDATE_INACTIVE_J
              + spikes_total * LOIHI_SPIKE_IN_TILE_J) / batch
    ann_energy = macs_total * ANN_MAC_J / batch
    out: dict[str, Any] = {
        "samples": batch, "timesteps": steps, "layers": layers,
        "totals": {"synops": int(synops_total), "spikes": int(spikes_total),
                   "neuron_updates": int(neuron_updates),
                   "saturation_events": int(sum(rec.saturation.values()))},
        "energy_joules": energy, "ann_energy_joules": ann_energy,
        "energy_ratio_ann_over_snn": ann_energy / energy if energy else None,
        "snn_energy_45nm_joules": synops_total * SNN_AC_45NM_J / batch,
        "energy_sources": {"snn": "Davies et al. 2018 (Loihi, Table 2)",
                           "ann": "Horowitz 2014, 45 nm fp32 MAC = 4.6 pJ",
                           "snn_45nm": "Horowitz 2014, 45 nm fp32 add = 0.9 pJ per synaptic op"},
    }
    if labels is not None:
        out["accuracy"] = float(np.mean(rec.predictions == labels))
    return out


def energy_unit(joules: float) -> tuple[str, float]:
    """A readable unit for ``joules``: ``("nJ", 1e9)`` means multiply by 1e9 to get nJ."""
    for unit, factor in (("pJ", 1e12), ("nJ", 1e9), ("µJ", 1e6), ("mJ", 1e3)):
        if abs(joules) * factor < 1000:
            return unit, factor
    return "J", 1.0
