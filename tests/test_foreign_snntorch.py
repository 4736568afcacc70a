"""snnTorch modules (nn.Linear -> snn.Leaky(init_hidden=True) ...) deployed with their own rules.

snnTorch's semantics were read from its source (docs/interop.md): strict ``>`` spike, states
from 0, subtract reset one step late (``reset_delay=True``), zero reset = the same-step set
rule for Leaky, a one-step-late zeroing for Synaptic. These tests run snnTorch itself.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import snntorch as snn
import torch
from lmh_deploy.models.data import load_dataset

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.frontends.neurons import NeuronError
from lmh_deploy.frontends.torch_fx import module_to_graph
from lmh_deploy.backends.float.torch_source import run_source

from foreign import snntorch_style as style
from foreign.training import train_digits
from shared import deploy_source

MODEL_FILE = Path(__file__).parent / "foreign" / "snntorch_style.py"


@pytest.mark.parametrize(
    "factory, kwargs, rules",
    [
        ("leaky_mlp", {"reset": "subtract"}, ("subtract", "next-step")),
        ("leaky_mlp", {"reset": "zero"}, ("set", "same-step")),
        ("leaky_mlp", {"reset": "zero", "spiking_output": True}, ("set", "same-step")),
        ("synaptic_mlp", {"reset": "subtract"}, ("subtract", "next-step")),
        ("synaptic_mlp", {"reset": "zero"}, ("set", "next-step")),
        ("synaptic_mlp", {"reset": "zero", "reset_delay": False}, ("set", "same-step")),
        ("leaky_convnet", {"reset": "zero"}, ("set", "same-step")),
    ],
)
def test_float_ir_reproduces_snntorch_exactly(factory: str, kwargs: dict, rules: tuple) -> None:
    torch.manual_seed(0)
    model = getattr(style, factory)(**kwargs)
    with torch.no_grad():  # strong weights: membranes cross 2x threshold, resets matter
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(3.0)
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=6)
    node = graph.node("lmh0")
    assert (node.reset, node.reset_timing, node.threshold_test, node.v_s_init) == (*rules, ">", 0.0)
    x = load_dataset("digits")[1].tensors[0][:60].numpy() * 2.0
    src = run_source(
        model,
        x,
        6,
        source_neurons=graph.meta["source_neurons"],
        output_index=graph.meta["source_output_index"],
    )
    ref = simulate_float(graph, x, 6)
    for name, spikes in ref.spikes.items():
        assert 0.05 < spikes.mean() < 0.95, name
        assert np.array_equal(src.spikes[name], spikes), name  # snnTorch runs float32
    np.testing.assert_allclose(src.logits, ref.logits, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reset_mechanism": "subtract", "reset_delay": False}, "reset_delay=False"),
        ({"reset_mechanism": "none"}, "never resets"),
        ({"inhibition": True}, "inhibition"),
    ],
)
def test_unrepresentable_snntorch_rules_refused(kwargs: dict, match: str) -> None:
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 8),
        snn.Leaky(beta=0.9, init_hidden=True, **kwargs),
        torch.nn.Linear(8, 3),
    )
    with pytest.raises(NeuronError, match=rf"^2 \(Leaky\): snn.Leaky.*{match}") as info:
        module_to_graph(model, input_shape=(64,), timesteps=4)
    assert "\n" not in str(info.value)


def _deploy(tmp_path: Path, factory: str, kwargs: dict, *, epochs: int, samples: int) -> dict:
    torch.manual_seed(0)
    model = getattr(style, factory)(**kwargs)
    assert train_digits(model, epochs=epochs) > 0.8
    spec = f"{MODEL_FILE}:{factory}"
    return deploy_source(model, spec, tmp_path, samples=samples, agreement=0.97, kwargs=kwargs)


def test_snntorch_leaky_subtract_one_command(tmp_path: Path) -> None:
    _deploy(tmp_path, "leaky_mlp", {"reset": "subtract"}, epochs=2, samples=100)


def test_snntorch_leaky_with_a_learned_beta_below_one_half_deploys_under_cuba(tmp_path: Path) -> None:
    """``Leaky(beta=0.3, learn_beta=True)`` trains to beta 0.44: lam_s below profile lmh's
    1/2; a compile without --profile picks cuba, says so, and deploys it (subtract reset,
    next-step, ``>``: snnTorch's defaults, which profile loihi-lif cannot express)."""
    kwargs = {"reset": "subtract", "beta": 0.3, "learn_beta": True}
    _deploy(tmp_path, "leaky_mlp", kwargs, epochs=2, samples=50)
    report = json.loads((tmp_path / "build" / "compile_report.json").read_text())
    assert report["profile"]["name"] == "cuba"
    assert re.fullmatch(
        r"profile cuba \(no --profile given\): lmh0's membrane decay factor lam_s is 0\.4\d+, below "
        r"the 1/2 profile lmh holds \(SpikingJelly tau < 2, snnTorch beta < 0\.5\)",
        report["profile_choice"],
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "factory, kwargs, epochs",
    [
        ("leaky_mlp", {"reset": "subtract"}, 3),
        ("leaky_mlp", {"reset": "zero"}, 3),
        ("synaptic_mlp", {"reset": "zero"}, 3),
        ("leaky_convnet", {"reset": "zero"}, 6),
    ],
)
def test_snntorch_nets_deploy_on_all_test_digits(
    tmp_path: Path, factory: str, kwargs: dict, epochs: int
) -> None:
    _deploy(tmp_path, factory, kwargs, epochs=epochs, samples=360)


def test_our_nir_export_imports_into_snntorch_batched(tmp_path: Path) -> None:
    """The reverse: a deployed snnTorch net exported to NIR and loaded with snnTorch's own
    import_from_nir runs a whole batch at once (a flat Input type, no Flatten node whose
    per-sample start_dim snnTorch would apply to the batch) and gives snnTorch's outputs."""
    import nir
    from snntorch.import_nir import import_from_nir

    from lmh_deploy.interop.nir_export import write_nir

    sys.path.insert(0, str(Path(__file__).parent))
    from foreign.training import reset_neurons, run_steps

    torch.manual_seed(0)
    model = style.leaky_mlp(reset="zero")
    train_digits(model, epochs=1)
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=4)
    summary = write_nir(graph, tmp_path / "net.nir")
    assert summary["exact"] and summary["nir_native_rules"]
    net = import_from_nir(nir.read(tmp_path / "net.nir"))
    x = load_dataset("digits")[1].tensors[0][:200]
    with torch.no_grad():
        source = run_steps(model, x, 4)
        reset_neurons(net)
        imported = sum(net(x.flatten(1))[0] for _ in range(4)) / 4
    assert source.shape == imported.shape == (200, 10)
    assert float((source.argmax(1) == imported.argmax(1)).float().mean()) == 1.0
    torch.testing.assert_close(imported, source, atol=1e-5, rtol=0)


def test_our_conv_nir_export_imports_into_snntorch_batched(lif_cnn_nir) -> None:
    """The reverse for a conv net (Conv2d, AvgPool2d, Flatten, Linear, LIF), exported with
    ``lmh-deploy export --format nir``: snnTorch's import_from_nir runs 200 digits as one
    batch and predicts as the checkpoint does. The file's Flatten counts its dims from the end
    (snnTorch builds ``torch.nn.Flatten(start_dim, end_dim)`` as written and calls it on the
    batch) and its pools are Conv2d nodes (one node kind snnTorch and norse both import)."""
    import nir
    from snntorch.import_nir import import_from_nir

    from foreign.training import reset_neurons

    g = nir.read(lif_cnn_nir.nir_file)
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert {"Conv2d", "Flatten", "Affine", "LIF"} <= kinds and "AvgPool2d" not in kinds
    net = import_from_nir(g)
    with torch.no_grad():
        reset_neurons(net)
        outs = [net(lif_cnn_nir.x) for _ in range(lif_cnn_nir.timesteps)]
    imported = torch.stack([o[0] if isinstance(o, tuple) else o for o in outs]).mean(0)
    source = lif_cnn_nir.source
    assert imported.shape == source.shape == (200, 10)
    assert len(set(source.argmax(1).tolist())) >= 5  # a net that tells digits apart
    assert float((imported.argmax(1) == source.argmax(1)).float().mean()) >= 0.95
    torch.testing.assert_close(imported, source, atol=1e-4, rtol=0)


def test_our_residual_nir_export_imports_into_snntorch_batched(lif_resnet_nir) -> None:
    """A residual export (each residual sum two edges into the neuron) runs batched in
    snnTorch's import_from_nir (nirtorch's torch.fx interpreter sums converging edges) and
    gives the net's own outputs: a LIF ResNet-20 (weights x5, so that every layer spikes).
    The all-zero execution-order nodes the export adds for norse change nothing here."""
    import nir
    from snntorch.import_nir import import_from_nir

    from foreign.training import reset_neurons

    res = lif_resnet_nir
    assert sum(len(res.graph.inputs_of(n)) == 2 for n in res.graph.of_kind("lmh")) >= 3
    net = import_from_nir(nir.read(res.nir_file))
    with torch.no_grad():
        reset_neurons(net)
        outs = [net(res.x) for _ in range(res.timesteps)]
    imported = torch.stack([o[0] if isinstance(o, tuple) else o for o in outs]).mean(0).numpy()
    assert float(np.mean(imported.argmax(1) == res.logits.argmax(1))) >= 0.95
    np.testing.assert_allclose(imported, res.logits, atol=1e-5)
