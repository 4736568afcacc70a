"""Peak memory and wall time of compile, verify and run for the paper's networks at CIFAR size.

    python bench/paper_scale.py --json bench/paper_scale.json

ResNet-19 (the paper's Tab. 1 network), VGG-13 and the paper's CIFAR10Net (``cifarnet``:
six 256-channel convolutions, fc 2048, 100 spiking outputs and a VotingLayer), 3 x 32 x 32
inputs, T = 4, built as a user of the paper's code builds them: the builder file
``tests/paper_clone/deploy_model.py`` (``build``, the architecture and its size given by
``--model-kwargs``) inside the fake clone laid out like the paper's repository that the tests
use too (``from utils import *``, ``from Models.ResNet import *``; MaxPool -> AvgPool, every
ReLU -> QCFS -> the per-step ``LearnableNeuron``), weights saved as a bare state_dict. The networks are
untrained; their BatchNorm statistics are set from one training-mode pass over the
calibration images, so that every layer's input is normalised and the layers fire at
rates like a trained network's (the mean rate per layer is printed).

Every command runs as its own child process, as a user runs it, from a working directory
outside the clone; its peak resident memory is the child's ``ru_maxrss`` (``os.wait4``),
its time the wall-clock time of the whole process (imports included) and its CPU time
(user + system, children included): on a shared machine the wall time grows with the load,
the CPU time much less (on an idle machine the wall time is at most the CPU time for a
process that keeps at least one core busy). ``--repeats`` gives the median of several runs.
Inputs: synthetic CIFAR-shaped images, normalised with the paper's CIFAR-10 mean and std
(``--pixels`` sends raw [0, 1] pixels instead). Each command gets ``--threads`` torch, BLAS
and numba threads (default 1: on a shared machine more threads spin on one another).

Commands (N = ``--samples``, default 64)::

    compile W.pt --model .../deploy_model.py:build --model-kwargs ARCH --input-shape 3,32,32 --timesteps 4
            --calibration calib.npy --calibration-samples 64 -o build
    verify build --inputs x.npy --samples N --lava-samples 0
    run build --inputs x.npy --labels y.npy --samples N
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timing

HERE = Path(__file__).resolve().parent
CLONE = HERE.parent / "tests" / "paper_clone"
#: ``build``'s keywords of each network: the architecture at the paper's size
NETS = {
    "resnet19": {"arch": "resnet19"},
    "vgg13": {"arch": "vgg13"},
    "cifarnet": {"arch": "cifarnet", "channels": 256, "hw": 32, "convs": 3, "hidden": 2048},
}
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

SETUP = """
import sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
import json, deploy_model
from utils import reset_net
kwargs, out, n, pixels = json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
mean, std = np.array({mean}).reshape(3, 1, 1), np.array({std}).reshape(3, 1, 1)
rng = np.random.default_rng(0)
# smooth random images (8 x 8 blocks upsampled), pixels in [0, 1]
img = rng.random((n, 3, 8, 8)).repeat(4, axis=2).repeat(4, axis=3)
img = np.clip(img + 0.1 * rng.standard_normal(img.shape), 0.0, 1.0)
x = img if pixels else (img - mean) / std
np.save(out + "/inputs.npy", x.astype(np.float32))
np.save(out + "/labels.npy", rng.integers(0, 10, n))
torch.manual_seed(0)
model = deploy_model.build(**kwargs)
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.momentum = None  # running statistics = this batch's
model.train()
with torch.no_grad():
    model(torch.as_tensor(x[:64], dtype=torch.float32))
reset_net(model)
torch.save(model.state_dict(), out + "/weights.pt")
"""


def thread_env(threads: int) -> dict[str, str]:
    """The environment that gives each command ``threads`` torch / BLAS / numba threads."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
    return {**os.environ, **dict.fromkeys(names, str(threads))}


def measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run ``cmd`` as a child process: wall and CPU seconds, its peak RSS (GB), exit code,
    output tail."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_gb": usage.ru_maxrss / 2**20,  # KiB on Linux
        "exit_code": proc.returncode,
        "tail": out.strip().splitlines()[-3:],
    }


def commands(net: str, work: Path, samples: int, calibration: int) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "lmh_deploy.cli"]
    build, x = work / "build", work / "inputs.npy"
    cmds = {
        "compile": [
            *cli,
            "compile",
            work / "weights.pt",
            "--model",
            f"{CLONE / 'deploy_model.py'}:build",
            "--model-kwargs",
            json.dumps(NETS[net]),
            "--input-shape",
            "3,32,32",
            "--timesteps",
            "4",
            "--calibration",
            x,
            "--calibration-samples",
            calibration,
            "-o",
            build,
        ],
        "verify": [
            *cli,
            "verify",
            build,
            "--inputs",
            x,
            "--samples",
            samples,
            "--lava-samples",
            "0",
            "--json",
            work / "verify.json",
        ],
        "run": [
            *cli,
            "run",
            build,
            "--inputs",
            x,
            "--labels",
            work / "labels.npy",
            "--samples",
            samples,
            "--json",
            work / "run.json",
        ],
    }
    return {k: [str(a) for a in v] for k, v in cmds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--samples", type=int, default=64, help="verify and run samples")
    parser.add_argument("--calibration-samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each command (median)")
    parser.add_argument("--pixels", action="store_true", help="raw [0, 1] pixels, not normalised")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch/BLAS/numba threads per command (default 1)"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    env = timing.environment(threads=args.threads)
    child_env = thread_env(args.threads)
    setup = SETUP.replace("{mean}", repr(CIFAR10_MEAN)).replace("{std}", repr(CIFAR10_STD))
    rows = []
    with tempfile.TemporaryDirectory(prefix="paper-scale-") as tmp:
        for net in args.nets:
            work = Path(tmp) / net
            work.mkdir()
            n = max(args.samples, args.calibration_samples)
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    setup,
                    CLONE,
                    json.dumps(NETS[net]),
                    work,
                    str(n),
                    "1" if args.pixels else "0",
                ],
                check=True,
            )
            row: dict = {"net": net}
            for name, cmd in commands(net, work, args.samples, args.calibration_samples).items():
                runs = [measured(cmd, Path(tmp), child_env) for _ in range(args.repeats)]
                failed = [r for r in runs if r["exit_code"] != 0]
                row[name] = {
                    "seconds": round(statistics.median(r["seconds"] for r in runs), 1),
                    "cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 1),
                    "peak_rss_gb": round(statistics.median(r["peak_rss_gb"] for r in runs), 2),
                    "exit_code": failed[0]["exit_code"] if failed else 0,
                    "command": " ".join(cmd),
                }
                if failed:
                    row[name]["error"] = failed[0]["tail"]
                shown = {k: v for k, v in row[name].items() if k != "command"}
                print(net, name, json.dumps(shown), flush=True)
                if failed and name == "compile":
                    break
            if (work / "verify.json").is_file():
                ff = json.loads((work / "verify.json").read_text())["float_vs_fixed"]
                row["verify"]["prediction_agreement"] = ff["prediction_agreement"]
                row["verify"]["spike_agreement"] = ff["spike_agreement"]
            if (work / "run.json").is_file():
                layers = json.loads((work / "run.json").read_text())["layers"]
                row["firing_rate_per_layer"] = [
                    round(layer["firing_rate"], 4) for layer in layers if "firing_rate" in layer
                ]
            rows.append(row)
    timing.save(args.json, {"rows": rows}, env)


if __name__ == "__main__":
    main()
