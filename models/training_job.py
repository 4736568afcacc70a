"""One training job as the CLI describes it: data -> model -> train -> checkpoint + metrics.

Modes (all through :func:`run_training_job`):

* direct STBP training of an LM-H (``neuron="lmh"``, ``factors`` progressive or radical)
  or LIF (``neuron="lif"``) network, full BPTT or time-slicing (``time_slice=k``);
* a QCFS ANN (``neuron="qcfs"``, ``qcfs_levels=L``), the first stage of hybrid training;
* hybrid fine-tuning (``hybrid_from="ann.pt"``): the QCFS checkpoint is converted to an
  LM-H SNN (:mod:`models.hybrid`) and fine-tuned. The architecture, width and norm come
  from that checkpoint (``arch``/``width_mult``/``norm`` of the job are ignored); the
  SNN runs ``timesteps`` steps (the paper uses ``T = L``) and the paper's lr is 0.002.

The metrics (returned, written to ``json_path`` and stored in the checkpoint) always have
``accuracy``, ``epochs``, ``peak_memory_bytes`` (see :mod:`models.train`) and
``seconds_per_epoch``; hybrid jobs add ``hybrid: {ann_accuracy, converted_accuracy,
levels, timesteps}``.

Distributed (``torchrun``; ``docs/distributed.md``): when torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) is present,
the job joins the process group (gloo on ``device="cpu"``, nccl on ``"cuda"``, one GPU
per process), trains through ``DistributedDataParallel`` with ``batch_size`` as the
*global* batch (split over the ranks; the lr keeps its single-process meaning),
synchronises BN/tdBN statistics across ranks, evaluates on the whole test set (each
rank a shard, counts all-reduced) and returns the same metrics on every rank, with
``distributed: {world_size, backend, device}`` added. Only rank 0 writes the checkpoint
and the JSON file and calls ``progress``. ``amp=True`` (CUDA only) trains with mixed
precision.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from collections.abc import Callable

import torch
from torch.utils.data import TensorDataset

from lmh_deploy.errors import InputError
from lmh_deploy.files import write_json_atomic
from lmh_deploy.models import distributed as D
from lmh_deploy.models.architectures import DEFAULT_NORM, build
from lmh_deploy.models.checkpoint import save_checkpoint
from lmh_deploy.models.data import load_dataset, make_loaders
from lmh_deploy.models.job import TrainJob, check_job, timesteps_for
from lmh_deploy.models.train import TrainConfig, evaluate, train


def run_training_job(job: TrainJob, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train, write the checkpoint to ``job.out`` (and metrics to ``job.json_path``).

    Under torchrun (see the module docstring) every rank trains its part of each global
    batch and returns the same metrics; only rank 0 writes files and calls ``progress``.
    A process group this call initialised is destroyed before it returns.
    """
    check_job(job)
    ctx = D.init_from_env(job.device)
    try:
        return _run(job, ctx, progress)
    finally:
        D.shutdown(ctx)


def _run(job: TrainJob, ctx: D.DistContext, progress: Callable[[int, int, float], None] | None) -> dict:
    device = ctx.device
    torch.manual_seed(job.seed)  # same initial weights on every rank (DDP broadcasts anyway)
    train_set, test_set, spec = load_dataset(job.dataset, job.data_dir, seed=job.seed)
    if job.train_samples:  # a quick run: the first N samples of the (shuffled) split
        train_set = TensorDataset(*(t[: job.train_samples] for t in train_set.tensors))
    job = replace(job, timesteps=timesteps_for(job, spec))
    train_loader, test_loader = make_loaders(
        train_set,
        test_set,
        batch_size=job.batch_size,
        seed=job.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    hybrid = None
    if job.hybrid_from:
        from lmh_deploy.models.checkpoint import load_checkpoint
        from lmh_deploy.models.hybrid import convert_qcfs_to_lmh

        ann, payload = load_checkpoint(job.hybrid_from)
        ds = payload["dataset"]
        if tuple(ds["input_shape"]) != tuple(spec.input_shape) or int(ds["num_classes"]) != spec.num_classes:
            raise InputError(
                f"{job.hybrid_from} was trained on {ds.get('name')} "
                f"{tuple(ds['input_shape'])}/{ds['num_classes']} classes, not on "
                f"{spec.name} {spec.input_shape}/{spec.num_classes} classes"
            )
        arch = payload["arch"]
        model, arch_kwargs = convert_qcfs_to_lmh(
            ann,
            arch=arch,
            input_shape=spec.input_shape,
            num_classes=spec.num_classes,
            arch_kwargs=payload["arch_kwargs"],
            timesteps=job.timesteps,
            factors=job.factors,
        )
        hybrid = {
            "ann": job.hybrid_from,
            "levels": int(arch_kwargs.get("qcfs_levels", 4)),
            "timesteps": job.timesteps,
            "ann_accuracy": evaluate(ann.to(device), test_loader, device=device),
            "converted_accuracy": evaluate(model.to(device), test_loader, device=device),
        }
    else:
        arch = job.arch
        norm = DEFAULT_NORM[arch] if job.norm == "auto" else job.norm
        arch_kwargs = {
            "neuron": job.neuron,
            "factors": job.factors,
            "timesteps": job.timesteps,
            "width_mult": job.width_mult,
            "norm": norm,
        }
        if job.neuron == "qcfs":
            arch_kwargs["qcfs_levels"] = job.qcfs_levels
        if job.neuron == "lif":
            arch_kwargs["lif_decay"] = job.lif_decay
        model = build(arch, spec.input_shape, spec.num_classes, **arch_kwargs)
    cfg = TrainConfig(
        epochs=job.epochs,
        lr=job.lr,
        weight_decay=job.weight_decay,
        loss=job.loss,
        seed=job.seed,
        device=device,
        time_slice=job.time_slice or None,
        timesteps=job.timesteps,
        amp=job.amp,
    )
    metrics = train(model, train_loader, test_loader, cfg, progress=progress if ctx.is_main else None)
    if hybrid is not None:
        metrics["hybrid"] = hybrid
    chance = 1.0 / spec.num_classes
    if job.epochs and metrics["accuracy"] <= chance + 0.05:
        metrics["warning"] = (
            f"test accuracy {metrics['accuracy']:.3f} is at chance level "
            f"(1/{spec.num_classes} = {chance:.3f}): the network did not learn; "
            f"try more --epochs or a larger --lr"
        )
    metrics["job"] = asdict(job)
    metrics["arch"] = arch
    metrics["arch_kwargs"] = arch_kwargs
    if ctx.distributed:
        metrics["distributed"] = ctx.as_dict()
    dataset = {
        "name": spec.name,
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "x_max": 1.0,
        "seed": job.seed,
        "data_dir": job.data_dir,
        "frames": spec.timesteps,
        "spikes": spec.spikes,
    }
    if ctx.is_main:  # every rank holds the same weights; one writes them
        save_checkpoint(
            job.out,
            model.cpu(),
            arch=arch,
            arch_kwargs=arch_kwargs,
            dataset=dataset,
            metrics={k: v for k, v in metrics.items() if k != "history"},
        )
        if job.json_path:
            write_json_atomic(job.json_path, metrics)
    else:
        model.cpu()
    D.barrier()  # on return, on any rank, the files exist
    return metrics
