"""One rank of the distributed tests (``tests/test_distributed.py``); not a test module.

Started as ``python tests/ddp_worker.py SPEC.json`` with torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) set by the
test, one process per rank. ``SPEC`` is JSON::

    {"results": "<dir>",            # this rank writes <dir>/rank<r>.pt (torch.save)
     "jobs": [{TrainJob fields}],   # run in order with run_training_job
     "sync_stats": true,            # False: BN layers normalise with the local batch only
     "own_group": false,            # true: run_training_job initialises the group itself
     "sim": {"graph": "<pickle>", "x": "<npy>", "timesteps": T}}  # optional sharded sim

The result file holds, per job, the metrics, the state dict, the progress calls this
rank saw and the files this rank wrote (checkpoints, JSON and ``Path.write_text``); for
``sim``, the pickled merged RunRecord.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import torch


def main(spec_path: str) -> None:
    torch.set_num_threads(1)  # 2 cores shared by 2 ranks
    spec = json.loads(Path(spec_path).read_text())
    from lmh_deploy.models import distributed as D
    from lmh_deploy.models.norm import TimeMajorBatchNorm
    from lmh_deploy.models.training_job import TrainJob, run_training_job

    TimeMajorBatchNorm.sync_stats = bool(spec.get("sync_stats", True))
    ctx = None if spec.get("own_group") else D.init_from_env("cpu", timeout_s=120)
    out: dict = {"jobs": []}
    try:
        for fields in spec.get("jobs", []):
            calls: list = []
            _writes.clear()
            metrics = run_training_job(TrainJob(**fields), progress=lambda e, t, a: calls.append((e, t, a)))
            out["jobs"].append(
                {
                    "metrics": {k: v for k, v in metrics.items() if k != "job"},
                    "progress_calls": calls,
                    "writes": list(_writes),
                }
            )
            out["jobs"][-1]["state_dict"] = _last_state.pop("state_dict", None)
        if "evaluate" in spec:  # a fixed model on this rank's test shard, counts reduced
            from lmh_deploy.models.checkpoint import load_checkpoint
            from lmh_deploy.models.data import load_dataset, make_loaders
            from lmh_deploy.models.train import evaluate, evaluate_per_timestep

            ev = spec["evaluate"]
            model, _ = load_checkpoint(ev["checkpoint"])
            train_set, test_set, _ = load_dataset("digits", seed=0)
            _, shard = make_loaders(
                train_set,
                test_set,
                batch_size=ev.get("batch_size", 64),
                rank=D.rank(),
                world_size=D.world_size(),
            )
            out["evaluate"] = {
                "accuracy": evaluate(model, shard, timesteps=ev["timesteps"]),
                "per_timestep": evaluate_per_timestep(model, shard, timesteps=ev["timesteps"]),
                "shard_samples": len(shard.sampler),
            }
        if "sim" in spec:
            import numpy as np

            from lmh_deploy.backends.sharding import simulate_sharded

            sim = spec["sim"]
            graph = pickle.loads(Path(sim["graph"]).read_bytes())
            x = np.load(sim["x"])
            rec = simulate_sharded(graph, x, int(sim["timesteps"]))
            out["sim"] = pickle.dumps(rec)
        out["rank"] = D.rank() if ctx is not None else int(__import__("os").environ["RANK"])
    finally:
        if ctx is not None:
            D.shutdown(ctx)
    torch.save(out, Path(spec["results"]) / f"rank{out['rank']}.pt")


#: state dict of the last trained model, captured from models.train.train
_last_state: dict = {}
#: files written by run_training_job in this process (checkpoints, text files)
_writes: list = []


def _capture_train() -> None:
    """Wrap ``models.train.train`` so the worker sees this rank's trained weights."""
    import lmh_deploy.models.train as T
    import lmh_deploy.models.training_job as J

    original = T.train

    def train(model, *args, **kwargs):
        metrics = original(model, *args, **kwargs)
        _last_state["state_dict"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return metrics

    J.train = train
    save = J.save_checkpoint

    def save_checkpoint(path, *args, **kwargs):
        _writes.append(str(path))
        return save(path, *args, **kwargs)

    J.save_checkpoint = save_checkpoint
    write_json = J.write_json_atomic

    def write_json_atomic(path, *args, **kwargs):
        _writes.append(str(path))
        return write_json(path, *args, **kwargs)

    J.write_json_atomic = write_json_atomic
    write_text = Path.write_text

    def recording_write_text(self, *args, **kwargs):
        _writes.append(str(self))
        return write_text(self, *args, **kwargs)

    Path.write_text = recording_write_text  # this worker process only


if __name__ == "__main__":
    _capture_train()
    main(sys.argv[1])
