"""One rank of the distributed tests (``tests/test_distributed.py``); not a test module.

Started as ``python tests/ddp_worker.py SPEC.json`` with torchrun's environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) set by the
test, one process per rank. ``SPEC`` is JSON::

    {"results": "<dir>",            # this rank writes <dir>/rank<r>.pt (torch.save)
     "jobs": [{TrainJob fields}],   # run in order with run_training_job
     "sync_stats": true,            # False: BN layers normalise with the local batch only
     "own_group": false,            # true: run_training_job initialises the group itself
     "sim": {"graph": "<pickle>", "x": "<npy>", "timesteps": T}}  # optional sharded sim

The result file holds, per job, the metrics, the state dict and the number of progress
calls this rank saw; for ``sim``, the merged RunRecord fields.
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
    from models import distributed as D
    from models.norm import _TimeMajorBatchNorm
    from models.training_job import TrainJob, run_training_job

    _TimeMajorBatchNorm.sync_stats = bool(spec.get("sync_stats", True))
    ctx = None if spec.get("own_group") else D.init_from_env("cpu", timeout_s=120)
    out: dict = {"jobs": []}
    try:
        for fields in spec.get("jobs", []):
            calls: list = []
            metrics = run_training_job(TrainJob(**fields),
                                       progress=lambda e, t, a: calls.append((e, t, a)))
            out["jobs"].append({"metrics": {k: v for k, v in metrics.items() if k != "job"},
                                "progress_calls": calls})
            out["jobs"][-1]["state_dict"] = _last_state.pop("state_dict", None)
        if "sim" in spec:
            import numpy as np

            from lmh_deploy.sharding import simulate_sharded

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


def _capture_train() -> None:
    """Wrap ``models.train.train`` so the worker sees this rank's trained weights."""
    import models.train as T
    import models.training_job as J

    original = T.train

    def train(model, *args, **kwargs):
        metrics = original(model, *args, **kwargs)
        _last_state["state_dict"] = {k: v.detach().cpu().clone()
                                     for k, v in model.state_dict().items()}
        return metrics

    J.train = train


if __name__ == "__main__":
    _capture_train()
    main(sys.argv[1])
