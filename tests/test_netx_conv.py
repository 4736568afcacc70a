"""Intel's netx as the oracle for conv nets: `train --arch cnn --neuron lif` -> `compile
--profile loihi-lif` -> `export BUILD_DIR --format netx` writes netx ``conv`` layers (each
average pooling already composed into the next convolution's kernel by the quantiser) and a
``flatten`` + ``dense`` readout; the file, loaded by ``netx.hdf5.Network(...,
input_message_bits=8, reset_interval=T, reset_offset=1)`` and run freely in Lava fixed_pt
(samples back to back through its ``inp`` port, biases from the file, no host writes), gives
the same spikes of every conv layer on every step, readout values and predictions as sim/,
bit for bit."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from lmh_deploy.sim import simulate

from lmh_deploy.interop import InteropError
from lmh_deploy.interop.netx_artifact import artifact_to_netx, netx_network_line
from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.semantics import integer as fx
from shared import invoke, invoke_ok

SAMPLES = 4


@pytest.fixture(scope="module")
def cnn_build(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("lifcnn")
    model = work / "cnn.pt"
    options = [
        "--arch",
        "cnn",
        "--neuron",
        "lif",
        "--width-mult",
        "0.25",
        "--timesteps",
        "4",
        "--epochs",
        "1",
    ]
    invoke_ok("train", "--dataset", "digits", *options, "--out", model)
    build = work / "build"
    res = invoke_ok("compile", model, "--profile", "loihi-lif", "-o", build)
    kinds = re.findall(r"^\W*((?:conv|dense)\d+)\W+(\w+)", res.output, re.M)  # the compile table's rows
    assert [kind for _, kind in kinds] == ["conv", "conv", "dense"], res.output
    return build


def test_netx_conv_export_equals_sim(cnn_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "cnn.net"
    res = invoke("export", cnn_build, "--format", "netx", "-o", out)
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the sentence, however the terminal wrapped it
    assert "2 conv" in said and "(W, H, C) frames" in said
    assert netx_network_line(out, 4) in res.output
    q = load_artifact(cnn_build).quant_graph
    with h5py.File(out, "r") as f:  # lava-dl's layout: (C, H, W) shapes, PyTorch kernels
        kinds = [f["layer"][str(i)]["type"][0].decode() for i in range(len(f["layer"]))]
        conv1 = f["layer"]["2"]
        kernel, stride = conv1["weight"][()], conv1["stride"][()]
        shape = tuple(conv1["shape"][()])
        # bias correction makes biases differ by position (zero padding at the borders):
        # written per neuron, (W, H, C) as netx hands it to Lava
        bias_dims = f["layer"]["1"]["bias"].ndim
        biases = [f["layer"][str(i)]["bias"][()] for i in (1, 2, 4)]
    assert kinds == ["input", "conv", "conv", "flatten", "dense"] and bias_dims == 3
    assert all(np.any(b != 0) for b in biases)  # the run below takes them from the file
    dense = q.node(q.inputs_of("lmh1")[0])  # pool0 -> conv1 composed: 6x6 kernel, stride 2
    assert dense.weight_mant.shape[2:] == (6, 6) and tuple(stride) == (2, 2)
    np.testing.assert_array_equal(kernel, 2 * dense.weight_mant)
    assert shape == dense.conv_node().output_shape
    art = load_artifact(cnn_build)
    x, _ = art.dataset_split("test")
    x_int = fx.quantize_input(x[:SAMPLES], q.node("input").scale)
    ref = simulate(q, x_int, art.timesteps)
    scope = {"x_int": x_int}  # the printed lines, run as a user would paste them
    exec(res.output[res.output.index("from lava.lib.dl import netx") :], scope)
    spikes, trace, logits = scope["spikes"], scope["trace"], scope["logits"]
    compared = 0
    for name, s in ref.spikes.items():
        np.testing.assert_array_equal(spikes[name], s, err_msg=name)
        compared += s.size
        assert 0 < s.mean() < 1, name
    assert compared == SAMPLES * art.timesteps * sum(q.node(n).size for n in q.of_kind("q_lmh"))
    np.testing.assert_array_equal(trace, ref.readout_trace)
    np.testing.assert_array_equal(logits, ref.logits)


def test_netx_export_of_the_conv_checkpoint_is_the_artifacts(
    cnn_build: Path, h5_datasets, tmp_path: Path
) -> None:
    """`export cnn.pt --format netx` writes what `compile cnn.pt --profile loihi-lif` and
    `export BUILD` write, dataset for dataset (so the free run above holds for it)."""
    res = invoke("export", cnn_build.parent / "cnn.pt", "--format", "netx", "-o", tmp_path / "ckpt.net")
    assert res.exit_code == 0, res.output
    assert invoke("export", cnn_build, "--format", "netx", "-o", tmp_path / "art.net").exit_code == 0
    written, expected = h5_datasets(tmp_path / "ckpt.net"), h5_datasets(tmp_path / "art.net")
    assert written.keys() == expected.keys() and "layer/1/weight" in written
    for key, value in expected.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)


def test_netx_refuses_a_residual_conv_net(tmp_path: Path) -> None:
    from lmh_deploy.frontends.pytorch import export_model
    from lmh_deploy.models.architectures import build
    from lmh_deploy.passes.quantize import quantize_graph

    model = build("resnet20", (1, 8, 8), 10, neuron="lif", timesteps=2, width_mult=0.25)
    q, _ = quantize_graph(export_model(model.eval(), input_shape=(1, 8, 8), timesteps=2), profile="loihi-lif")
    with pytest.raises(InteropError, match=r"^\w+: 2 synapse paths meet here \(a residual sum\)"):
        artifact_to_netx(q, tmp_path / "res.net")
    assert not (tmp_path / "res.net").exists()
