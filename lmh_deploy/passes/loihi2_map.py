"""The Loihi 2 target: map layers onto neuro-cores within per-core limits, and run if possible.

Limits (see ``docs/loihi2.md`` for sources and the reasoning behind each):

* 128 neuro-cores per chip and 1 M neurons per chip (Intel, "Taking Neuromorphic
  Computing to the Next Level with Loihi 2", technology brief, 2021, Table 1);
  hence 8192 single-state neurons per core. LM-H keeps two 24-bit states
  (``v_d``, ``v_s``), so we budget half: 4096 LM-H neurons per core.
* 192 KB of memory per core, flexibly shared by synapses and neuron state
  (same brief); we reserve 64 KB for state and microcode and give synapses
  128 KiB, one byte per dense 8-bit weight.
* 120 M synapses per chip (same brief) bound the synapses of a chip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmh_deploy.ir import Graph, IRError, QLMH, QReadout
from lmh_deploy.ir.synapses import qdense_fan_in

CORES_PER_CHIP = 128
NEURONS_PER_CORE = 4096
SYNAPSE_BYTES_PER_CORE = 128 * 1024
SYNAPSES_PER_CHIP = 120_000_000
LAVA_LOIHI_HINT = ("Loihi 2 hardware needs Intel's lava-loihi extension (INRC members); it is "
                   "not installed, so nothing ran on hardware. Use --backend sim or lava.")


@dataclass(frozen=True)
class Rule:
    """One named per-core limit (reported in resources.json)."""

    name: str
    limit: int
    unit: str


RULES = (Rule("neurons_per_core", NEURONS_PER_CORE, "neurons"),
         Rule("synapse_bytes_per_core", SYNAPSE_BYTES_PER_CORE, "bytes"))


def lava_loihi_available() -> bool:
    """True when Intel's lava-loihi extension is importable (checked without running anything)."""
    import lmh_deploy  # noqa: F401
    from lava.utils import loihi

    return bool(loihi.is_installed())


def _synapses_per_neuron(graph: Graph, name: str) -> np.ndarray:
    """Stored synapses of each neuron of ``name``, over all its input paths (sparse-aware)."""
    return np.asarray(sum(qdense_fan_in(graph.node(pred)) for pred in graph.inputs_of(name)))


def map_to_loihi2(graph: Graph) -> dict[str, Any]:
    """Split every neuron layer (with its input synapses) over as few cores as the rules allow.

    Synapses are stored on the core of their postsynaptic neuron, so a layer of ``n``
    neurons with at most ``k`` synapses per neuron (convolutions are sparse: ``k`` is the
    kernel volume, not the input size) needs ``ceil(n / per_core)`` cores with
    ``per_core = min(4096, 131072 // k)``.
    """
    placement = []
    core = 0
    synapses_total = 0
    for name, node in graph.items():
        if not isinstance(node, (QLMH, QReadout)):
            continue
        per_neuron = _synapses_per_neuron(graph, name)
        fan_in = int(per_neuron.max(initial=1))
        n = node.output_size()
        per_core = min(NEURONS_PER_CORE, SYNAPSE_BYTES_PER_CORE // max(fan_in, 1))
        if per_core < 1:
            raise IRError(f"{name}: fan-in {fan_in} exceeds the synaptic memory of one core "
                          f"(rule synapse_bytes_per_core: {SYNAPSE_BYTES_PER_CORE} bytes)")
        cores = math.ceil(n / per_core)
        synapses = int(per_neuron.sum())
        placement.append({"layer": name, "neurons": n, "max_fan_in": fan_in, "synapses": synapses,
                          "neurons_per_core": min(per_core, n), "cores": cores,
                          "first_core": core,
                          "limited_by": None if cores == 1 else "neurons_per_core"
                          if per_core == NEURONS_PER_CORE else "synapse_bytes_per_core"})
        core += cores
        synapses_total += synapses
    chips = max(math.ceil(core / CORES_PER_CHIP), math.ceil(synapses_total / SYNAPSES_PER_CHIP), 1)
    return {"cores": core, "chips": chips, "synapses": synapses_total,
            "neurons": int(sum(p["neurons"] for p in placement)),
            "limits": {r.name: r.limit for r in RULES} | {"cores_per_chip": CORES_PER_CHIP,
                                                          "synapses_per_chip": SYNAPSES_PER_CHIP},
            "layers": placement, "lava_loihi_installed": lava_loihi_available()}
