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

    @property
    def predictions(self) -> np.ndarray:
        """Predicted class per sample."""
        return np.argmax(self.logits, axis=1)
