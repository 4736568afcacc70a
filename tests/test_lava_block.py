"""The compiled network as a Lava hierarchical Process (``inp``/``out`` ports): the program in
docs/interop.md, run as written against an artifact, gives the same spikes and logits as
``run --backend lava`` (and sim/), bit for bit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lmh_deploy.models.architectures import cnn
from lmh_deploy.models.checkpoint import save_checkpoint
from lmh_deploy.sim import simulate

import lmh_deploy  # noqa: F401  - Python 3.11 Lava import fix
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.pipeline.compile import compile_model, load_artifact
from lmh_deploy.pipeline.inputs import quantize

DOC = Path(__file__).resolve().parents[1] / "docs" / "interop.md"
DATASET = {
    "name": "digits-events",
    "input_shape": [2, 16, 16],
    "num_classes": 10,
    "x_max": 1.0,
    "seed": 0,
    "frames": 8,
    "spikes": True,
}
ARCH = {"neuron": "lmh", "factors": "progressive", "timesteps": 8, "width_mult": 0.125, "norm": "none"}


@pytest.fixture(scope="module")
def event_artifact(tmp_path_factory) -> Path:
    """A small cnn for digits-events (random weights, scaled so that every layer fires)."""
    work = tmp_path_factory.mktemp("block")
    torch.manual_seed(3)
    model = cnn((2, 16, 16), 10, **ARCH)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(3.0)
    save_checkpoint(work / "model.pt", model, arch="cnn", arch_kwargs=ARCH, dataset=DATASET)
    compile_model(work / "model.pt", work / "build", calibration_samples=8)
    return work / "build"


def _doc_program() -> str:
    text = DOC.read_text()
    match = re.search(r"<!-- lava-block-example -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/interop.md lost its Lava block example"
    return match.group(1)


def test_doc_program_equals_run_backend_lava(event_artifact: Path, capsys) -> None:
    code = _doc_program().replace('artifact = "build"', f'artifact = r"{event_artifact}"')
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    net, n, logits = scope["net"], scope["n"], scope["logits"]
    assert "predictions" in capsys.readouterr().out

    art = load_artifact(event_artifact)
    frames, _ = art.dataset_split("test")
    x_int = quantize(art.quant_graph, frames[:, :3])
    lava = run_lava(art.quant_graph, x_int, art.timesteps, "fixed_pt")  # run --backend lava
    sim = simulate(art.quant_graph, x_int, art.timesteps)
    assert np.array_equal(logits, lava.logits) and np.array_equal(logits, sim.logits)

    first = scope["first_layer"]
    t = art.timesteps
    start = net.layers.start_step[first]
    got = scope["spike_trace"][:, start : start + n * t].reshape(-1, n, t).transpose(2, 1, 0)
    assert got.shape == lava.spikes[first].shape == (t, n, art.quant_graph.node(first).size)
    assert np.array_equal(got != 0, lava.spikes[first])
    assert 0 < lava.spikes[first].mean() < 1, "the first layer should fire, not always"
    assert start == 1 and net.out_delay == 3  # conv0, conv1, dense0: one step per hop


def test_lava_network_ports_and_precisions(event_artifact: Path) -> None:
    """Port shapes follow the artifact; floating_pt builds from the float graph; a bad
    precision is refused in one line."""
    from lmh_deploy.pipeline.lava_block import lava_network

    a, b = lava_network(event_artifact), lava_network(event_artifact, precision="floating_pt")
    assert a.inp.shape == b.inp.shape == (2 * 16 * 16,)
    assert a.out.shape == (10,) and not a.input_graded
    with pytest.raises(ValueError, match="unknown precision 'fixed'"):
        lava_network(event_artifact, precision="fixed")
