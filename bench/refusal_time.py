"""How fast a careless command is refused: a fresh ``lmh-deploy`` process per call.

Cases: a missing artifact (``run``), a missing model (``compile``), an output inside the
artifact (``run --json build/x.json``), and an artifact whose ``quantized.json`` meta says
``timesteps: 1e9`` (manifest recomputed). Each is run ``--repeats`` times; the bench prints
the median wall time and the median CPU time (user + system of the child, which leaves out
waits for a core on a loaded machine) and whether torch or Lava was imported (``-X
importtime``). Goal (issue 20): well under 1 s. ``--json`` writes the numbers.

    python bench/refusal_time.py --repeats 7 --json bench/refusal_time.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import environment, load_average, save

CLI = [sys.executable, "-m", "lmh_deploy.cli"]


def _artifact(work: Path) -> Path:
    import torch

    from lmh_deploy.models.architectures import mlp
    from lmh_deploy.models.checkpoint import save_checkpoint

    arch = {"neuron": "lmh", "factors": "progressive", "timesteps": 4, "width_mult": 0.25}
    dataset = {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "x_max": 1.0, "seed": 0}
    torch.manual_seed(0)
    save_checkpoint(work / "m.pt", mlp((1, 8, 8), 10, **arch), arch="mlp", arch_kwargs=arch, dataset=dataset)
    subprocess.run(
        [*CLI, "compile", str(work / "m.pt"), "-o", str(work / "build")], check=True, capture_output=True
    )
    return work / "build"


def _bad_meta(build: Path, work: Path) -> Path:
    bad = Path(shutil.copytree(build, work / "bad"))
    doc = json.loads((bad / "quantized.json").read_text())
    doc["meta"]["timesteps"] = 10**9
    (bad / "quantized.json").write_text(json.dumps(doc))
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["quantized.json"] = hashlib.sha256((bad / "quantized.json").read_bytes()).hexdigest()
    (bad / "manifest.json").write_text(json.dumps(manifest))
    return bad


def _once(args: list[str]) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def _imports_torch_or_lava(args: list[str]) -> bool:
    proc = subprocess.run([CLI[0], "-X", "importtime", *CLI[1:], *args], capture_output=True, text=True)
    return re.search(r"\|\s+(torch|lava)$", proc.stderr, re.M) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    env = environment(threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = Path.cwd()  # back before the folder goes: the JSON's command is relative to it
        os.chdir(work)
        build = _artifact(work)
        cases = {
            "run: missing artifact": ["run", "nothere"],
            "compile: missing model": ["compile", "nothere.pt", "-o", "out"],
            "run --json inside the artifact": ["run", str(build), "--json", str(build / "x.json")],
            "run: meta timesteps 1e9": ["run", str(_bad_meta(build, work))],
        }
        rows = {}
        for name, args in cases.items():
            runs = [_once(args) for _ in range(opts.repeats)]
            assert all(r[2] == 2 for r in runs), (name, runs)
            rows[name] = {
                "wall_s": statistics.median(r[0] for r in runs),
                "cpu_s": statistics.median(r[1] for r in runs),
                "torch_or_lava_imported": _imports_torch_or_lava(args),
            }
            print(
                f"{name:34s} wall {rows[name]['wall_s']:.2f} s  cpu {rows[name]['cpu_s']:.2f} s  "
                f"torch/Lava imported: {rows[name]['torch_or_lava_imported']}"
            )
        os.chdir(home)
    print(f"load average {env['load_average_start']} -> {load_average()}")
    save(opts.json, {"cases": rows, "repeats": opts.repeats}, env)


if __name__ == "__main__":
    main()
