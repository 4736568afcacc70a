"""The Loihi 2 target: map layers onto neuro-cores within a per-core memory budget in bytes.

Published limits only (``docs/loihi2.md`` cites each): 128 neuro-cores per chip and up to
1 M neurons per chip (Intel, "Taking Neuromorphic Computing to the Next Level with Loihi 2",
technology brief, 2021; Lava's ``NUM_VIRTUAL_CORES_L2 = 128``), and 192 KB of memory per core,
flexibly shared by synapses, neuron state and routing (same brief). How that memory is split,
fan-in and fan-out limits and axon-table sizes are not published: they are reported as unknown,
never invented. The budget per core counts one byte per stored 8-bit weight and, per neuron,
its two 24-bit states and its 24-bit bias (and its factor table when factors are per neuron).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmh_deploy.ir import QLMH, Graph, IRError, QDense, QReadout, validate_quantized
from lmh_deploy.ir.synapses import qdense_fan_in

CORES_PER_CHIP = 128
NEURONS_PER_CHIP = 1 << 20
#: 1 M neurons / 128 cores: no core holds more (the brief gives only the chip total).
NEURONS_PER_CORE_MAX = NEURONS_PER_CHIP // CORES_PER_CHIP
#: "192 KB" read as KiB; the brief does not say which.
MEMORY_BYTES_PER_CORE = 192 * 1024
STATE_BYTES_PER_NEURON = 2 * 3  # v_d, v_s: 24 bits each
BIAS_BYTES_PER_NEURON = 3
FACTOR_BYTES = 2  # one 12-bit (lmh) or 13-bit multiplier, rounded up to bytes
SYNAPSE_BYTES = 1  # one 8-bit weight
UNKNOWN_LIMITS = (
    "fan-in per neuron",
    "fan-out per neuron",
    "axon / routing table sizes",
    "how a core's 192 KB is split between synapses, state and routing",
    "microcode program size of a two-compartment neuron",
)
LAVA_LOIHI_HINT = (
    "Loihi 2 hardware needs Intel's lava-loihi extension (INRC members); it is "
    "not installed, so nothing ran on hardware. Use --backend sim or lava."
)


@dataclass(frozen=True)
class Rule:
    """One named per-core limit (reported in resources.json)."""

    name: str
    limit: int
    unit: str


RULES = (
    Rule("memory_bytes_per_core", MEMORY_BYTES_PER_CORE, "bytes"),
    Rule("neurons_per_core_max", NEURONS_PER_CORE_MAX, "neurons"),
)


def lava_loihi_available() -> bool:
    """True when Intel's lava-loihi extension is importable (checked without running anything)."""
    import lmh_deploy  # noqa: F401
    from lava.utils import loihi

    return bool(loihi.is_installed())


def _synapses_per_neuron(graph: Graph, name: str) -> np.ndarray:
    """Stored synapses of each neuron of ``name``, over all its input paths (sparse-aware)."""
    return np.asarray(sum(qdense_fan_in(graph.node(pred)) for pred in graph.inputs_of(name)))


def _neuron_bytes(node: Any) -> int:
    """Bytes of state and parameters one neuron of ``node`` keeps on its core."""
    if not isinstance(node, QLMH):
        return STATE_BYTES_PER_NEURON  # a readout integrates its input: one accumulator pair
    per_neuron_factors = sum(
        getattr(node, f).shape[0] for f in ("mu_d", "mu_s", "lam_d", "lam_s") if getattr(node, f).shape[1] > 1
    )
    return STATE_BYTES_PER_NEURON + BIAS_BYTES_PER_NEURON + FACTOR_BYTES * per_neuron_factors


def refuse_max_pools(graph: Graph) -> None:
    """A max pool of currents (``MaxPool2d`` before a neuron) has no Loihi 2 mapping: a
    neuro-core adds the synaptic input of a neuron's dendrite, and no public neuron model takes
    a maximum over it (``docs/loihi2.md``); refused naming the layer."""
    pools = graph.meta.get("source_max_pools", {})
    for name, node in graph.items():
        if isinstance(node, QDense) and node.max_pool is not None:
            source = f" (source layer {pools[name]})" if name in pools else ""
            raise IRError(
                f"{name}{source}: a MaxPool2d over currents has no Loihi 2 mapping (neuro-cores "
                f"sum synaptic input; no public neuron model takes its maximum); use AvgPool2d, "
                f"or put the MaxPool2d after the neuron (exact over spikes), or --target lava-sim"
            )


def map_to_loihi2(graph: Graph) -> dict[str, Any]:
    """Split every neuron layer (with its input synapses) over as few cores as the budget allows.

    Synapses are stored on the core of their postsynaptic neuron, so a neuron with ``k``
    stored synapses (convolutions are sparse: ``k`` is the kernel volume) costs ``k`` bytes
    plus its state and parameter bytes; a core takes ``per_core = min(8192, 196608 // cost)``
    neurons, and a layer ``ceil(n / per_core)`` cores. Per-layer tables (shared factors,
    threshold) are a few bytes and are not counted.
    """
    validate_quantized(graph)
    refuse_max_pools(graph)
    placement: list[dict[str, Any]] = []
    core = 0
    synapses_total = 0
    for name, node in graph.items():
        if not isinstance(node, (QLMH, QReadout)):
            continue
        per_neuron = _synapses_per_neuron(graph, name)
        fan_in = int(per_neuron.max(initial=1))
        n = node.output_size()
        cost = SYNAPSE_BYTES * fan_in + _neuron_bytes(node)
        per_core = min(NEURONS_PER_CORE_MAX, MEMORY_BYTES_PER_CORE // cost)
        if per_core < 1:
            raise IRError(
                f"{name}: one neuron needs {cost} bytes (fan-in {fan_in}), more than "
                f"a core's {MEMORY_BYTES_PER_CORE} bytes (rule memory_bytes_per_core)"
            )
        cores = math.ceil(n / per_core)
        synapses = int(per_neuron.sum())
        placement.append(
            {
                "layer": name,
                "neurons": n,
                "max_fan_in": fan_in,
                "synapses": synapses,
                "bytes_per_neuron": cost,
                "neurons_per_core": min(per_core, n),
                "cores": cores,
                "first_core": core,
                "memory_bytes_used_first_core": min(per_core, n) * cost,
                "limited_by": None
                if cores == 1
                else "neurons_per_core_max"
                if per_core == NEURONS_PER_CORE_MAX
                else "memory_bytes_per_core",
            }
        )
        core += cores
        synapses_total += synapses
    neurons = int(sum(p["neurons"] for p in placement))
    chips = max(math.ceil(core / CORES_PER_CHIP), math.ceil(neurons / NEURONS_PER_CHIP), 1)
    return {
        "cores": core,
        "chips": chips,
        "synapses": synapses_total,
        "neurons": neurons,
        "limits": {r.name: r.limit for r in RULES}
        | {"cores_per_chip": CORES_PER_CHIP, "neurons_per_chip": NEURONS_PER_CHIP},
        "unknown_limits": list(UNKNOWN_LIMITS),
        "layers": placement,
        "lava_loihi_installed": lava_loihi_available(),
    }
