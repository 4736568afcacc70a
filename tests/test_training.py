"""Training framework: losses, every training option on digits, time-slicing, hybrid, memory."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lmh_deploy.models.architectures import build, mlp
from lmh_deploy.models.checkpoint import load_checkpoint, save_checkpoint
from lmh_deploy.models.data import load_dataset, make_loaders
from lmh_deploy.models.hybrid import IF_FACTORS, convert_qcfs_to_lmh
from lmh_deploy.models.losses import rate_ce, tet_loss
from lmh_deploy.models.neuron import spike_fn
from lmh_deploy.models.qcfs import QCFS
from lmh_deploy.models.train import (
    SavedTensorMeter,
    TrainConfig,
    evaluate,
    evaluate_per_timestep,
    train,
    train_step,
)
from lmh_deploy.models.training_job import TrainJob, run_training_job

JSON_KEYS = {"accuracy", "epochs", "peak_memory_bytes", "seconds_per_epoch"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    train_set, test_set, spec = load_dataset("digits", seed=0)
    return train_set, test_set, spec


# --------------------------------------------------------------------------- losses by hand


def test_tet_matches_its_definition_on_a_hand_example() -> None:
    """T = 2, B = 1, 2 classes, label 0.

    O_1 = (0, 0):      CE = -log(1/2) = log 2
    O_2 = (log 3, 0):  softmax = (3/4, 1/4), CE = -log(3/4) = log(4/3)
    TET = (log 2 + log 4/3) / 2 = log(8/3) / 2.
    With lam = 0.5, phi = 1: MSE over all T*B*C elements of (O - 1)^2
      = ((0-1)^2 + (0-1)^2 + (log3-1)^2 + (0-1)^2) / 4.
    The rate CE of the same outputs is CE(mean_t O_t = (log3/2, 0)) = log(1 + 3^-1/2).
    """
    out = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]], dtype=torch.float64)
    y = torch.tensor([0])
    assert tet_loss(out, y).item() == pytest.approx(math.log(8 / 3) / 2, abs=1e-12)
    mse = (3 + (math.log(3.0) - 1) ** 2) / 4
    assert tet_loss(out, y, lam=0.5, phi=1.0).item() == pytest.approx(
        0.5 * math.log(8 / 3) / 2 + 0.5 * mse, abs=1e-12
    )
    assert rate_ce(out, y).item() == pytest.approx(math.log(1 + 3**-0.5), abs=1e-12)
    # TET is the time mean of per-step CEs, for any batch
    torch.manual_seed(0)
    o, t = torch.randn(5, 7, 4), torch.randint(0, 4, (7,))
    ref = sum(F.cross_entropy(o[i], t) for i in range(5)) / 5
    assert tet_loss(o, t).item() == pytest.approx(ref.item(), rel=1e-6)


# --------------------------------------------------------------------------- every option trains

OPTIONS = {
    "lmh-progressive-ce-bn": dict(neuron="lmh", factors="progressive", loss="ce", norm="bn"),
    "lmh-radical-tet-bn": dict(neuron="lmh", factors="radical", loss="tet", norm="bn"),
    "lif-progressive-tet-bn": dict(neuron="lif", factors="progressive", loss="tet", norm="bn"),
    "lif-radical-ce-tdbn": dict(neuron="lif", factors="radical", loss="ce", norm="tdbn"),
    "qcfs-progressive-ce-bn": dict(neuron="qcfs", factors="progressive", loss="ce", norm="bn"),
    "qcfs-radical-tet-tdbn": dict(neuron="qcfs", factors="radical", loss="tet", norm="tdbn"),
    "lmh-progressive-ce-tdbn": dict(neuron="lmh", loss="ce", norm="tdbn"),
    "lmh-radical-tet-tdbn-slice2": dict(
        neuron="lmh", factors="radical", loss="tet", norm="tdbn", time_slice=2
    ),
    "cnn-lmh-tet-bn": dict(arch="cnn", width_mult=0.5, loss="tet", norm="bn"),
    "cnn-lif-ce-tdbn-slice1": dict(
        arch="cnn", width_mult=0.5, neuron="lif", loss="ce", norm="tdbn", time_slice=1
    ),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_trains_on_digits(name: str, tmp_path) -> None:
    opts = {"arch": "mlp", "width_mult": 0.5, "neuron": "lmh", "factors": "progressive", **OPTIONS[name]}
    job = TrainJob(
        dataset="digits",
        epochs=1,
        timesteps=4,
        out=str(tmp_path / "m.pt"),
        json_path=str(tmp_path / "m.json"),
        **opts,
    )
    metrics = run_training_job(job)
    # chance is 0.1; one epoch of any configuration gets well above it
    assert metrics["accuracy"] >= 0.45, (name, metrics["accuracy"])
    written = json.loads((tmp_path / "m.json").read_text())
    assert set(written) >= JSON_KEYS
    assert written["peak_memory_bytes"] > 0 and written["seconds_per_epoch"] > 0
    assert written["epochs"] == 1
    # the checkpoint rebuilds the same network
    model, payload = load_checkpoint(job.out)
    assert payload["arch_kwargs"]["neuron"] == opts["neuron"]
    assert payload["arch_kwargs"]["norm"] == opts["norm"]
    json.dumps(payload["arch_kwargs"])
    _, test_set, _ = load_dataset("digits", seed=0)
    loader = DataLoader(test_set, batch_size=128)
    assert evaluate(model, loader, timesteps=4) == pytest.approx(metrics["accuracy"])
    if opts["neuron"] == "qcfs":
        assert model(test_set.tensors[0][:3]).shape == (1, 3, 10)  # the ANN ignores time
        assert any(isinstance(m, QCFS) for m in model.layers) and not model.neurons()
    else:
        assert model(test_set.tensors[0][:3]).shape == (4, 3, 10)


def test_norm_auto_keeps_the_mlp_without_norm(tmp_path) -> None:
    job = TrainJob(epochs=0, width_mult=0.25, out=str(tmp_path / "m.pt"))
    metrics = run_training_job(job)
    assert metrics["arch_kwargs"]["norm"] == "none"
    model, _ = load_checkpoint(job.out)
    assert [type(m).__name__ for m in model.layers] == [
        "Flatten",
        "Linear",
        "LMHNeuron",
        "Linear",
        "LMHNeuron",
        "Linear",
    ]
    cnn_job = TrainJob(arch="cnn", epochs=0, width_mult=0.25, out=str(tmp_path / "c.pt"))
    assert run_training_job(cnn_job)["arch_kwargs"]["norm"] == "bn"


def test_invalid_options_are_rejected(tmp_path) -> None:
    for bad in [
        dict(neuron="relu"),
        dict(factors="fixed"),
        dict(loss="mse"),
        dict(norm="ln"),
        dict(time_slice=-1),
        dict(neuron="qcfs", time_slice=2),
        dict(arch="resnet99"),
        dict(neuron="lif", hybrid_from="x.pt"),
    ]:
        with pytest.raises(ValueError):
            run_training_job(TrainJob(epochs=0, out=str(tmp_path / "m.pt"), **bad))


def test_seed_makes_training_repeatable(tmp_path) -> None:
    def run(seed: int, name: str) -> tuple[float, dict]:
        job = TrainJob(epochs=1, width_mult=0.25, norm="bn", seed=seed, out=str(tmp_path / f"{name}.pt"))
        acc = run_training_job(job)["accuracy"]
        return acc, load_checkpoint(job.out)[1]["state_dict"]

    a1, s1 = run(3, "a")
    a2, s2 = run(3, "b")
    _, s3 = run(4, "c")
    assert a1 == a2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


# --------------------------------------------------------------------------- what training learns


def test_radical_factors_differ_per_step_and_lif_factors_stay_fixed(digits) -> None:
    train_set, test_set, spec = digits
    tl, vl = make_loaders(train_set, test_set, seed=0)
    torch.manual_seed(0)
    radical = build("mlp", spec.input_shape, 10, factors="radical", timesteps=4, width_mult=0.25, norm="bn")
    train(radical, tl, vl, TrainConfig(epochs=1, loss="tet"))
    for neuron in radical.neurons():
        table = {k: v.detach() for k, v in neuron.factor_table().items()}
        assert table["mu_d"].shape == (4, 1)
        spread = max(float(v.max() - v.min()) for v in table.values())
        assert spread > 1e-3, "the per-step factor sets did not learn different values"
        assert any(not torch.allclose(v[0], v[k]) for v in table.values() for k in (1, 2, 3))
    lif = build("mlp", spec.input_shape, 10, neuron="lif", timesteps=4, width_mult=0.25, norm="bn")
    train(lif, tl, vl, TrainConfig(epochs=1))
    for neuron in lif.neurons():
        table = neuron.factor_table()
        assert table["mu_d"].eq(0).all() and table["lam_s"].eq(0.5).all()
        assert not any(n.startswith("x_") for n, _ in neuron.named_parameters())


def test_training_gradient_skips_the_reset_path() -> None:
    """The network's gradients equal an unrolled Eq. 4 whose reset is detached, not one whose
    reset carries the surrogate gradient (dvS/dmS = 1, Eq. 8-9)."""
    torch.manual_seed(0)
    model = mlp((6,), 3, hidden=(5,), timesteps=5, theta=0.8).double()
    neuron = model.neurons()[0]
    neuron.set_factors(mu_d=0.2, mu_s=-0.15, lam_d=1.2, lam_s=0.9)
    x = torch.rand(8, 6, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (8,))
    tet_loss(model(x), y).backward()
    got = [p.grad.clone() for p in model.parameters()]

    def reference(detach_reset: bool) -> list[torch.Tensor]:
        ref = copy.deepcopy(model)
        ref.zero_grad()
        lin1, n, lin2 = ref.layers[1], ref.layers[2], ref.layers[3]
        f = n.factor_table()
        cur = lin1(x)
        v_d, v_s, outs = torch.zeros_like(cur), torch.full_like(cur, 0.4), []
        for _ in range(5):
            v_d = f["mu_d"][0] * v_d + f["mu_s"][0] * v_s + cur
            m_s = f["lam_s"][0] * v_s + f["lam_d"][0] * v_d
            s = spike_fn(m_s - 0.8, 1.0) * 0.8
            v_s = m_s - (s.detach() if detach_reset else s)
            outs.append(lin2(s))
        tet_loss(torch.stack(outs), y).backward()
        return [p.grad.clone() for p in ref.parameters()]

    for g, r in zip(got, reference(detach_reset=True)):
        torch.testing.assert_close(g, r)
    assert not all(torch.allclose(g, r) for g, r in zip(got, reference(detach_reset=False)))


# --------------------------------------------------------------------------- time-slicing


@pytest.mark.parametrize("factors", ["progressive", "radical"])
def test_stateful_slices_reproduce_the_full_forward(factors: str) -> None:
    torch.manual_seed(0)
    model = build("cnn", (1, 8, 8), 4, factors=factors, timesteps=6, width_mult=0.25).eval()
    for n in model.neurons():  # distinct per-step factors make a wrong step offset visible
        for name in ("x_mu_d", "x_mu_s", "x_lam_d", "x_lam_s"):
            getattr(n, name).data.normal_(0, 1.5)
    x = torch.rand(3, 1, 8, 8) * 3
    full = model(x, 6)
    model.set_stateful(True)
    parts = []
    for k in (2, 3, 1):
        parts.append(model(x, k))
        model.detach_state()
    model.set_stateful(False)
    torch.testing.assert_close(torch.cat(parts), full)


def test_no_graph_is_kept_across_slices() -> None:
    """After each slice the state is detached; slice 2's loss reaches only slice 2's frames."""
    torch.manual_seed(0)
    model = build("mlp", (1, 4, 4), 3, timesteps=4, hidden=(16,))
    x = (torch.rand(4, 5, 1, 4, 4) * 3).requires_grad_(True)  # time-major frames
    y = torch.randint(0, 3, (5,))
    model.set_stateful(True)
    tet_loss(model(x[:2], 2), y).backward()
    model.detach_state()
    for n in model.neurons():
        assert n.v_d.grad_fn is None and not n.v_d.requires_grad
        assert n.v_s.grad_fn is None and not n.v_s.requires_grad
    x.grad = None
    tet_loss(model(x[2:], 2), y).backward()
    assert x.grad[:2].abs().sum() == 0 and x.grad[2:].abs().sum() > 0
    model.set_stateful(False)
    # full BPTT, for contrast: the last steps' loss reaches the first frames
    x.grad = None
    tet_loss(model(x, 4)[2:], y).backward()
    assert x.grad[:2].abs().sum() > 0


def _saved_bytes(timesteps: int, time_slice: int | None) -> int:
    torch.manual_seed(0)
    model = build("cnn", (1, 8, 8), 10, timesteps=timesteps, width_mult=0.5, norm="bn")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    meter = SavedTensorMeter.for_model(model)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    steps = train_step(model, opt, tet_loss, x, y, timesteps=timesteps, time_slice=time_slice, meter=meter)[1]
    assert steps == (math.ceil(timesteps / time_slice) if time_slice else 1)
    return meter.peak


def test_activation_memory_grows_with_the_slice_not_with_T() -> None:
    s4, s8 = _saved_bytes(4, 2), _saved_bytes(8, 2)
    f4, f8 = _saved_bytes(4, None), _saved_bytes(8, None)
    assert s8 == pytest.approx(s4, rel=0.05), (s4, s8)  # k = 2 at T = 4 and T = 8
    assert 1.8 <= f8 / f4 <= 2.2, (f4, f8)  # full BPTT doubles
    assert s8 / f8 < 0.35  # 2 of 8 steps, plus a little
    assert _saved_bytes(5, 2) == pytest.approx(s4, rel=0.05)  # 2 + 2 + 1 steps


def test_slice_as_long_as_T_is_full_bptt() -> None:
    torch.manual_seed(0)
    a = build("mlp", (1, 8, 8), 10, timesteps=4, width_mult=0.25, norm="bn")
    b = copy.deepcopy(a)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for model, k in ((a, None), (b, 4)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train_step(model, opt, tet_loss, x, y, timesteps=4, time_slice=k)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_time_slicing_cuts_reported_peak_memory(tmp_path) -> None:
    common = dict(dataset="digits", epochs=1, width_mult=0.5, norm="bn", loss="tet", timesteps=6)
    full = run_training_job(TrainJob(**common, out=str(tmp_path / "f.pt")))
    sliced = run_training_job(TrainJob(**common, time_slice=2, out=str(tmp_path / "s.pt")))
    ratio = sliced["peak_memory_bytes"] / full["peak_memory_bytes"]
    assert ratio <= 0.45, ratio
    assert sliced["optimizer_steps"] == 3 * full["optimizer_steps"]
    assert sliced["accuracy"] >= 0.45


def test_frame_sequences_are_time_major_and_sliced() -> None:
    """Loader batches (B, T, C, H, W) reach the network as (T, B, ...), sliced by frames."""
    torch.manual_seed(0)
    y = torch.randint(0, 2, (64,))
    x = torch.rand(64, 3, 1, 4, 4) * 0.2
    x[y == 1, 2] += 0.8  # class 1 lights up in frame 3 only
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = build("mlp", (1, 4, 4), 2, timesteps=3, hidden=(16,))
    seen = []
    model.layers[0].register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape)))
    metrics = train(model, loader, loader, TrainConfig(epochs=8, lr=0.05, loss="tet", time_slice=2))
    assert metrics["optimizer_steps"] == 8 * 4 * 2  # 8 epochs, 4 batches, slices of 2 + 1 frames
    # Flatten sees (T*B, C, H, W): 2 frames, then the third, in training; 3 in evaluation
    assert seen[:3] == [(32, 1, 4, 4), (16, 1, 4, 4), (32, 1, 4, 4)]
    assert (48, 1, 4, 4) in seen
    assert metrics["accuracy"] >= 0.9


# --------------------------------------------------------------------------- evaluation over T


def test_accuracy_per_timestep_matches_separate_runs(digits) -> None:
    _, test_set, spec = digits
    torch.manual_seed(0)
    model = build("mlp", spec.input_shape, 10, timesteps=3, width_mult=0.25, factors="radical")
    loader = DataLoader(test_set, batch_size=90)
    per_t = evaluate_per_timestep(model, loader, timesteps=5)
    assert len(per_t) == 5
    for t in range(1, 6):
        assert per_t[t - 1] == pytest.approx(evaluate(model, loader, timesteps=t))
    ann = build("mlp", spec.input_shape, 10, neuron="qcfs", width_mult=0.25)
    acc = evaluate(ann, loader)
    assert evaluate_per_timestep(ann, loader, timesteps=3) == pytest.approx([acc] * 3)


# --------------------------------------------------------------------------- hybrid training


@pytest.fixture(scope="module")
def qcfs_mlp(digits):
    train_set, test_set, spec = digits
    tl, vl = make_loaders(train_set, test_set, seed=0)
    torch.manual_seed(0)
    kwargs = dict(neuron="qcfs", qcfs_levels=4, width_mult=0.5, norm="bn")
    ann = build("mlp", spec.input_shape, 10, **kwargs)
    acc = train(ann, tl, vl, TrainConfig(epochs=2))["accuracy"]
    return ann.eval(), kwargs, acc


def test_conversion_copies_theta_and_sets_if_factors(qcfs_mlp, digits) -> None:
    ann, kwargs, _ = qcfs_mlp
    snn, snn_kwargs = convert_qcfs_to_lmh(
        ann, arch="mlp", input_shape=(1, 8, 8), num_classes=10, arch_kwargs=kwargs
    )
    assert snn_kwargs["neuron"] == "lmh" and snn_kwargs["timesteps"] == 4  # T = L
    thetas = [q.theta.item() for q in ann.modules() if isinstance(q, QCFS)]
    assert [float(n.theta) for n in snn.neurons()] == pytest.approx(thetas)
    assert len({round(t, 6) for t in thetas}) > 1 or thetas[0] != 1.0  # learned, not init
    for n in snn.neurons():
        table = {k: v.detach() for k, v in n.factor_table().items()}
        for name, value in IF_FACTORS.items():
            assert table[name].item() == value  # exactly: logit 0 is the centre of the range
        assert table["mu_s"] + table["lam_s"] == 1.0
    # weights and BN statistics are the ANN's
    sd = snn.state_dict()
    for k, v in ann.state_dict().items():
        assert torch.equal(sd[k], v), k


def test_converted_snn_reproduces_the_qcfs_ann(qcfs_mlp, digits) -> None:
    """Stated tolerances (digits, QCFS mlp trained 2 epochs, L = 4, BN in eval mode):

    * first spiking layer, T = L: spike-count rates equal the QCFS activations exactly
      (an IF neuron from theta/2 with constant input fires clip(floor(xL/theta+1/2),0,L)
      times); at T = 2L they equal QCFS with 2L levels;
    * network output at T = L: mean |SNN rate output - ANN output| <= 0.1 and the same
      class for >= 90 % of the test set (deeper layers see uneven spike trains);
    * as T grows the SNN converges to the ANN without quantization (QCFS with L -> inf,
      i.e. clip(x, 0, theta)): the mean error falls at least 8x from T = L to T = 64 L
      and decreases at every x4 step.
    """
    ann, kwargs, _ = qcfs_mlp
    _, test_set, _ = digits
    x = test_set.tensors[0]
    snn, _ = convert_qcfs_to_lmh(ann, arch="mlp", input_shape=(1, 8, 8), num_classes=10, arch_kwargs=kwargs)
    snn.eval()
    with torch.no_grad():
        # first hidden layer, exactly
        pre = snn.layers[2](snn.layers[1](x.flatten(1)).unsqueeze(0)).squeeze(0)
        q_ann = ann.layers[3]
        for t_mult in (1, 2):
            steps = 4 * t_mult
            rate = snn.layers[3](pre.unsqueeze(0).expand(steps, *pre.shape)).mean(0)
            expected = QCFS(levels=steps, theta=float(q_ann.theta))(pre)
            torch.testing.assert_close(rate, expected, rtol=0, atol=1e-5)
        y_ann = ann(x)[0]
        y_snn = snn(x, 4).mean(0)
        assert (y_snn - y_ann).abs().mean() <= 0.1
        assert (y_snn.argmax(1) == y_ann.argmax(1)).float().mean() >= 0.9
        clip_ann = copy.deepcopy(ann)
        for q in clip_ann.modules():
            if isinstance(q, QCFS):
                q.levels = 10**7
        y_clip = clip_ann(x)[0]
        errs = [float((snn(x, 4 * m).mean(0) - y_clip).abs().mean()) for m in (1, 4, 16, 64)]
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < errs[0] / 8, errs


def test_hybrid_job_converts_then_fine_tunes(qcfs_mlp, digits, tmp_path) -> None:
    ann, kwargs, ann_acc = qcfs_mlp
    save_checkpoint(
        tmp_path / "ann.pt",
        ann,
        arch="mlp",
        arch_kwargs=kwargs,
        dataset={"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10},
    )
    job = TrainJob(
        dataset="digits",
        hybrid_from=str(tmp_path / "ann.pt"),
        epochs=1,
        lr=0.002,
        loss="tet",
        timesteps=4,
        out=str(tmp_path / "snn.pt"),
        json_path=str(tmp_path / "snn.json"),
    )
    metrics = run_training_job(job)
    h = metrics["hybrid"]
    assert h["ann_accuracy"] == pytest.approx(ann_acc)
    assert h["converted_accuracy"] >= ann_acc - 0.1  # conversion keeps most of the ANN
    assert metrics["accuracy"] >= h["converted_accuracy"] - 0.05
    assert set(json.loads((tmp_path / "snn.json").read_text())) >= JSON_KEYS
    snn, payload = load_checkpoint(job.out)
    assert payload["arch_kwargs"]["neuron"] == "lmh" and payload["arch"] == "mlp"
    # fine-tuning moved the factors away from the IF point
    assert any(
        v.detach().abs().max().item() > 0
        for n in snn.neurons()
        for k, v in n.named_parameters()
        if k.startswith("x_")
    )
    with pytest.raises(ValueError, match="QCFS"):
        run_training_job(
            TrainJob(dataset="digits", hybrid_from=job.out, epochs=0, out=str(tmp_path / "x.pt"))
        )
