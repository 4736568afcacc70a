"""The Python API on live modules: compile(net) -> Deployment, typed results, save/load, export.

The issue's done-when snippet, run as written for a net trained in memory with this project's
trainer and for an snnTorch ``nn.Sequential``, in an empty working directory that stays empty
until ``save``/``export``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import lmh_deploy
from lmh_deploy.errors import InputError, MissingFileError, UserError
from lmh_deploy.models.architectures import build
from lmh_deploy.models.data import load_dataset, make_loaders
from lmh_deploy.models.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from foreign import snntorch_style as style
from foreign.training import train_digits


@pytest.fixture(scope="module")
def digits():
    train_set, test_set, spec = load_dataset("digits")
    return train_set, test_set, spec


@pytest.fixture(scope="module")
def our_net(digits):
    """An LM-H MLP trained in memory by this project's trainer."""
    train_set, test_set, spec = digits
    loaders = make_loaders(train_set, test_set, batch_size=64)
    torch.manual_seed(0)
    net = build("mlp", spec.input_shape, spec.num_classes, timesteps=4)
    train(net, *loaders, TrainConfig(epochs=3))
    return net


@pytest.fixture(scope="module")
def snntorch_net():
    torch.manual_seed(0)
    net = style.leaky_mlp(reset="zero")
    train_digits(net, timesteps=4, epochs=1)
    return net


@pytest.mark.parametrize("which", [pytest.param("our_net", marks=pytest.mark.slow), "snntorch_net"])
def test_done_when_snippet(which: str, request, digits, tmp_path: Path, monkeypatch) -> None:
    net = request.getfixturevalue(which)
    x, y = digits[1].tensors
    monkeypatch.chdir(tmp_path)
    dep = lmh_deploy.compile(net, example_input=x[:1], timesteps=4, calibration=x[:64])
    v = dep.verify(x[:64], lava_samples=2)
    assert v.ok and v.lava_equals_sim and v.agreement >= 0.95
    assert (v.samples, v.lava_samples, v.accuracy_source) == (64, 2, None)
    r = dep.run(x, labels=y)
    assert r.accuracy is not None and r.accuracy >= 0.7
    assert all(s.shape[:2] == (4, len(x)) for s in r.spikes.values()) and r.spikes
    assert r.energy.loihi > 0 and r.energy.snn_45nm > 0 and r.energy.ann > 0
    assert r.to_dict()["energy_joules"] == r.energy.loihi and r["accuracy"] == r.accuracy
    assert list(tmp_path.iterdir()) == []  # nothing written until save/export
    dep.save("build")
    assert (lmh_deploy.load("build").run(x[:8]).predictions == r.predictions[:8]).all()
    # NIR has no LM-H neuron: a general LM-H net exports as its nearest LIF (exact factors in
    # metadata); the snnTorch Leaky net is LIF and exports exactly
    assert dep.export("nir", "net.nir")["exact"] == (which != "our_net")
    proc = dep.lava_process()
    assert proc.inp.shape and proc.out.shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "net.nir"]
    lava = dep.run(x[:3], backend="lava")
    assert (lava.predictions == r.predictions[:3]).all()
    assert all((lava.spikes[k] == r.spikes[k][:, :3]).all() for k in r.spikes)


def test_inputs_loaders_frames_and_typed_results(snntorch_net, digits, tmp_path: Path) -> None:
    x, y = digits[1].tensors
    dep = lmh_deploy.compile(
        snntorch_net, input_shape=(1, 8, 8), timesteps=4, calibration=DataLoader(TensorDataset(x[:64]))
    )
    loader = DataLoader(TensorDataset(x[:40], y[:40]), batch_size=16)
    from_loader = dep.run(loader, progress=True)  # labels come with the loader
    from_numpy = dep.run(x[:40].numpy(), y[:40].numpy(), record=())
    assert (from_loader.predictions == from_numpy.predictions).all()
    assert from_loader.accuracy == from_numpy.accuracy and from_numpy.spikes == {}
    frames = np.repeat(x[None, :10].numpy(), 4, axis=0)  # (T, N, 1, 8, 8), the same image every step
    assert (dep.run(frames).predictions == from_numpy.predictions[:10]).all()
    flat = lmh_deploy.compile(snntorch_net, input_shape=(64,), timesteps=4, calibration=x[:64])
    # remembers the calibration images' shape: images and flat vectors both fit it
    assert (flat.run(x[:10]).predictions == flat.run(x[:10].reshape(10, 64)).predictions).all()
    with pytest.raises(InputError, match=r"compiled for \(N, 1, 8, 8\)"):
        flat.run(x[:10].reshape(10, 8, 8))
    v = dep.verify(x[:20], y[:20], lava_samples=0)
    assert v.lava_equals_sim is None and v.ok and v.accuracy_deployed is not None
    assert v["ran"]["lava_vs_sim"].startswith("Lava not run")
    assert "lmh0" in str(dep.summary()) and dep.summary().rows[0]["kind"] == "dense"
    assert dep.resources["cores"] >= 1


def test_bad_inputs_raise_user_errors_and_write_nothing(snntorch_net, digits, tmp_path: Path) -> None:
    x, y = digits[1].tensors
    dep = lmh_deploy.compile(snntorch_net, example_input=x[:1], timesteps=4, calibration=x[:32].numpy())
    bad = x[:8].clone()
    bad[2, 0, 1, 1] = float("nan")
    with pytest.raises(InputError, match="NaN or inf"):
        dep.run(bad)
    with pytest.raises(InputError, match=r"inputs have shape \(8, 3, 8, 8\)"):
        dep.verify(torch.zeros(8, 3, 8, 8))
    with pytest.raises(InputError, match="labels have shape"):
        dep.run(x[:8], y[:7])
    with pytest.raises(InputError, match="label 10 is outside the network's 10 classes"):
        dep.verify(x[:8], torch.full((8,), 10))
    with pytest.raises(InputError, match="lava.samples 9 exceeds"):
        dep.verify(x[:8], lava_samples=9)
    with pytest.raises(InputError, match="timesteps"):
        lmh_deploy.compile(snntorch_net, example_input=x[:1], calibration=x[:8])
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError, match="exists already"):
        dep.save(tmp_path / "mine")
    with pytest.raises(UserError, match="manifest"):
        dep.save(tmp_path / "mine", overwrite=True)  # not an artifact: never replaced
    assert list((tmp_path / "mine").iterdir()) == []
    dep.save(tmp_path / "b")
    dep.save(tmp_path / "b", overwrite=True)  # its own artifact may be replaced
    with pytest.raises(MissingFileError):
        lmh_deploy.compile(tmp_path / "net.net")
    assert sorted(os.listdir(tmp_path)) == ["b", "mine"]


def test_checkpoint_path_gives_a_deployment_writing_nothing(our_net, digits, tmp_path: Path) -> None:
    from lmh_deploy.models.checkpoint import save_checkpoint

    spec = digits[2]
    ckpt = tmp_path / "model.pt"
    save_checkpoint(
        ckpt,
        our_net,
        arch="mlp",
        arch_kwargs={"timesteps": 4},
        dataset={"name": "digits", "input_shape": list(spec.input_shape), "num_classes": 10, "seed": 0},
    )
    dep = lmh_deploy.compile(ckpt)
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    x, y = digits[1].tensors
    v = dep.verify(x[:16], y[:16], lava_samples=1)
    assert v.ok and v.result["float_vs_fixed"]["float_reference"] == "source module (PyTorch)"
    dep.save(tmp_path / "b")
    assert (tmp_path / "b" / "model.pt").is_file()
    again = lmh_deploy.load(tmp_path / "b").verify(x[:16], y[:16], lava_samples=0)
    assert again.agreement == v.agreement
