"""`lmh-deploy compile model.net`: a lava-dl slayer CUBA Dense network saved with its own
``export_hdf5`` (the netx format) compiles to exactly the file's integers. Oracle: the same
file loaded by ``netx.hdf5.Network`` and run in Lava fixed_pt the way netx users run it
(spikes into its ``inp`` port, ``reset_interval`` between samples, no host writes): every
layer's spikes on every step equal sim/'s, and our Lava backend equals sim/."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import lmh_deploy  # noqa: F401  - the Python 3.11 Lava import fix, before any lava import
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.backends.lava.supervise import lava_session
from lmh_deploy.errors import InteropError
from lmh_deploy.frontends.netx import netx_to_graph
from lmh_deploy.models.data import load_dataset
from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.sim import simulate
from shared import invoke

SAMPLES = 12
STEPS = 8


class SlayerNet(torch.nn.Module):
    """A slayer CUBA Dense net as lava-dl's tutorials write one (``blocks`` + ``export_hdf5``)."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        from lava.lib.dl import slayer

        super().__init__()
        params = {"threshold": 1.0, "current_decay": 0.25, "voltage_decay": 0.03, "requires_grad": False}
        self.blocks = torch.nn.ModuleList(
            slayer.block.cuba.Dense(params, n_in, n_out, weight_norm=False, weight_scale=4)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def export_hdf5(self, path: Path) -> None:
        with h5py.File(path, "w") as f:
            layers = f.create_group("layer")
            for i, block in enumerate(self.blocks):
                block.export_hdf5(layers.create_group(f"{i}"))


def spike_inputs(x: np.ndarray) -> np.ndarray:
    """digits pixels in [0, 1] as the 0/1 payloads the compiled input sends (1 where >= 0.5)."""
    return (x >= 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def untrained_file(tmp_path_factory) -> Path:
    """A 64-32-10 slayer net as initialised (for the refusals: fast)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("slayer0") / "model.net"
    net = SlayerNet((64, 32, 10))
    net(torch.zeros(1, 64, 1))  # slayer sets its neuron's shape on the first call
    net.export_hdf5(path)
    return path


@pytest.fixture(scope="module")
def slayer_file(tmp_path_factory) -> Path:
    """A 64-32-10 slayer net trained 2 epochs on digits (spike counts, cross-entropy; ~25 s)."""
    torch.manual_seed(0)
    train, _, _ = load_dataset("digits")
    x = torch.from_numpy(spike_inputs(train.tensors[0].numpy().reshape(len(train.tensors[0]), -1)))
    y = train.tensors[1]
    net = SlayerNet((64, 32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _epoch in range(2):
        for i in range(0, len(x), 64):
            frames = x[i : i + 64, :, None].repeat(1, 1, STEPS)
            loss = torch.nn.functional.cross_entropy(net(frames).sum(-1), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp("slayer") / "model.net"
    net.export_hdf5(path)
    return path


def compile_file(path: Path) -> Path:
    build = path.parent / "build"
    res = invoke("compile", path, "--dataset", "digits", "--timesteps", STEPS, "-o", build)
    assert res.exit_code == 0, res.output
    return build


@pytest.fixture(scope="module")
def netx_build(slayer_file: Path) -> Path:
    return compile_file(slayer_file)


def run_netx_free(path: Path, spikes: np.ndarray, steps: int) -> list[np.ndarray]:
    """Each sample's spikes (B, n) through ``netx.hdf5.Network`` for ``steps`` steps, one after
    another (a period of ``steps + 1``; netx's ``reset_interval`` clears each layer one step
    before its first input); per layer its spikes (T, B, n) on each layer's own timeline
    (layer i receives step t's input at global step i + 2 + t)."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io

    batch, period = spikes.shape[0], steps + 1
    net = netx.hdf5.Network(net_config=str(path), reset_interval=period)
    depth = len(net.layers)
    total = batch * period + depth
    data = np.zeros((spikes.shape[1], total), np.int32)
    for b in range(batch):
        data[:, b * period : b * period + steps] = spikes[b][:, None]
    source = io.source.RingBuffer(data=data)
    source.s_out.connect(net.inp)
    sinks = []
    for layer in net.layers:
        sink = io.sink.RingBuffer(shape=layer.out.shape, buffer=total)
        layer.out.connect(sink.a_in)
        sinks.append(sink)
    with lava_session(net):  # no worker outlives the run, even on an error
        net.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        raw = [np.asarray(sink.data.get()) for sink in sinks]
    out = []
    for i, rec in enumerate(raw):
        cols = np.array([[b * period + i + 1 + t for b in range(batch)] for t in range(steps)])
        out.append(rec[:, cols].transpose(1, 2, 0) != 0)  # (T, B, n)
    return out


@pytest.mark.slow
def test_compile_keeps_the_files_integers(slayer_file: Path, netx_build: Path) -> None:
    art = load_artifact(netx_build)
    q = art.quant_graph
    assert json.loads((netx_build / "manifest.json").read_text())["profile"] == "loihi-lif"
    with h5py.File(slayer_file, "r") as f:
        for i in range(2):
            group = f["layer"][str(i)]
            np.testing.assert_array_equal(2 * q.node(f"dense{i}").weight_mant, group["weight"][()])
            node = q.node(f"lmh{i}")
            assert node.theta == int(group["neuron/vThMant"][()]) << 6
            assert int(node.mu_d[0, 0]) == 4096 - int(group["neuron/iDecay"][()])
            assert int(node.lam_s[0, 0]) == 4096 - int(group["neuron/vDecay"][()])
    assert (netx_build / "source.net").is_file()


def assert_netx_equals_sim_and_lava(path: Path, build: Path) -> None:
    """Every layer's spikes on every step: netx's free run of ``path`` == sim/ == our Lava
    backend."""
    art = load_artifact(build)
    q = art.quant_graph
    x, _ = art.dataset_split("test")
    x_int = q.node("input").quantize(x[:SAMPLES].reshape(SAMPLES, -1))
    assert set(np.unique(x_int)) <= {0, 1}
    ref = simulate(q, x_int, STEPS)
    netx_spikes = run_netx_free(path, x_int, STEPS)
    compared = 0
    for i, got in enumerate(netx_spikes):
        want = ref.spikes[f"lmh{i}"]
        differ = int((got != want).sum())
        assert differ == 0, f"lmh{i}: {differ} of {want.size} spikes differ"
        assert 0 < want.mean() < 1, f"lmh{i} is silent or saturated"
        compared += want.size
    assert compared == SAMPLES * STEPS * (32 + 10)
    lava = run_lava(q, x_int, STEPS, "fixed_pt")
    for name, want in ref.spikes.items():
        assert int((lava.spikes[name] != want).sum()) == 0, name
    np.testing.assert_array_equal(lava.logits, ref.logits)


def test_untrained_net_netx_equals_sim_and_lava(untrained_file: Path) -> None:
    assert_netx_equals_sim_and_lava(untrained_file, compile_file(untrained_file))


@pytest.mark.slow
def test_trained_net_netx_equals_sim_and_lava(slayer_file: Path, netx_build: Path) -> None:
    assert_netx_equals_sim_and_lava(slayer_file, netx_build)
    art = load_artifact(netx_build)
    x, y = art.dataset_split("test")
    q = art.quant_graph
    rec = simulate(q, q.node("input").quantize(x[:200].reshape(200, -1)), STEPS)
    assert float((rec.predictions == np.asarray(y[:200])).mean()) >= 0.5  # 2 epochs: ~67 %


def _rewrite(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        edit(f["layer"])
    return dst


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda g: g["1"]["neuron"].pop("vThMant"), r"layer 1 neuron: field 'vThMant' is missing"),
        (lambda g: g["0"].pop("weight"), r"layer 0.*'weight' is missing"),
        (
            lambda g: (g["1"]["neuron"].pop("type"), g["1"]["neuron"].create_dataset("type", data=b"SDNN")),
            r"layer 1: neuron type 'SDNN' is not supported; 'dense' layers with 'CUBA' neurons",
        ),
        (
            lambda g: (g["1"].pop("type"), g["1"].create_dataset("type", (1,), "S10", [b"pool"])),
            r"layer 1: layer type 'pool' is not supported",
        ),
    ],
)
def test_bad_netx_files_fail_in_one_line(untrained_file: Path, tmp_path: Path, edit, message: str) -> None:
    bad = _rewrite(untrained_file, tmp_path / "bad.net", edit)
    with pytest.raises(InteropError, match=message):
        netx_to_graph(bad)
    res = invoke("compile", bad, "--dataset", "digits", "-o", tmp_path / "out")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "out").exists()
