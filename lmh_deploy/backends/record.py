"""What a run returns, whichever backend ran it (PyTorch float, sim/, Lava)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RunRecord:
    """Per-sample outputs and per-layer observations of one run over ``B`` samples of ``T`` steps.

    ``logits`` (B, classes) are integers for fixed-point backends (``sum_t a[t] + T * bias``)
    and floats for the float model. ``spikes[layer]`` is (T, B, n) bool; ``final_state[layer]``
    holds ``(v_d, v_s)`` after the last step, each (B, n); ``state_trace[layer]`` (optional) holds
    ``(v_d, v_s)`` each (T, B, n). ``saturation[layer]`` counts clipped state updates;
    ``synops[dense]`` counts synaptic events (nonzero presynaptic values x fan-out).
    """

    logits: np.ndarray
    spikes: dict[str, np.ndarray] = field(default_factory=dict)
    final_state: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    state_trace: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    saturation: dict[str, int] = field(default_factory=dict)
    synops: dict[str, int] = field(default_factory=dict)
    readout_trace: np.ndarray | None = None  # (T, B, classes) per-step readout input
    #: Spike statistics per layer, kept even when full rasters are not (streaming runs):
    #: ``spikes_per_step`` (T,), ``active_neurons`` (neurons that fired in a sample, summed
    #: over samples), ``neuron_steps`` (n * T * B).
    spike_stats: dict[str, dict[str, np.ndarray | int]] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        """Predicted class per sample."""
        return np.argmax(self.logits, axis=1)


def spike_agreement_by_layer(
    reference: dict[str, np.ndarray], other: dict[str, np.ndarray]
) -> tuple[dict[str, float], float]:
    """Fraction of equal (step, sample, neuron) spike entries per layer of ``other``, and over all.

    The overall value weights each layer by its entries. Raises :class:`ValueError` naming a
    layer that ``reference`` lacks or whose raster has another shape.
    """
    per_layer, equal, total = {}, 0, 0
    for name, spikes in other.items():
        if name not in reference:
            raise ValueError(
                f"layer {name!r} is missing from the reference run "
                f"(it has {', '.join(reference) or 'no layers'})"
            )
        if reference[name].shape != spikes.shape:
            raise ValueError(f"layer {name!r}: reference spikes {reference[name].shape} vs {spikes.shape}")
        same = int(np.count_nonzero(reference[name] == spikes))
        per_layer[name] = same / max(spikes.size, 1)
        equal, total = equal + same, total + spikes.size
    return per_layer, equal / max(total, 1)


def dense_synops(fan_out, presyn: np.ndarray) -> int:
    """Synaptic events: every nonzero presynaptic value reaches its ``fan_out`` synapses.

    ``fan_out`` is a number (dense) or a per-presynaptic-neuron vector (conv, sparse).
    """
    active = presyn.reshape(-1, presyn.shape[-1]) != 0
    if np.ndim(fan_out) == 0:
        return int(np.count_nonzero(active)) * int(fan_out)
    return int(active.sum(axis=0) @ np.asarray(fan_out, np.int64))


def synops_from_spikes(
    graph, x_int: np.ndarray, spikes: dict[str, np.ndarray], timesteps: int
) -> dict[str, int]:
    """Event-driven synops per synapse path for a backend that records spikes but does not count.

    ``x_int`` is the quantised input: static (B, *shape), presented every step, or
    time-major frames (T', B, *shape), frame ``t`` at step ``t``: input synops count the
    events (nonzero values) that occurred.
    """
    from lmh_deploy.ir.synapses import qdense_fan_out

    out = {}
    static = x_int.ndim == len(graph.node(graph.order()[0]).shape) + 1
    for name in graph.order():
        node = graph.node(name)
        if node.kind != "q_dense":
            continue
        (src,) = graph.inputs_of(name)
        fan_out = qdense_fan_out(node)
        if graph.node(src).kind == "q_input" and static:
            out[name] = dense_synops(fan_out, x_int.reshape(x_int.shape[0], -1)) * timesteps
        elif graph.node(src).kind == "q_input":
            frames = x_int[:timesteps]
            out[name] = dense_synops(fan_out, frames.reshape(-1, int(np.prod(frames.shape[2:]))))
        else:
            out[name] = dense_synops(fan_out, spikes[src])
    return out
