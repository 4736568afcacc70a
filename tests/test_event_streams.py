"""Time-varying inputs (event streams) through every stage: the digits-events dataset, spike
inputs in the IR and the quantiser, sim/ and Lava fixed_pt bit-exact with one frame per step,
the float model and float IR on frames, synops counted from the events, sharded runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lmh_deploy.models import event_data as E
from lmh_deploy.models.architectures import cnn, mlp
from lmh_deploy.models.data import DatasetSpec, load_dataset
from lmh_deploy.sim import simulate

import lmh_deploy  # noqa: F401  - Python 3.11 Lava import fix
from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.backends.lava.run import run_lava
from lmh_deploy.backends.sharding import merge_records, run_shard
from lmh_deploy.backends.float.torch_model import run_float
from lmh_deploy.frontends.pytorch import export_model
from lmh_deploy.ir.synapses import qdense_fan_out
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.pipeline.inputs import check_inputs, quantize, time_major

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- dataset


def test_digits_events_dataset_is_binary_deterministic_and_moving() -> None:
    train, test, spec = load_dataset("digits-events")
    assert spec == DatasetSpec("digits-events", (2, 16, 16), 10, timesteps=8, spikes=True)
    x = train.tensors[0].numpy()
    assert x.shape[1:] == (8, 2, 16, 16) and len(train) + len(test) == 1797
    assert set(np.unique(x)) == {0.0, 1.0}
    density = x.mean()
    assert 0.1 < density < 0.3, density  # a sparse event stream, not empty, not saturated
    # both polarities occur, in every frame
    assert (x.mean(axis=(0, 3, 4)) > 0.05).all()
    # the same stratified split as digits, and the same events every time
    _, _, digits_spec = load_dataset("digits")
    train2, _, _ = load_dataset("digits-events")
    assert torch.equal(train.tensors[0], train2.tensors[0])
    assert torch.equal(train.tensors[1], load_dataset("digits")[0].tensors[1])
    assert digits_spec.timesteps is None


def test_sensor_model_events_follow_log_intensity_changes() -> None:
    """A static (all-equal) image gives no events; a single bright pixel moving gives ON ahead,
    OFF behind."""
    flat = np.full((1, 8, 8), 0.5)
    # uniform intensity still has edges against the dark canvas; a dark image has none
    assert E.digit_events(np.zeros((1, 8, 8))).sum() == 0
    assert E.digit_events(flat).sum() > 0
    dot = np.zeros((1, 8, 8))
    dot[0, 4, 4] = 1.0
    frames = E.digit_events(dot)
    assert frames[0, :, 0].sum() > 0 and frames[0, :, 1].sum() > 0


# --------------------------------------------------------------------------- networks


def _random_cnn(seed: int, timesteps: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = cnn((2, 8, 8), 4, timesteps=timesteps, channels=(6, 8), norm="none")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(4.0)
    return model.eval()


def _event_frames(seed: int, timesteps: int, batch: int, shape=(2, 8, 8)) -> np.ndarray:
    """Time-major binary frames whose content changes every step."""
    rng = np.random.default_rng(seed)
    return (rng.random((timesteps, batch, *shape)) < 0.3).astype(np.float64)


def test_spike_input_quantises_to_one_bit_and_binary_synapses() -> None:
    model = _random_cnn(0, 4)
    graph = export_model(model, input_shape=(2, 8, 8), timesteps=4, spikes=True)
    q, report = quantize_graph(graph)
    first = q.node(q.order()[0])
    assert (first.bits, first.scale) == (1, 1.0)
    dense = [q.node(n) for n in q.of_kind("q_dense")]
    assert not any(d.graded for d in dense)  # events arrive as spikes, not 8-bit values
    assert not report["layers"][0]["graded_input"]
    graded, _ = quantize_graph(export_model(model, input_shape=(2, 8, 8), timesteps=4))
    assert graded.node(graded.order()[1]).graded


@pytest.mark.parametrize("spikes", [True, False])
def test_time_varying_inputs_lava_equals_sim(spikes: bool) -> None:
    """One frame per step through the Lava source (with the per-layer offsets) and sim/."""
    t, batch = 5, 3
    model = _random_cnn(1, t)
    graph = export_model(model, input_shape=(2, 8, 8), timesteps=t, spikes=spikes)
    q, _ = quantize_graph(graph)
    x = _event_frames(2, t + 2, batch)  # more frames than steps: the first T are used
    if not spikes:
        x = x * np.random.default_rng(3).uniform(0.2, 1.0, x.shape)
    x_int = quantize(q, x)
    ref = simulate(q, x_int, t)
    got = run_lava(q, x_int, t, "fixed_pt")
    for name in ref.spikes:
        assert ref.spikes[name].shape == (t, batch, q.node(name).size)
        assert np.array_equal(got.spikes[name], ref.spikes[name]), name
        assert 0 < ref.spikes[name].mean() < 1, name
    assert np.array_equal(got.readout_trace, ref.readout_trace)
    assert np.array_equal(got.logits, ref.logits)
    assert got.synops == ref.synops
    # input synops are the events that occurred (per frame), not frames x steps
    first = q.order()[1]
    events = np.count_nonzero(x_int[:t].reshape(t, batch, -1), axis=(0, 1))
    assert ref.synops[first] == int(events @ qdense_fan_out(q.node(first)))
    # a static presentation of frame 0 is a different run: the frames really are used
    static = simulate(q, x_int[0], t)
    assert any(not np.array_equal(static.spikes[k], ref.spikes[k]) for k in ref.spikes)


def test_float_model_and_float_ir_agree_on_frames() -> None:
    t, batch = 6, 4
    model = mlp((2, 4, 4), 3, hidden=(16,), timesteps=t).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3.0)
    graph = export_model(model, input_shape=(2, 4, 4), timesteps=t, spikes=True)
    x = _event_frames(4, t, batch, shape=(2, 4, 4))
    ref = run_float(model, x, t)
    got = simulate_float(graph, x, t)
    for name in ref.spikes:
        assert ref.spikes[name].shape == (t, batch, 16)
        assert np.array_equal(ref.spikes[name], got.spikes[name])
    assert np.allclose(ref.logits, got.logits)


def test_sharded_time_varying_run_equals_unsharded() -> None:
    t = 4
    q, _ = quantize_graph(export_model(_random_cnn(5, t), input_shape=(2, 8, 8), timesteps=t, spikes=True))
    x_int = quantize(q, _event_frames(6, t, 5))
    whole = simulate(q, x_int, t)
    parts = [run_shard(lambda xs: simulate(q, xs, t), x_int, axis=1, rank=r, world_size=2) for r in range(2)]
    merged = merge_records(parts)
    assert np.array_equal(merged.logits, whole.logits)
    for name in whole.spikes:
        assert np.array_equal(merged.spikes[name], whole.spikes[name])
    assert merged.synops == whole.synops


def test_input_checks_name_the_problem() -> None:
    shape = (2, 8, 8)
    with pytest.raises(ValueError, match="3 frames per sample, the network runs 4 steps"):
        check_inputs(np.zeros((3, 2, *shape)), shape, 4, what="x.npy")
    with pytest.raises(ValueError, match="binary event frames.*0.5"):
        check_inputs(np.full((4, 2, *shape), 0.5), shape, 4, spikes=True, what="x.npy")
    with pytest.raises(ValueError, match=r"x.npy: inputs have shape \(2, 3\)"):
        check_inputs(np.zeros((2, 3)), shape, 4, what="x.npy")
    assert time_major(np.zeros((5, 3, *shape)), shape).shape == (3, 5, *shape)
    assert time_major(np.zeros((5, *shape)), shape).shape == (5, *shape)
