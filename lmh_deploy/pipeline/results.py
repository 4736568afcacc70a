"""What ``run`` and ``verify`` return: typed results (the CLI prints and writes from them).

``to_dict()`` gives the JSON the commands write (``--json``), and ``result["key"]`` reads
that JSON's keys, so code written against the earlier dict results keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmh_deploy.backends.record import RunRecord


class _JsonKeys:
    """``result["key"]`` / ``result.get("key")``: the keys of :meth:`to_dict`."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)


@dataclass(frozen=True)
class Energy:
    """Energy estimates per sample, in joules, in both conventions (docs/energy.md):
    ``loihi`` (Davies 2018 per-operation figures: synaptic ops, neuron updates, spikes) and
    ``snn_45nm`` (the papers' 0.9 pJ per synaptic op); ``ann`` is the equivalent ANN's
    (4.6 pJ per MAC). ``per_layer``: each layer's share of ``loihi``."""

    loihi: float
    snn_45nm: float
    ann: float
    per_layer: dict[str, float]

    @property
    def ann_over_loihi(self) -> float | None:
        """How many times the Loihi estimate the ANN uses (> 1: the SNN uses less)."""
        return self.ann / self.loihi if self.loihi else None


@dataclass
class RunResult(_JsonKeys):
    """One ``run``: ``predictions`` (N,), ``logits`` (N, classes), ``accuracy`` (None
    without labels), ``spikes`` {layer: (T, N, neurons) bool} (empty for a streamed run),
    ``synops`` {layer: synaptic events into it, all samples}, ``energy``, ``layers`` (one
    row per layer, as in the JSON) and ``seconds`` (the backend's run time)."""

    backend: str
    samples: int
    timesteps: int
    predictions: np.ndarray
    logits: np.ndarray
    accuracy: float | None
    spikes: dict[str, np.ndarray]
    synops: dict[str, int]
    energy: Energy
    layers: list[dict[str, Any]]
    seconds: float
    summary: dict[str, Any] = field(repr=False)
    record: RunRecord | None = field(default=None, repr=False)  # the backend's raw record

    @classmethod
    def from_record(cls, summary: dict[str, Any], rec: RunRecord) -> RunResult:
        """From the run stage's ``summary`` (:func:`lmh_deploy.reports.summary.summarize` plus
        backend, seconds, predictions) and its record."""
        return cls(
            backend=str(summary["backend"]),
            samples=int(summary["samples"]),
            timesteps=int(summary["timesteps"]),
            predictions=np.asarray(rec.predictions),
            logits=np.asarray(rec.logits),
            accuracy=summary.get("accuracy"),
            spikes=dict(rec.spikes),
            synops={layer["name"]: int(layer["synops"]) for layer in summary["layers"]},
            energy=Energy(
                loihi=float(summary["energy_joules"]),
                snn_45nm=float(summary["snn_energy_45nm_joules"]),
                ann=float(summary["ann_energy_joules"]),
                per_layer={layer["name"]: float(layer["energy_joules"]) for layer in summary["layers"]},
            ),
            layers=summary["layers"],
            seconds=float(summary["seconds"]),
            summary=summary,
            record=rec,
        )

    def spike_counts(self) -> dict[str, float]:
        """Spikes per sample of every spiking layer."""
        return {
            layer["name"]: float(layer["spikes_per_sample"])
            for layer in self.layers
            if "spikes_per_sample" in layer
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``lmh-deploy run --json``."""
        return self.summary


@dataclass
class VerifyResult(_JsonKeys):
    """One ``verify``: float source vs fixed point (sim/) on ``samples`` samples, Lava vs
    sim/ on the first ``lava_samples``.

    ``agreement``: fraction of samples where source and deployed predictions agree;
    ``lava_equals_sim``: True when Lava and sim/ agree in every spike, state, readout value,
    logit and prediction (None when no sample ran on Lava); ``mismatched_spikes`` between
    them; ``accuracy_source``/``accuracy_deployed`` (None without labels); ``failures``
    (empty when ``ok``)."""

    samples: int
    lava_samples: int
    agreement: float
    spike_agreement: float
    lava_equals_sim: bool | None
    mismatched_spikes: int
    accuracy_source: float | None
    accuracy_deployed: float | None
    accuracy_lava: float | None
    failures: list[str]
    result: dict[str, Any] = field(repr=False)

    @property
    def ok(self) -> bool:
        """Every check that ran passed (Lava == sim/, the accuracy gate when set)."""
        return not self.failures

    @classmethod
    def from_dict(cls, result: dict[str, Any]) -> VerifyResult:
        """From :func:`lmh_deploy.pipeline.verify.verify_artifact`'s result."""
        from lmh_deploy.pipeline.verify import lava_sim_disagree, verify_failures  # import cycle

        ff, lv = result["float_vs_fixed"], result["lava_vs_sim"]
        ran_lava = bool(lv["samples"])
        return cls(
            samples=int(result["samples"]),
            lava_samples=int(result["lava_samples"]),
            agreement=float(ff["prediction_agreement"]),
            spike_agreement=float(ff["spike_agreement"]),
            lava_equals_sim=(not lava_sim_disagree(result)) if ran_lava else None,
            mismatched_spikes=int(lv.get("mismatched_spikes", 0)),
            accuracy_source=ff["accuracy_float"],
            accuracy_deployed=ff["accuracy_fixed"],
            accuracy_lava=ff["accuracy_lava"],
            failures=verify_failures(result),
            result=result,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``lmh-deploy verify --json``."""
        return self.result
