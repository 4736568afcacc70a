"""Shared fixtures: seeded random LM-H MLPs and their float / integer graphs.

The fixtures return builder functions (not objects) so that each test picks its
own seed, sizes and factor configuration.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pytest
import torch

import lmh_deploy  # noqa: F401  - the Python 3.11 Lava import fix, before any lava import
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.ir import Graph
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.models.architectures import SpikingNet

sys.path.insert(0, str(Path(__file__).parent))  # the test modules import shared.py, foreign/
from shared import random_mlp


@pytest.fixture
def make_mlp() -> Callable[..., SpikingNet]:
    """Builder ``make_mlp(seed, **options)`` of a seeded random LM-H MLP (``shared.random_mlp``)."""
    return random_mlp


def _compile(
    model: SpikingNet, *, n_in: int, timesteps: int, x_max: float = 1.0
) -> tuple[Graph, Graph, dict]:
    graph = export_model(model, input_shape=(n_in,), x_max=x_max, timesteps=timesteps)
    qgraph, report = quantize_graph(graph)
    return graph, qgraph, report


@pytest.fixture
def compile_model() -> Callable[..., tuple[Graph, Graph, dict]]:
    """Builder ``compile_model(model, n_in=, timesteps=, x_max=)``.

    Returns ``(float graph, integer graph, quantisation report)``.
    """
    return _compile


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn digits (8x8, one channel): train images, labels, test images, labels."""
    from lmh_deploy.models.data import load_dataset

    train, test, _ = load_dataset("digits")
    return train.tensors[0], train.tensors[1], test.tensors[0], test.tensors[1]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: small networks run faster so, and on a shared 2-core machine two
    spinning OpenMP threads per process slow everything down several-fold."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------- the zoo, trained once
#: Every zoo network at a small width, trained through the CLI for one epoch on 32 digits.
ZOO_TRAIN = (
    "--dataset",
    "digits",
    "--width-mult",
    "0.125",
    "--epochs",
    "1",
    "--timesteps",
    "2",
    "--train-samples",
    "32",
    "--batch-size",
    "16",
)


@pytest.fixture(scope="session")
def zoo_checkpoint(tmp_path_factory) -> Callable[[str, str], Path]:
    """Builder ``zoo_checkpoint(arch, neuron)``: a tiny trained checkpoint, one per session."""
    from typer.testing import CliRunner

    from lmh_deploy.cli import app

    root = tmp_path_factory.mktemp("zoo")
    cache: dict[tuple[str, str], Path] = {}

    def get(arch: str, neuron: str) -> Path:
        if (arch, neuron) not in cache:
            path = root / f"{arch}-{neuron}.pt"
            res = CliRunner().invoke(
                app, ["train", "--arch", arch, "--neuron", neuron, *ZOO_TRAIN, "--out", str(path)]
            )
            assert res.exit_code == 0, res.output
            cache[arch, neuron] = path
        return cache[arch, neuron]

    return get


@dataclass(frozen=True)
class ExportedConvNet:
    """A LIF conv net trained through the CLI and its ``export --format nir`` file."""

    checkpoint: Path
    nir_file: Path
    timesteps: int
    x: torch.Tensor  #: 200 test digits, (200, 1, 8, 8)
    source: torch.Tensor  #: the checkpoint's own logits on ``x`` (rate over the timesteps)


@pytest.fixture(scope="session")
def lif_cnn_nir(tmp_path_factory) -> ExportedConvNet:
    """Conv2d -> BN -> LIF -> AvgPool2d, twice, -> Flatten -> Linear (``--arch cnn --neuron
    lif``), trained 4 epochs on 512 digits (about 84 % test accuracy) and exported to NIR,
    both through the command line as a user does; the reverse-import tests load the file
    into snnTorch and norse."""
    from typer.testing import CliRunner

    from lmh_deploy.cli import app
    from lmh_deploy.models.checkpoint import load_checkpoint
    from lmh_deploy.models.data import load_dataset

    root = tmp_path_factory.mktemp("lif_cnn")
    ckpt, out, steps = root / "lif_cnn.pt", root / "lif_cnn.nir", 4
    train = ("--dataset", "digits", "--width-mult", "0.25", "--timesteps", str(steps))
    train += ("--epochs", "4", "--train-samples", "512", "--batch-size", "16")
    for args in (
        ["train", "--arch", "cnn", "--neuron", "lif", *train, "--out", str(ckpt)],
        ["export", str(ckpt), "--format", "nir", "-o", str(out), "--samples", "20"],
    ):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    model, _ = load_checkpoint(ckpt)
    x = load_dataset("digits")[1].tensors[0][:200]
    with torch.no_grad():
        source = model(x, steps).mean(0)
    return ExportedConvNet(ckpt, out, steps, x, source)


@dataclass(frozen=True)
class ExportedResidualNet:
    """A LIF ResNet-20 (width 1/4, weights x5 so that every layer spikes) as a float IR graph,
    its NIR export and its own float run on 100 test digits."""

    graph: Graph
    nir_file: Path
    summary: dict
    x: torch.Tensor  #: 100 test digits, (100, 1, 8, 8)
    logits: np.ndarray  #: the graph's float run (simulate_float) on ``x``, rate over the steps
    timesteps: int


@pytest.fixture(scope="session")
def lif_resnet_nir(tmp_path_factory) -> ExportedResidualNet:
    """The residual export the reverse-import tests load into snnTorch and norse."""
    from lmh_deploy.backends.float.ir import simulate_float
    from lmh_deploy.interop.nir_export import write_nir
    from lmh_deploy.models.architectures import resnet20
    from lmh_deploy.models.data import load_dataset

    torch.manual_seed(0)
    model = resnet20((1, 8, 8), 10, neuron="lif", width_mult=0.25, timesteps=4).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(5.0)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.uniform_(0.0, 0.3)
    graph = export_model(model, input_shape=(1, 8, 8), timesteps=4)
    path = tmp_path_factory.mktemp("lif_resnet") / "res.nir"
    summary = write_nir(graph, path)
    x = load_dataset("digits")[1].tensors[0][:100]
    run = simulate_float(graph, x.numpy().astype(np.float64), 4)
    assert all(0 < s.mean() < 1 for s in run.spikes.values())
    assert len(set(run.logits.argmax(1))) >= 3
    return ExportedResidualNet(graph, path, summary, x, run.logits, 4)


@pytest.fixture(scope="session")
def h5_datasets() -> Callable[[Path], dict[str, np.ndarray]]:
    """``h5_datasets(path)``: every dataset of an HDF5 file by its path in the file."""
    import h5py

    def read(path: Path) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda name, obj: out.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None
            )
        return out

    return read


# ------------------------------------------------------------- mutation testing (mutmut)
@pytest.fixture(autouse=True)
def _sim_memos_cleared_under_mutmut() -> None:
    """Under mutmut (scripts/mutation.sh; mutmut sets MUTANT_UNDER_TEST), empty
    sim/'s per-process memos (compiled kernels, rule arrays, kernel forms, plans, the oneDNN
    probe) before each
    test. mutmut forks every mutant's run from a process that ran the clean tests: without
    this, a mutant of the code that builds a kernel never runs (the memo has the kernel), and
    while it records which tests call which function only the first test to build a kernel
    counts as calling that code. sim/'s thread pool (the chain's and the neuron kernel's) goes too: a
    forked child has none of its parent's threads, so work given to a pool made before the
    fork never ran (the run hung)."""
    if not os.environ.get("MUTANT_UNDER_TEST"):
        return
    from lmh_deploy.sim import fused, neuron, simulator, synapse

    neuron._POOL.clear()

    fused._KERNELS.clear()
    synapse._ONEDNN_OPS.clear()
    neuron._RULES.clear()
    neuron._FORMS.clear()
    simulator._PLANS.clear()
