"""Helpers the test modules share (``from shared import ...``; conftest puts tests/ on
``sys.path``): the command line in-process, a foreign model deployed by one command, and the
fake clone of the paper's code (tests/paper_clone) as a user's builder file loads it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from click.testing import Result
from typer.testing import CliRunner

from lmh_deploy.cli import app
from lmh_deploy.ir import LMH, QLMH, Graph, QDense, QInput, QReadout
from lmh_deploy.models.architectures import SpikingNet, mlp
from lmh_deploy.models.checkpoint import save_checkpoint
from lmh_deploy.pipeline.compile_torch import build_from_file

PAPER_CLONE = Path(__file__).parent / "paper_clone"
#: The clone's builder of digits-sized nets (8x8, one channel): ``mlp``, ``resnet``.
DIGITS_MODEL = PAPER_CLONE / "digits_model.py"


def invoke(*args: object) -> Result:
    """``lmh-deploy ARGS`` in-process; an exception that is not a user error propagates."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def invoke_ok(*args: object) -> Result:
    """:func:`invoke`, which must succeed."""
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    return res


def compile_source(
    weights: Path,
    model: str,
    out: Path,
    *,
    input_shape: str = "1,8,8",
    timesteps: int = 4,
    kwargs: Any = None,
    profile: str | None = None,
) -> Result:
    """``compile WEIGHTS --model FILE.py:FACTORY`` of a digits-sized source model, calibrated on
    digits (``kwargs``: ``--model-kwargs``; ``profile``: ``--profile``)."""
    more = ["--model-kwargs", json.dumps(kwargs)] if kwargs else []
    more += ["--profile", profile] if profile else []
    return invoke_ok(
        "compile", weights, "--model", model, *more, "--input-shape", input_shape,
        "--timesteps", timesteps, "--dataset", "digits", "-o", out,
    )  # fmt: skip


def verified(
    build: Path, report: Path, *, samples: int, agreement: float, reference: str = "source module"
) -> dict[str, Any]:
    """``verify BUILD --samples N --json REPORT``, checked: Lava equals sim/ spike for spike,
    state for state and in the readout, the float side is ``reference`` (what the network was
    compiled from), and the deployed predictions agree with it on at least ``agreement`` of
    the samples. Returns verify's JSON."""
    printed = invoke_ok("verify", build, "--samples", samples, "--json", report).output
    assert "prediction agreement" in printed, printed
    result = json.loads(report.read_text())
    lv, ff = result["lava_vs_sim"], result["float_vs_fixed"]
    print(build, lv, ff)
    assert lv["spikes_compared"] > 0 and lv["mismatched_spikes"] == 0, lv
    assert lv["state_mismatches"] == 0 and lv["readout_mismatches"] == 0, lv
    assert ff["float_reference"].startswith(reference), ff
    assert ff["prediction_agreement"] >= agreement, ff
    return result


def deploy_source(
    model: torch.nn.Module,
    spec: str,
    work: Path,
    *,
    samples: int = 50,
    agreement: float = 0.95,
    **compile: Any,
) -> dict[str, Any]:
    """Save ``model``'s state_dict, compile it with ``--model SPEC`` (:func:`compile_source`)
    and check it with :func:`verified` on ``samples`` test digits. Returns verify's JSON."""
    weights, out = work / "source.pt", work / "build"
    torch.save(model.state_dict(), weights)
    compile_source(weights, spec, out, **compile)
    return verified(out, work / "verify.json", samples=samples, agreement=agreement)


def paper_clone(factory: str, **kwargs: Any) -> Any:
    """``factory(**kwargs)`` of the clone's digits_model.py, imported as lmh-deploy imports a
    user's builder file (its folder first on ``sys.path``); a class gives an instance."""
    return build_from_file(DIGITS_MODEL, factory, kwargs, f"{DIGITS_MODEL.name}:{factory}")


#: The integer rules of a ``loihi-lif`` layer as Lava's own LIF runs it (no current decay
#: factor ``mu_s``, a voltage that keeps all of ``v_d``, set reset to 0, strict ``>``, states from 0).
QLIF_RULES = {
    "mu_s": np.zeros((1, 1), np.int64),
    "lam_d": np.full((1, 1), 4096),
    "profile": "loihi-lif",
    "reset": "set",
    "reset_value": 0,
    "threshold_test": ">",
    "v_d_init": 0,
    "v_s_init": 0,
}


def integer_chain(
    rng: np.random.Generator,
    layers: list[dict[str, Any]],
    *,
    n_in: int = 6,
    width: int = 7,
    classes: int = 3,
    timesteps: int = 6,
    readout_exp: int = 3,
) -> Graph:
    """An integer graph built directly: input -> (dense -> q_lmh)* -> dense -> readout, each
    ``layers`` entry the QLMH's fields (plus ``size``, default ``width``, and the dense's
    ``weight_exp``, default 4); random 8-bit weight mantissas, the first dense graded, and
    each dense after a layer with graded spikes (``max_spikes > 1``)."""
    g = Graph(meta={"timesteps": timesteps})
    prev = g.add("input", QInput(shape=(n_in,), scale=255.0, bits=8))
    size, graded = n_in, True
    for i, given in enumerate(layers):
        fields = dict(given)
        out, exp = fields.pop("size", width), fields.pop("weight_exp", 4)
        mant = rng.integers(-127, 128, (out, size))
        d = g.add(f"dense{i}", QDense(mant, weight_exp=exp, graded=graded, weight_scale=1.0), (prev,))
        prev = g.add(f"lmh{i}", QLMH(size=out, state_scale=1.0, **fields), (d,))
        size, graded = out, fields.get("max_spikes", 1) > 1
    mant = rng.integers(-127, 128, (classes, size))
    d = g.add(
        f"dense{len(layers)}", QDense(mant, weight_exp=readout_exp, graded=graded, weight_scale=1.0), (prev,)
    )
    g.add("readout", QReadout(bias=np.array([5, -7, 0]), state_scale=1.0), (d,))
    return g


def digits_mlp_checkpoint(path: Path, timesteps: int, *, hidden: int = 16) -> Path:
    """A seeded, untrained digits MLP (64 -> ``hidden`` -> 10, weights x3 so that it fires)
    saved as a checkpoint of ``train``: for tests that compare backends, not accuracy."""
    torch.manual_seed(0)
    model = mlp((64,), 10, hidden=(hidden,), timesteps=timesteps)
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(3.0)
    dataset = {"name": "digits", "input_shape": [64], "num_classes": 10, "x_max": 1.0, "seed": 0}
    arch_kwargs = {"hidden": [hidden], "timesteps": timesteps}
    save_checkpoint(path, model.eval(), arch="mlp", arch_kwargs=arch_kwargs, dataset=dataset)
    return path


def random_mlp(
    seed: int,
    *,
    n_in: int = 10,
    hidden: tuple[int, ...] = (12, 8),
    classes: int = 4,
    timesteps: int = 5,
    factors: str = "progressive",
    factor_std: float = 1.5,
    bias_std: float = 0.3,
    weight_gain: float = 3.0,
    set_factors: dict[str, float] | None = None,
    **arch: Any,
) -> SpikingNet:
    """A seeded MLP whose factor logits ``x_*`` are random (or set to given real factors).

    ``factors='radical'`` gives every time row its own random value. Linear biases are
    redrawn as N(0, bias_std) so that every neuron has its own, clearly non-zero bias; weights
    are scaled by ``weight_gain`` (PyTorch's default init is too weak to make deep layers fire).
    ``arch``: more options of the architecture (``neuron="lif"``, ``lif_decay``, ``theta``).
    """
    torch.manual_seed(seed)
    model = mlp((n_in,), classes, hidden=hidden, timesteps=timesteps, factors=factors, **arch)
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(weight_gain)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * bias_std)
        for neuron in model.neurons():
            if neuron.factor_mode == "fixed":
                continue
            if set_factors is not None:
                neuron.set_factors(**set_factors)
                continue
            for name in ("mu_d", "mu_s", "lam_d", "lam_s"):
                p = getattr(neuron, f"x_{name}")
                p.copy_(torch.randn(p.shape, generator=gen) * factor_std)
    return model.eval()


def plain_lmh(n: int, **over: Any) -> LMH:
    """A float LM-H layer of ``n`` neurons with no coupling between the compartments (mu 0,
    lam 1: integrate and fire), theta 1, no bias; ``over`` replaces any field."""
    fields: dict[str, Any] = dict(
        size=n,
        theta=1.0,
        mu_d=np.zeros((1, 1)),
        mu_s=np.zeros((1, 1)),
        lam_d=np.ones((1, 1)),
        lam_s=np.ones((1, 1)),
        bias=np.zeros(n),
    )
    return LMH(**{**fields, **over})


def set_item(g: Graph, name: str, field: str, index: Any, value: Any) -> None:
    """Replace node ``name`` by one whose array ``field`` has ``value`` at ``index``."""
    arr = getattr(g.node(name), field).copy()
    arr[index] = value
    g.replace(name, **{field: arr})


@contextmanager
def threads_at_any_size(threads: int) -> Iterator[None]:
    """sim/'s compiled code at ``threads`` threads (more than numba's limit, the CPU count,
    allows: ``sim_threads`` replaced), splitting the batch rows of every neuron update,
    however small (``MIN_THREAD_WORK`` 1: one neuron-step)."""
    from lmh_deploy.sim import neuron

    saved = neuron.sim_threads, neuron.MIN_THREAD_WORK
    neuron.sim_threads = lambda: threads
    neuron.MIN_THREAD_WORK = 1
    try:
        yield
    finally:
        neuron.sim_threads, neuron.MIN_THREAD_WORK = saved


def assert_source_and_float_ir_equal_own(
    src: Any, ref: Any, own_logits: np.ndarray, atol: float = 1e-5
) -> None:
    """A library net's source run (``run_source``) and the float IR's (``simulate_float``) have
    the same spikes in every layer and step, and both give the library's own run's logits."""
    for name, spikes in ref.spikes.items():
        assert np.array_equal(src.spikes[name], spikes), name
    np.testing.assert_allclose(src.logits, own_logits, atol=atol)
    np.testing.assert_allclose(ref.logits, own_logits, atol=atol)
