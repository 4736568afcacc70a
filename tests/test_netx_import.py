"""`lmh-deploy compile model.net`: a lava-dl slayer network saved with its own ``export_hdf5``
(the netx format) compiles to exactly the file's integers: CUBA ``dense`` and ``conv`` blocks,
``pool`` and ``flatten`` blocks, biases (slayer's ``MeanOnlyBatchNorm`` means).

Oracle: the same file loaded by ``netx.hdf5.Network`` and run in Lava fixed_pt the way netx
users run it: spikes into its ``inp`` port, samples back to back, netx's own per-sample reset
(``reset_interval=T, reset_offset=1``: each layer's ``u``, ``v`` cleared on the step its first
input of a sample arrives), biases from the file, no host writes. Every layer's spikes on every
step equal sim/'s, and our Lava backend equals sim/. netx 0.6 raises ``NotImplementedError`` for
a ``pool`` layer, so the oracle runs each one written as the grouped ``conv`` it is (``groups =
C``, the pool's weight on every tap of each channel's window): the only change to the file."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import lmh_deploy  # noqa: F401  - the Python 3.11 Lava import fix, before any lava import
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.errors import InteropError
from lmh_deploy.frontends.netx import netx_to_graph
from lmh_deploy.interop.netx_artifact import run_netx_free as netx_free_run
from lmh_deploy.models.data import load_dataset
from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.sim import simulate
from shared import invoke

SAMPLES = 6
STEPS = 8


def slayer_params(norm: bool) -> dict:
    from lava.lib.dl import slayer

    params = {"threshold": 1.0, "current_decay": 0.25, "voltage_decay": 0.03, "requires_grad": False}
    return {**params, "norm": slayer.neuron.norm.MeanOnlyBatchNorm} if norm else params


class SlayerNet(torch.nn.Module):
    """A slayer CUBA net as lava-dl's tutorials write one: ``blocks`` called in turn on
    ``(N, C, [H, W,] T)`` spikes, saved block by block with each block's ``export_hdf5``."""

    def __init__(self, blocks: list[torch.nn.Module]) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def export_hdf5(self, path: Path) -> None:
        with h5py.File(path, "w") as f:
            layers = f.create_group("layer")
            for i, block in enumerate(self.blocks):
                block.export_hdf5(layers.create_group(f"{i}"))


def dense_net() -> SlayerNet:
    """64-32-10 ``block.cuba.Dense``, no bias."""
    from lava.lib.dl import slayer

    p = slayer_params(norm=False)
    return SlayerNet(
        [
            slayer.block.cuba.Dense(p, 64, 32, weight_norm=False, weight_scale=4),
            slayer.block.cuba.Dense(p, 32, 10, weight_norm=False, weight_scale=4),
        ]
    )


def conv_net() -> SlayerNet:
    """``Conv(1 -> 4, 3x3, padding 1) -> Pool(2) -> Flatten -> Dense(64 -> 10)``; the conv and
    dense blocks carry slayer's ``MeanOnlyBatchNorm``, whose mean is the exported bias."""
    from lava.lib.dl import slayer

    p = slayer_params(norm=True)
    return SlayerNet(
        [
            slayer.block.cuba.Conv(p, 1, 4, 3, padding=1, weight_norm=False, weight_scale=2),
            slayer.block.cuba.Pool(slayer_params(norm=False), 2, weight_scale=1),
            slayer.block.cuba.Flatten(),
            slayer.block.cuba.Dense(p, 64, 10, weight_norm=False, weight_scale=2),
        ]
    )


def digits_spikes() -> tuple[torch.Tensor, torch.Tensor]:
    """digits pixels in [0, 1] as the 0/1 spikes the compiled input sends (1 where >= 0.5),
    (N, 1, 8, 8), and the labels."""
    train, _, _ = load_dataset("digits")
    return (train.tensors[0] >= 0.5).float(), train.tensors[1]


def frames(x: torch.Tensor, conv: bool) -> torch.Tensor:
    """The same spikes at every step: (N, 1, 8, 8, T) for a conv net, (N, 64, T) else."""
    x = x if conv else x.reshape(len(x), -1)
    return x[..., None].repeat(*([1] * x.ndim), STEPS)


def exported(net: SlayerNet, path: Path) -> Path:
    net.export_hdf5(path)
    return path


@pytest.fixture(scope="module")
def untrained_file(tmp_path_factory) -> Path:
    """The 64-32-10 dense net as initialised (fast)."""
    torch.manual_seed(0)
    net = dense_net()
    net(torch.zeros(1, 64, 1))  # slayer sets its neuron's shape on the first call
    return exported(net, tmp_path_factory.mktemp("slayer0") / "model.net")


@pytest.fixture(scope="module")
def untrained_conv_file(tmp_path_factory) -> Path:
    """The conv net as initialised; one training-mode pass over 64 digits sets its
    batch-norm means (the biases), as the first steps of training do."""
    torch.manual_seed(0)
    net = conv_net()
    x, _ = digits_spikes()
    net(frames(x[:64], conv=True))
    return exported(net, tmp_path_factory.mktemp("slayerconv0") / "model.net")


@pytest.fixture(scope="module")
def conv_build(untrained_conv_file: Path) -> Path:
    return compile_file(untrained_conv_file)


def train(net: SlayerNet, conv: bool, epochs: int) -> SlayerNet:
    """Spike counts, cross-entropy, Adam, on the digits training split."""
    x, y = digits_spikes()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _epoch in range(epochs):
        for i in range(0, len(x), 64):
            loss = torch.nn.functional.cross_entropy(net(frames(x[i : i + 64], conv)).sum(-1), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def slayer_file(tmp_path_factory) -> Path:
    """The dense net trained 2 epochs on digits (~25 s)."""
    torch.manual_seed(0)
    return exported(train(dense_net(), False, 2), tmp_path_factory.mktemp("slayer") / "model.net")


@pytest.fixture(scope="module")
def slayer_conv_file(tmp_path_factory) -> Path:
    """The conv net trained 3 epochs on digits."""
    torch.manual_seed(0)
    return exported(train(conv_net(), True, 3), tmp_path_factory.mktemp("slayerconv") / "model.net")


def compile_file(path: Path) -> Path:
    build = path.parent / "build"
    res = invoke("compile", path, "--dataset", "digits", "--timesteps", STEPS, "-o", build)
    assert res.exit_code == 0, res.output
    assert "--weight-bits auto: 8 (an imported netx file deploys its own 8-bit weights)" in res.output
    return build


def netx_runnable(src: Path, dst: Path) -> Path:
    """``src`` with each ``pool`` layer written as the grouped ``conv`` it is (netx 0.6 raises
    NotImplementedError for 'pool'): ``groups = C``, kernel ``(C, 1, kh, kw)`` of its weight."""
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        for group in f["layer"].values():
            if group["type"][()].reshape(-1)[0] != b"pool":
                continue
            channels, weight = int(group["shape"][0]), group["weight"][()]
            del group["type"], group["weight"]
            group.create_dataset("type", (1,), "S10", [b"conv"])
            group.create_dataset(
                "weight", data=np.repeat(weight.reshape(1, 1, *weight.shape[-2:]), channels, 0)
            )
            group.create_dataset("groups", data=channels)
    return dst


def run_netx_free(path: Path, spikes: np.ndarray, steps: int) -> list[np.ndarray]:
    """Each sample's spikes (B, *input shape) through ``netx.hdf5.Network`` for ``steps``
    steps, back to back (:func:`lmh_deploy.interop.netx_artifact.run_netx_free`); per layer
    its spikes (T, B, n), n in (C, H, W) order, on each layer's own timeline."""
    from lava.lib.dl import netx

    net = netx.hdf5.Network(
        net_config=str(path), reset_interval=steps, reset_offset=1, input_shape=spikes.shape[1:][::-1]
    )
    records, _ = netx_free_run(net, spikes, steps)
    return [rec != 0 for rec in records]


def assert_netx_equals_sim_and_lava(path: Path, build: Path) -> int:
    """Every layer's spikes on every step: netx's free run of ``path`` == sim/ == our Lava
    backend; returns the number of spikes compared."""
    art = load_artifact(build)
    q = art.quant_graph
    x, _ = art.dataset_split("test")
    x_int = q.node("input").quantize(x[:SAMPLES].reshape((SAMPLES, *q.node("input").shape)))
    assert set(np.unique(x_int)) <= {0, 1}
    ref = simulate(q, x_int, STEPS)
    netx_spikes = run_netx_free(netx_runnable(path, path.with_suffix(".runnable.net")), x_int, STEPS)
    assert len(netx_spikes) == len(ref.spikes)
    compared = 0
    for i, got in enumerate(netx_spikes):
        want = ref.spikes[f"lmh{i}"]
        differ = int((got != want).sum())
        assert differ == 0, f"lmh{i}: {differ} of {want.size} spikes differ"
        assert 0 < want.mean() < 1, f"lmh{i} is silent or saturated"
        compared += want.size
    lava = run_lava(q, x_int, STEPS, "fixed_pt")
    for name, want in ref.spikes.items():
        assert int((lava.spikes[name] != want).sum()) == 0, name
    np.testing.assert_array_equal(lava.logits, ref.logits)
    return compared


def test_untrained_net_netx_equals_sim_and_lava(untrained_file: Path) -> None:
    compared = assert_netx_equals_sim_and_lava(untrained_file, compile_file(untrained_file))
    assert compared == SAMPLES * STEPS * (32 + 10)


def test_conv_pool_net_with_biases_netx_equals_sim_and_lava(
    untrained_conv_file: Path, conv_build: Path
) -> None:
    with h5py.File(untrained_conv_file, "r") as f:
        kinds = [f["layer"][str(i)]["type"][0] for i in range(len(f["layer"]))]
        biases = [f["layer"][k]["bias"][()] for k in ("0", "3")]
    assert kinds == [b"conv", b"pool", b"flatten", b"dense"]
    assert all(np.any(b != 0) for b in biases)  # the batch-norm means, carried by netx's LIF
    compared = assert_netx_equals_sim_and_lava(untrained_conv_file, conv_build)
    assert compared == SAMPLES * STEPS * (4 * 8 * 8 + 4 * 4 * 4 + 10)
    assert_keeps_the_files_integers(untrained_conv_file, conv_build)


def test_verify_runs_the_float_ir_on_the_messages_the_file_receives(conv_build: Path) -> None:
    """verify's float side of a netx file is its float IR on the input messages the file's
    network receives (digits' [0, 1] pixels rounded to 0 or 1), not on the graded pixels it
    never sees. Trained slayer nets (4 epochs) agreed on 0.76 (dense 64-128-64-10) and 0.58
    (conv) of 50 predictions on graded pixels, on 1.00 and 1.00 on the messages. This untrained
    net, whose neurons sit near their thresholds, gives 0.6 of 20 predictions and 0.904 of its
    spikes on graded pixels, 0.8 and 0.945 on the messages (the float LIF's decays are not the
    file's truncating integer ones)."""
    from lmh_deploy.pipeline.verify import verify_artifact

    ff = verify_artifact(load_artifact(conv_build), 20, lava_samples=0)["float_vs_fixed"]
    assert ff["float_reference"].startswith("float IR of the netx file, on the input messages")
    assert ff["prediction_agreement"] >= 0.8 and ff["spike_agreement"] > 0.93, ff


def test_imported_file_exports_back_and_runs_freely_as_sim(conv_build: Path, tmp_path: Path) -> None:
    """The round trip covers what the export holds beyond ``--neuron lif`` nets: a current
    decay (CUBA, ``iDecay = 1024``), a pool as a conv layer, per-channel and per-neuron biases.
    ``export BUILD --format netx`` of the imported artifact, run freely by netx
    (``run_netx_artifact``: ``reset_interval=T, reset_offset=1``, no host writes) == sim/."""
    from lmh_deploy.interop.netx_artifact import run_netx_artifact

    out = tmp_path / "back.net"
    res = invoke("export", conv_build, "--format", "netx", "-o", out)
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        kinds = [f["layer"][str(i)]["type"][0] for i in range(len(f["layer"]))]
        i_decay = int(f["layer"]["1"]["neuron"]["iDecay"][()])
    assert kinds == [b"input", b"conv", b"conv", b"flatten", b"dense", b"dense"] and i_decay == 1024
    q = load_artifact(conv_build).quant_graph
    x, _ = load_artifact(conv_build).dataset_split("test")
    x_int = q.node("input").quantize(x[:SAMPLES].reshape((SAMPLES, *q.node("input").shape)))
    ref = simulate(q, x_int, STEPS)
    spikes, trace, logits = run_netx_artifact(out, x_int, STEPS)
    for name, want in ref.spikes.items():
        np.testing.assert_array_equal(spikes[name], want, err_msg=name)
    np.testing.assert_array_equal(trace, ref.readout_trace)
    np.testing.assert_array_equal(logits, ref.logits)


def assert_keeps_the_files_integers(path: Path, build: Path) -> None:
    """Weights, biases and neuron integers of every layer, as netx hands them to Lava."""
    q = load_artifact(build).quant_graph
    assert json.loads((build / "manifest.json").read_text())["profile"] == "loihi-lif"
    assert (build / "source.net").is_file()
    with h5py.File(path, "r") as f:
        groups = [g for g in f["layer"].values() if "neuron" in g]
        for i, group in enumerate(groups):
            node = q.node(f"lmh{i}")
            synapse = q.node(q.inputs_of(f"lmh{i}")[0])
            weight = group["weight"][()]
            if group["type"][0] == b"pool":  # the window's weight on each channel's diagonal
                kernel = 2 * synapse.weight_mant
                assert np.all(kernel[np.arange(len(kernel)), np.arange(len(kernel))] == weight[0, 0])
            else:
                np.testing.assert_array_equal(
                    2 * synapse.weight_mant, weight.reshape(synapse.weight_mant.shape)
                )
            bias = np.trunc(group["bias"][()]).astype(np.int64) if "bias" in group else 0
            per_neuron = np.broadcast_to(
                np.reshape(bias, (-1, 1)), (np.size(bias), node.size // np.size(bias))
            )
            np.testing.assert_array_equal(node.bias, per_neuron.reshape(-1) << 6)
            assert node.theta == int(group["neuron/vThMant"][()]) << 6
            assert int(node.mu_d[0, 0]) == 4096 - int(group["neuron/iDecay"][()])
            assert int(node.lam_s[0, 0]) == 4096 - int(group["neuron/vDecay"][()])


@pytest.mark.slow
@pytest.mark.parametrize("fixture, samples", [("slayer_file", 200), ("slayer_conv_file", None)])
def test_trained_net_netx_equals_sim_and_lava(fixture: str, samples: int | None, request) -> None:
    """A trained dense and conv slayer net: the file's integers kept, netx == sim == Lava, and
    the deployed net predicts (2 epochs: ~67 % on the dense net)."""
    path: Path = request.getfixturevalue(fixture)
    build = compile_file(path)
    assert_keeps_the_files_integers(path, build)
    assert_netx_equals_sim_and_lava(path, build)
    art = load_artifact(build)
    x, y = art.dataset_split("test")
    x, y = x[:samples], np.asarray(y[:samples])
    q = art.quant_graph
    rec = simulate(q, q.node("input").quantize(x.reshape(len(x), *q.node("input").shape)), STEPS)
    assert float((rec.predictions == y).mean()) >= 0.5


def _rewrite(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        edit(f["layer"])
    return dst


def _retype(group, kind: bytes) -> None:
    del group["type"]
    group.create_dataset("type", (1,), "S10", [kind])


def _replace(group, key: str, data) -> None:
    del group[key]
    group.create_dataset(key, data=data)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda g: g["1"]["neuron"].pop("vThMant"), r"layer 1 neuron: field 'vThMant' is missing"),
        (lambda g: g["0"].pop("weight"), r"layer 0.*'weight' is missing"),
        (
            lambda g: (g["1"]["neuron"].pop("type"), g["1"]["neuron"].create_dataset("type", data=b"SDNN")),
            r"layer 1: neuron type 'SDNN' is not supported; 'input' \(shape only\), 'conv', 'pool'",
        ),
        (lambda g: _retype(g["1"], b"average"), r"layer 1: layer type 'average' is not supported"),
        (
            lambda g: g["1"].create_dataset("bias", data=np.full(10, 5000.0)),
            r"layer 1: bias in \[5000, 5000\] exceeds Lava LIF's 13-bit bias_mant",
        ),
        (
            lambda g: g["0"].create_dataset("delay", data=np.ones(32)),
            r"layer 0: field 'delay' \(axonal delays / recurrence\) is not supported",
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


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda g: _replace(g["0"], "groups", 2), r"layer 0: groups = 2"),
        (lambda g: g["0"]["neuron"].pop("iDecay"), r"layer 0 neuron: field 'iDecay' is missing"),
        (lambda g: g.pop("2"), r"layer 3: a dense layer after a \(4, 4, 4\) map needs a 'flatten' layer"),
        (
            lambda g: _replace(g["1"], "weight", np.arange(4.0).reshape(1, 1, 2, 2) * 2),
            r"layer 1: pool weight of shape \(1, 1, 2, 2\) is not one value",
        ),
    ],
)
def test_bad_conv_files_fail_in_one_line(
    untrained_conv_file: Path, tmp_path: Path, edit, message: str
) -> None:
    bad = _rewrite(untrained_conv_file, tmp_path / "bad.net", edit)
    with pytest.raises(InteropError, match=message):
        netx_to_graph(bad, input_shape=(1, 8, 8))
    res = invoke("compile", bad, "--dataset", "digits", "-o", tmp_path / "out")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "out").exists()


def test_a_first_conv_layer_needs_the_input_shape(untrained_conv_file: Path, tmp_path: Path) -> None:
    """netx needs ``input_shape`` for a file without an 'input' layer; compile takes the
    dataset's."""
    res = invoke("compile", untrained_conv_file, "--timesteps", STEPS, "-o", tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert "a conv layer first and no 'input' layer giving the image shape; pass --dataset" in " ".join(
        res.output.split()
    )
    assert not (tmp_path / "out").exists()
