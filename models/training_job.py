"""One training job as the CLI describes it: data -> model -> train -> checkpoint + metrics."""
from __future__ import annotations

import json
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from models.architectures import build
from models.checkpoint import save_checkpoint
from models.data import load_dataset, make_loaders
from models.train import TrainConfig, train


@dataclass
class TrainJob:
    """Options of ``lmh-deploy train`` (paper defaults where the paper gives one)."""

    dataset: str = "digits"
    data_dir: str | None = None
    arch: str = "mlp"
    neuron: str = "lmh"
    factors: str = "progressive"
    timesteps: int = 4
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025
    weight_decay: float = 5e-4
    loss: str = "ce"
    width_mult: float = 1.0
    seed: int = 0
    out: str = "model.pt"
    json_path: str | None = None


def run_training_job(job: TrainJob,
                     progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train, write the checkpoint to ``job.out`` (and metrics to ``job.json_path``)."""
    torch.manual_seed(job.seed)
    train_set, test_set, spec = load_dataset(job.dataset, job.data_dir, seed=job.seed)
    train_loader, test_loader = make_loaders(train_set, test_set, batch_size=job.batch_size,
                                             seed=job.seed)
    arch_kwargs = {"neuron": job.neuron, "factors": job.factors, "timesteps": job.timesteps,
                   "width_mult": job.width_mult}
    model = build(job.arch, spec.input_shape, spec.num_classes, **arch_kwargs)
    cfg = TrainConfig(epochs=job.epochs, lr=job.lr, weight_decay=job.weight_decay,
                      loss=job.loss, seed=job.seed)
    tracemalloc.start()
    try:
        metrics = train(model, train_loader, test_loader, cfg, progress=progress)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    metrics["peak_memory_bytes"] = int(peak)
    metrics["job"] = asdict(job)
    dataset = {"name": spec.name, "input_shape": list(spec.input_shape),
               "num_classes": spec.num_classes, "x_max": 1.0, "seed": job.seed,
               "data_dir": job.data_dir}
    save_checkpoint(job.out, model, arch=job.arch, arch_kwargs=arch_kwargs, dataset=dataset,
                    metrics={k: v for k, v in metrics.items() if k != "history"})
    if job.json_path:
        Path(job.json_path).write_text(json.dumps(metrics, indent=1))
    return metrics
