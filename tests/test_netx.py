"""`export CHECKPOINT --format netx`: the checkpoint compiled as `compile --profile loihi-lif`
compiles it, its integers written as netx layers. The file, loaded by ``netx.hdf5.Network``
and run freely (samples back to back through ``inp``, netx's per-sample reset, biases from
the file, no host writes), equals sim/ of that compiled artifact on every layer and step;
what netx cannot hold is refused in one line naming the layer."""

from __future__ import annotations


import numpy as np
from lmh_deploy.sim import simulate

import lmh_deploy  # noqa: F401  - Python 3.11 Lava import fix before any lava import
from lmh_deploy.interop.netx_artifact import netx_network_line, run_netx_artifact
from lmh_deploy.pipeline.compile import load_artifact
from lmh_deploy.semantics import integer as fx
from shared import invoke

SAMPLES = 6


def test_checkpoint_export_is_the_loihi_lif_artifact_and_runs_freely_as_sim(
    zoo_checkpoint, h5_datasets, tmp_path
) -> None:
    model = zoo_checkpoint("mlp", "lif")
    res = invoke("export", model, "--format", "netx", "-o", tmp_path / "m.net")
    assert res.exit_code == 0, res.output
    assert "compile --profile loihi-lif" in " ".join(res.output.split())
    build = tmp_path / "build"
    assert invoke("compile", model, "--profile", "loihi-lif", "-o", build).exit_code == 0
    assert invoke("export", build, "--format", "netx", "-o", tmp_path / "a.net").exit_code == 0
    art = load_artifact(build)
    steps = art.timesteps
    assert netx_network_line(tmp_path / "m.net", steps) in res.output
    written, expected = h5_datasets(tmp_path / "m.net"), h5_datasets(tmp_path / "a.net")
    assert written.keys() == expected.keys()
    for key, value in expected.items():  # the same integers as the compiled artifact
        np.testing.assert_array_equal(written[key], value, err_msg=key)
    assert np.any(written["layer/0/bias"] != 0)  # biases travel in the file
    q = art.quant_graph
    x, _ = art.dataset_split("test")
    x_int = fx.quantize_input(x[:SAMPLES], q.node("input").scale)
    ref = simulate(q, x_int, steps)
    spikes, trace, logits = run_netx_artifact(tmp_path / "m.net", x_int, steps)
    for name, s in ref.spikes.items():
        np.testing.assert_array_equal(spikes[name], s, err_msg=name)
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0
    np.testing.assert_array_equal(trace, ref.readout_trace)
    np.testing.assert_array_equal(logits, ref.logits)


def test_checkpoint_export_refuses_lmh_layers_in_one_line(zoo_checkpoint, tmp_path) -> None:
    out = tmp_path / "lmh.net"
    res = invoke("export", zoo_checkpoint("mlp", "lmh"), "--format", "netx", "-o", out)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: lmh0: "), res.output
    assert "netx holds only Lava's CUBA LIF; train with --neuron lif" in lines[0]
    assert not out.exists()
