"""Trained networks of the paper's kinds deploy from another working directory (slow: CI).

Each net is built as the paper's main.py builds it, from the builder file inside the fake
clone (tests/paper_clone/deploy_model.py: MaxPool -> AvgPool, ReLU -> QCFS -> LearnableNeuron,
BatchNorm2d -> TEBN), trained 6 epochs with surrogate gradients on a learnable CIFAR-shaped
task (scikit-learn's digits upsampled to 3 x 32 x 32 with a random foreground and background
colour per image, then normalised with CIFAR-10's mean and std as the paper's dataprocess.py
does: values about -2.4 ... 2.7), saved as a state_dict, and compiled, verified and run by the
``lmh-deploy`` command as a subprocess whose working directory is a temporary folder outside
the clone. Checked: Lava == sim/ on the Lava samples (0 spikes, states and readout values
differ) and the source module (PyTorch, as the paper's ``eval_snn`` runs it) vs the deployed
integers (sim/) on 128 test images.

Issue 21 asks >= 95 % prediction agreement. Measured with 16-bit signed input messages (one
run each, 128 images; bench/paper_agreement.py runs the same): cifarnet with its VotingLayer
100 % (6 epochs, 71 % accurate); the narrow ResNet-20 shape trained 10 epochs 99.2 % per step
(91 % accurate), 96.9 % with TEBN (88 %) and 96.9 % with OnlineNeuron (88 %). Trained 6 epochs
the residual nets agreed on only 93.8 %, 89.1 % and 94.5 % (55-65 % accurate): on nets this
little trained most disagreements are near-ties of the summed output, which the remaining
roundings (8-bit weights, 12-bit factors, thresholds; not measured one by one) flip.

The paper's hybrid route (QCFS ANN trained, then ``replace_QCFS_by_Lneuron``; main.py) is
tested on the narrow ResNet-20 with TEBN: 6 ANN epochs, no SNN training, source and deployed
99.2 % accurate on 128 images, 100 % agreement.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_paper_layer_kinds import BUILDER, builder  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

T = 4
CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465])
CIFAR10_STD = np.array([0.2023, 0.1994, 0.2010])
SAMPLES = 128  # verified and run
LAVA_SAMPLES = 4
# narrow nets: the paper's ResNet-20 has stages (3, 3, 3) of width 16, 32, 64; one block per
# stage at width 8 keeps its shape (three stages, strided shortcuts) at a CI budget
RESNET = {"arch": "resnet20", "width": 8, "blocks": [1, 1, 1]}
KINDS = {
    "resnet20": RESNET,  # called once per step (the paper's default)
    "resnet20-TEBN": {**RESNET, "use_TEBN": True},  # all T steps in one (T*N, ...) call
    "resnet20-online": {**RESNET, "online": True},  # OnlineNeuron (time-slicing online training)
    "cifarnet-VotingLayer": {"arch": "cifarnet", "channels": 8, "hw": 32},
}
#: training epochs: the residual nets 10 (about 90 % accurate; at 6, 55-65 %, most
#: disagreements were near-ties), cifarnet 6
EPOCHS = {"resnet20": 10, "resnet20-TEBN": 10, "resnet20-online": 10, "cifarnet-VotingLayer": 6}
#: least prediction agreement: issue 21's 95 % (measured 96.9-100 %, see the module doc)
AGREEMENT = dict.fromkeys(KINDS, 0.95)


def digits_cifar(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits as CIFAR-10-shaped normalised colour images, shuffled."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    n = len(digits.target)
    ink = (digits.images / 16.0).repeat(4, axis=1).repeat(4, axis=2)[:, None]  # (n, 1, 32, 32)
    fg, bg = rng.uniform(0.5, 1.0, (n, 3, 1, 1)), rng.uniform(0.0, 0.4, (n, 3, 1, 1))
    img = np.clip(bg + (fg - bg) * ink + 0.05 * rng.standard_normal((n, 3, 32, 32)), 0.0, 1.0)
    x = (img - CIFAR10_MEAN[:, None, None]) / CIFAR10_STD[:, None, None]
    order = rng.permutation(n)
    return x[order].astype(np.float32), digits.target[order]


def mean_output(model: torch.nn.Module, x: torch.Tensor, time_batched: bool) -> torch.Tensor:
    """The mean output over T steps, fed as the paper's code feeds each time convention."""
    if time_batched:  # TEBN: the input repeated T times, merged into the batch, one call
        return model(x.repeat(T, 1, 1, 1)).view(T, x.shape[0], -1).mean(0)
    for m in model.modules():  # per step: states start afresh (the clone's reset_net)
        if hasattr(m, "reset"):
            m.reset()
    return torch.stack([model(x) for _ in range(T)]).mean(0)


def train(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    time_batched: bool,
    epochs: int,
    *,
    batch: int = 64,
    micro_batch: int | None = None,
    lr: float = 0.01,
    ann: bool = False,
    sgd: bool = False,
    log: Callable[[str], None] | None = None,
) -> None:
    """Adam on the cross-entropy of the mean output, mini-batches of ``batch`` images, the
    learning rate cosine-annealed from ``lr``, one torch thread (on a shared 2-core machine a
    second thread made these small tensors 10x slower in CPU time). ``micro_batch`` splits
    each mini-batch into parts whose gradients add up before the step (the same step, but
    BatchNorm's batch statistics come from each part), so that a wide net's autograd keeps only
    one part's activations; ``log`` gets each epoch's mean loss.

    ``ann``: ``model`` is the QCFS ANN (one output per image, no steps), as the paper's
    ``train_ann`` trains it; its TEBN layers see the batch as T groups, so each part is cut to
    a multiple of T images there. ``sgd``: the paper's optimiser instead of Adam (SGD, momentum
    0.9, weight decay 5e-4)."""
    torch.manual_seed(0)
    if sgd:
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4
        )
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(x) // batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.train()
    try:
        for epoch in range(epochs):
            total = 0.0
            for idx in torch.randperm(len(xt)).split(batch):
                opt.zero_grad()
                for part in idx.split(micro_batch or batch):
                    if ann and time_batched:
                        part = part[: len(part) - len(part) % T]
                    if not len(part):
                        continue
                    out = model(xt[part]) if ann else mean_output(model, xt[part], time_batched)
                    loss = torch.nn.functional.cross_entropy(out, yt[part]) * (len(part) / len(idx))
                    loss.backward()
                    total += loss.item() * len(idx)
                opt.step()
                schedule.step()
            if log:
                log(f"{'ANN ' if ann else ''}epoch {epoch + 1}/{epochs}: mean loss {total / len(xt):.4f}")
    finally:
        torch.set_num_threads(threads)
    model.eval()


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, time_batched: bool, ann: bool = False) -> np.ndarray:
    """The class of each image: the argmax of the ANN's output or of the mean output over the
    T steps (as :func:`mean_output` feeds it), in parts of 16 images, one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model.eval()
    try:
        parts = torch.as_tensor(x).split(16)
        out = [model(part) if ann else mean_output(model, part, time_batched) for part in parts]
    finally:
        torch.set_num_threads(threads)
    return torch.cat(out).argmax(1).numpy()


def lmh_deploy(*args: object, cwd: Path, timeout: float = 600) -> None:
    """The installed command, as a user runs it, from ``cwd``."""
    cmd = [sys.executable, "-m", "lmh_deploy.cli", *map(str, args)]
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"


def train_and_deploy(
    build_module: Any,
    kwargs: dict[str, Any],
    work: Path,
    *,
    epochs: int = 6,
    samples: int = SAMPLES,
    lava_samples: int = LAVA_SAMPLES,
    train_samples: int = 1200,
    batch: int = 64,
    micro_batch: int | None = None,
    lr: float = 0.01,
    sgd: bool = False,
    ann_epochs: int = 0,
    ann_lr: float = 0.05,
    ann_thresh: float = 2.0,
    log: Callable[[str], None] | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = 600,
) -> dict[str, Any]:
    """Train ``build_module.build(**kwargs)`` on :func:`digits_cifar`, save its state_dict, and
    compile, verify and run it with the ``lmh-deploy`` command from ``work/elsewhere``
    (``batch``, ``micro_batch``, ``lr``, ``sgd``, ``log``: :func:`train`'s; ``extra``: more compile
    options; ``timeout``: seconds each command may take). Returns the verify and run JSON, the
    compile report, the CPU seconds the training took and the classes the trained source
    module predicts for the ``samples`` test images.

    ``ann_epochs`` > 0 trains the paper's hybrid route first, as its main.py does: the net
    built with ``snn=False`` (QCFS activations with the initial threshold ``ann_thresh``, TEBN
    already in place of BatchNorm2d where ``use_TEBN``) trained as an ANN with the paper's SGD
    from ``ann_lr`` (:func:`train` with ``ann``), then converted in place by the clone's
    ``replace_QCFS_by_Lneuron`` (``replace_QCFS_by_Oneuron`` for ``online``): weights, BN/TEBN
    statistics and affine carry over unchanged, each QCFS's learnt ``up`` becomes its neuron's
    threshold (an OnlineNeuron starts at threshold 1 instead, as in the paper, so that net needs
    the SNN training: narrow, 3 ANN epochs, 87.5 % ANN, 18.8 % converted on 128 images); then
    ``epochs`` of SNN training (0: none) fine-tune it."""
    started = time.process_time()
    x, y = digits_cifar()
    train_x, train_y, test_x, test_y = x[:train_samples], y[:train_samples], x[1200:], y[1200:]
    test_x, test_y = test_x[:samples], test_y[:samples]
    time_batched = bool(kwargs.get("use_TEBN"))
    torch.manual_seed(0)
    hybrid: dict[str, Any] = {}
    if ann_epochs:
        model = build_module.build(snn=False, thresh=ann_thresh, **kwargs)
        train(
            model,
            train_x,
            train_y,
            time_batched,
            ann_epochs,
            batch=batch,
            lr=ann_lr,
            ann=True,
            sgd=True,
            log=log,
        )
        hybrid["ann_accuracy"] = float(np.mean(predict(model, test_x, time_batched, ann=True) == test_y))
        hybrid["ann_cpu_s"] = time.process_time() - started
        if kwargs.get("online"):
            model = build_module.replace_QCFS_by_Oneuron(
                model, time_batched, False, T, kwargs.get("time_slice", 2)
            )
        else:
            model = build_module.replace_QCFS_by_Lneuron(model, time_batched, False, T)
        hybrid["converted_accuracy"] = float(np.mean(predict(model, test_x, time_batched) == test_y))
        if log:
            log(
                f"ANN accuracy {hybrid['ann_accuracy']:.3f}, converted SNN {hybrid['converted_accuracy']:.3f}"
            )
    else:
        model = build_module.build(**kwargs)
    if epochs:
        train(
            model,
            train_x,
            train_y,
            time_batched,
            epochs,
            batch=batch,
            micro_batch=micro_batch,
            lr=lr,
            sgd=sgd,
            log=log,
        )
    train_cpu = time.process_time() - started
    source_predictions = predict(model, test_x, time_batched)
    if log:
        log(f"trained in {train_cpu:.0f} s CPU; compile, verify and run")
    torch.save(model.state_dict(), work / "snn.pth")
    np.save(work / "calib.npy", train_x[:64])
    np.save(work / "x_test.npy", test_x)
    np.save(work / "y_test.npy", test_y)
    user = work / "elsewhere"  # the working directory: neither the clone nor the tests
    user.mkdir()
    lmh_deploy(
        *("compile", work / "snn.pth", "--model", f"{BUILDER}:build"),
        *("--model-kwargs", json.dumps(kwargs)),
        *("--input-shape", "3,32,32", "--timesteps", T, "--calibration", work / "calib.npy"),
        *("-o", "build", *extra),
        cwd=user,
        timeout=timeout,
    )
    lmh_deploy(
        *("verify", "build", "--inputs", work / "x_test.npy", "--labels", work / "y_test.npy"),
        *("--samples", samples, "--lava-samples", lava_samples, "--json", "verify.json"),
        cwd=user,
        timeout=timeout,
    )
    lmh_deploy(
        *("run", "build", "--inputs", work / "x_test.npy", "--labels", work / "y_test.npy"),
        *("--samples", samples, "--json", "run.json"),
        cwd=user,
        timeout=timeout,
    )
    return {
        "verify": json.loads((user / "verify.json").read_text()),
        "run": json.loads((user / "run.json").read_text()),
        "compile": json.loads((user / "build" / "compile_report.json").read_text()),
        "train_cpu_s": train_cpu,
        "source_predictions": source_predictions,
        **hybrid,
    }


@pytest.mark.parametrize("kind", list(KINDS))
def test_trained_paper_net_deploys_from_another_directory(builder, kind: str, tmp_path: Path) -> None:  # noqa: F811
    out = train_and_deploy(builder, KINDS[kind], tmp_path, epochs=EPOCHS[kind])
    check_deployed(out, kind)


def test_hybrid_trained_paper_net_deploys_from_another_directory(builder, tmp_path: Path) -> None:  # noqa: F811
    """The paper's hybrid route (its main.py): the QCFS ANN with TEBN trained (6 epochs, SGD
    from 0.05, initial threshold 2, 25 s CPU), converted by ``replace_QCFS_by_Lneuron``
    without SNN training. Measured on 128 test images: source and deployed 99.2 % accurate,
    100 % prediction agreement, 97.4 % spike agreement."""
    kind = "resnet20-TEBN"
    out = train_and_deploy(builder, KINDS[kind], tmp_path, epochs=0, batch=16, ann_epochs=6)
    print(f"{kind}: ANN accuracy {out['ann_accuracy']:.3f}, converted {out['converted_accuracy']:.3f}")
    assert out["ann_accuracy"] >= 0.8 and out["converted_accuracy"] >= 0.8
    assert out["converted_accuracy"] == pytest.approx(out["verify"]["float_vs_fixed"]["accuracy_float"])
    check_deployed(out, kind)


def check_deployed(out: dict[str, Any], kind: str) -> None:
    """Lava == sim/ exactly on the Lava samples; the source module trained (>= 40 %, chance
    10 %) and agreeing with the deployed integers on >= :data:`AGREEMENT` of the predictions."""
    print(f"{kind}: trained in {out['train_cpu_s']:.0f} s CPU")
    check = out["verify"]
    lava, ff = check["lava_vs_sim"], check["float_vs_fixed"]
    assert check["samples"] == SAMPLES and lava["samples"] == LAVA_SAMPLES
    assert lava["mismatched_spikes"] == lava["state_mismatches"] == lava["readout_mismatches"] == 0
    assert out["compile"]["input"]["bits"] == 16 and out["compile"]["input"]["signed"]
    print(
        f"{kind}: accuracy source {ff['accuracy_float']:.3f} deployed {ff['accuracy_fixed']:.3f}, "
        f"prediction agreement {ff['prediction_agreement']:.3f}, spike agreement {ff['spike_agreement']:.4f}"
    )
    assert ff["float_reference"] == "source module (PyTorch)"
    assert ff["accuracy_float"] >= 0.4  # trained: far above chance (10 %)
    assert ff["prediction_agreement"] >= AGREEMENT[kind]
    assert out["run"]["accuracy"] == pytest.approx(ff["accuracy_fixed"])
