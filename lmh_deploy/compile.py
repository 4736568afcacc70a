"""The compile driver: checkpoint -> export -> quantize -> calibrate -> artifact directory."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lmh_deploy import __version__
from lmh_deploy import fixedpoint as fx
from lmh_deploy.artifact import atomic_directory, check_artifact, sha256, write_manifest
from lmh_deploy.export import export_model
from lmh_deploy.ir import Graph, load_graph, save_graph
from lmh_deploy.quantize import quantize_graph
from models.checkpoint import load_checkpoint
from models.data import load_dataset

TARGETS = ("lava-sim", "loihi2")
CHECKPOINT_COPY = "model.pt"


@dataclass
class Artifact:
    """A loaded, checksum-verified artifact directory."""

    directory: Path
    manifest: dict[str, Any]
    float_graph: Graph
    quant_graph: Graph
    report: dict[str, Any]

    @property
    def timesteps(self) -> int:  # noqa: D102
        return int(self.quant_graph.meta["timesteps"])

    def load_model(self):
        """The float model (from the checkpoint copy, weights-only load)."""
        model, _ = load_checkpoint(self.directory / CHECKPOINT_COPY)
        return model

    def dataset_split(self, split: str = "test"):
        """``(x, y)`` numpy arrays of the model's dataset split."""
        ds = self.quant_graph.meta["dataset"]
        train, test, _ = load_dataset(ds["name"], ds.get("data_dir"), seed=int(ds.get("seed", 0)))
        data = test if split == "test" else train
        return data.tensors[0].numpy(), data.tensors[1].numpy()


def calibrate(qgraph: Graph, x: np.ndarray, timesteps: int) -> dict[str, Any]:
    """Observed state ranges and saturation on real samples, via the integer simulator."""
    from sim import simulate  # the run stage; compile only uses it for measurement

    x_int = fx.quantize_input(x, qgraph.node("input").scale)
    rec = simulate(qgraph, x_int, timesteps, record_states=True)
    out = {}
    for name, (v_d, v_s) in rec.state_trace.items():
        out[name] = {"max_abs_v_d": int(np.abs(v_d).max()), "max_abs_v_s": int(np.abs(v_s).max()),
                     "saturation_events": rec.saturation[name],
                     "headroom_bits": float(np.log2(fx.STATE_MAX / max(1, np.abs(v_d).max(),
                                                                        np.abs(v_s).max())))}
    return {"samples": int(x.shape[0]), "layers": out}


def compile_model(model_path: str | Path, outdir: str | Path, *, target: str = "lava-sim",
                  calibration_samples: int = 64,
                  warn: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Compile a checkpoint into ``outdir`` atomically; returns the compile report."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; supported: {', '.join(TARGETS)}")
    model_path = Path(model_path)
    model, payload = load_checkpoint(model_path)
    ds = payload["dataset"]
    timesteps = int(payload["arch_kwargs"].get("timesteps", 4))
    meta = {"num_classes": int(ds["num_classes"]), "dataset": ds, "target": target,
            "source": {"file": model_path.name, "sha256": sha256(model_path)}}
    graph = export_model(model, input_shape=tuple(ds["input_shape"]), x_max=float(ds.get("x_max", 1.0)),
                         timesteps=timesteps, meta=meta)
    qgraph, report = quantize_graph(graph)
    for layer in report["layers"]:
        if layer["kind"] == "lmh" and not layer["worst_case_fits_24bit"]:
            warn(f"{layer['name']}: worst-case state {max(layer['worst_case_state'].values())} "
                 f"exceeds the 24-bit range ({fx.STATE_MAX}); saturation is possible and is counted")
    if calibration_samples > 0:
        train_set, _, _ = load_dataset(ds["name"], ds.get("data_dir"), seed=int(ds.get("seed", 0)))
        x = train_set.tensors[0][:calibration_samples].numpy()
        report["calibration"] = calibrate(qgraph, x, timesteps)
        for name, c in report["calibration"]["layers"].items():
            if c["saturation_events"]:
                warn(f"{name}: {c['saturation_events']} saturation events on calibration data")
    report.update({"target": target, "timesteps": timesteps, "lmh_deploy_version": __version__,
                   "source": meta["source"]})
    if target == "loihi2":
        from lmh_deploy.loihi2 import map_to_loihi2

        resources = map_to_loihi2(qgraph)
    with atomic_directory(outdir) as tmp:
        save_graph(graph, tmp, "ir")
        save_graph(qgraph, tmp, "quantized")
        shutil.copyfile(model_path, tmp / CHECKPOINT_COPY)
        (tmp / "compile_report.json").write_text(json.dumps(report, indent=1))
        if target == "loihi2":
            (tmp / "resources.json").write_text(json.dumps(resources, indent=1))
        write_manifest(tmp, {"target": target, "timesteps": timesteps,
                             "lmh_deploy_version": __version__})
    return report


def load_artifact(directory: str | Path) -> Artifact:
    """Check the manifest, then load both graphs and the report."""
    directory = Path(directory)
    manifest = check_artifact(directory)
    return Artifact(directory=directory, manifest=manifest,
                    float_graph=load_graph(directory, "ir"),
                    quant_graph=load_graph(directory, "quantized"),
                    report=json.loads((directory / "compile_report.json").read_text()))
