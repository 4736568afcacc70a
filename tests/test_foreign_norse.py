"""norse nets (``SequentialState`` of torch layers and ``LIFBoxCell``) deployed with one command.

The adapter (``lmh_deploy/frontends/neurons/norse.py``) was written from norse 1.1.0's source;
these tests run norse itself, the way its users do (``out, state = model(x, state)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.frontends.torch_fx import module_to_graph

from foreign import norse_style as ns
from shared import deploy_source

MODEL_FILE = Path(__file__).parent / "foreign" / "norse_style.py"


@pytest.mark.parametrize("kwargs", [{}, {"subtract": True}, {"v_leak": 0.05}, {"tau_mem_inv": 100.0}])
def test_float_ir_equals_norse_run_with_its_state(kwargs: dict, digits) -> None:
    torch.manual_seed(0)
    model = ns.mlp(**kwargs).eval()
    with torch.no_grad():
        model[1].weight.mul_(3.0)
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=ns.T)
    x = digits[2][:60]
    src = run_source(model, x.numpy(), ns.T, source_neurons=graph.meta["source_neurons"], output_index=0)
    ref = simulate_float(graph, x.numpy(), ns.T)
    assert 0.02 < ref.spikes["lmh0"].mean() < 0.95
    assert np.array_equal(src.spikes["lmh0"], ref.spikes["lmh0"])
    with torch.no_grad():  # the source run (state kept by the adapter) is norse's own loop
        np.testing.assert_allclose(src.logits, ns.rate(model, x).double().numpy(), atol=1e-6)
    np.testing.assert_allclose(src.logits, ref.logits, atol=1e-5)


@pytest.mark.slow
def test_norse_mlp_one_command(tmp_path: Path, digits) -> None:
    torch.manual_seed(0)
    model = ns.mlp()
    ns.train(model, digits[0], digits[1], epochs=2)
    assert ns.accuracy(model, digits[2], digits[3]) > 0.8
    deploy_source(model, f"{MODEL_FILE}:mlp", tmp_path, timesteps=ns.T)


def lif_cell_net(
    hidden_bias: bool = False, v_leak: float = 0.0, box_readout: bool = False, v_th: float = 1.0
):
    """An untrained tutorial-style net, its hidden weights scaled up so that it spikes."""
    from norse.torch import LIBoxCell, LICell, LIFCell, LIFParameters

    torch.manual_seed(0)
    p = LIFParameters(v_leak=torch.as_tensor(v_leak), v_th=torch.as_tensor(v_th))
    model = ns.SequentialState(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 24, bias=hidden_bias),
        LIFCell(p),
        torch.nn.Linear(24, 10),
        LIBoxCell() if box_readout else LICell(),
    ).eval()
    with torch.no_grad():
        model[1].weight.mul_(6.0)
    return model


@pytest.mark.parametrize(
    "kwargs", [{}, {"hidden_bias": True, "v_leak": 0.1}, {"box_readout": True, "v_th": 0.5}]
)
def test_float_ir_equals_norse_lif_cell_and_li_readout(kwargs: dict, digits) -> None:
    """LIFCell (synaptic current + membrane, no delay: norse 1.1.0's lif_feed_forward_step)
    and the LICell/LIBoxCell readout reproduce norse's own loop: every spike, every logit
    (the mean readout voltage)."""
    model = lif_cell_net(**kwargs)
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=ns.TUTORIAL_T)
    assert graph.meta["source_readout_cell"] == "4"
    assert graph.node("readout").leaky.shape == (3,)
    x = digits[2][:60]
    src = run_source(
        model,
        x.numpy(),
        ns.TUTORIAL_T,
        source_neurons=graph.meta["source_neurons"],
        output_index=0,
        readout_cell=graph.meta["source_readout_cell"],
    )
    ref = simulate_float(graph, x.numpy(), ns.TUTORIAL_T)
    assert 0.02 < ref.spikes["lmh0"].mean() < 0.95
    assert np.array_equal(src.spikes["lmh0"], ref.spikes["lmh0"])
    with torch.no_grad():
        np.testing.assert_allclose(src.logits, ns.voltages(model, x).mean(0).double().numpy(), atol=1e-6)
    np.testing.assert_allclose(src.logits, ref.logits, atol=1e-5)


@pytest.mark.slow
def test_norse_tutorial_lif_cell_net_one_command(tmp_path: Path, digits) -> None:
    """norse's MNIST-tutorial recipe (Linear -> LIFCell -> Linear -> LICell, default time
    constants, max-over-time decoder) on digits, deployed under loihi-lif and under cuba (its
    current decay 0.8 as lmh's arithmetic: measured 1.00 of 50 vs loihi-lif's 0.96)."""
    torch.manual_seed(0)
    model = ns.tutorial_mlp()
    ns.train_tutorial(model, digits[0], digits[1], epochs=3)
    assert ns.tutorial_accuracy(model, digits[2], digits[3]) > 0.8
    for profile in ("loihi-lif", "cuba"):
        work = tmp_path / profile
        work.mkdir()
        result = deploy_source(
            model, f"{MODEL_FILE}:tutorial_mlp", work, timesteps=ns.TUTORIAL_T, profile=profile
        )
        print("norse LIFCell", profile, result["lava_vs_sim"], result["float_vs_fixed"])
        assert result["lava_vs_sim"]["logit_mismatches"] == 0  # the leaky readout, filtered alike


def test_norse_lif_cell_under_lmh_profile_names_cuba_and_loihi_lif(tmp_path: Path) -> None:
    """mu_d = 1 - dt tau_syn_inv = 0.8 is outside the lmh profile's range: one line naming
    the layer, the factor and the profiles that hold it; without a profile, compile takes
    cuba and says why."""
    from lmh_deploy.api import compile as compile_api
    from lmh_deploy.errors import UserError

    model = lif_cell_net()
    kw = dict(input_shape=(1, 8, 8), timesteps=4, dataset="digits")
    with pytest.raises(UserError, match=r"lmh0: .*mu_d=0\.8.*--profile cuba \(or loihi-lif\)"):
        compile_api(model, tmp_path / "b", profile="lmh", **kw)
    assert not (tmp_path / "b").exists()
    report = compile_api(model, tmp_path / "b", **kw)
    assert report["profile"]["name"] == "cuba"
    assert report["profile_choice"].startswith("profile cuba (no --profile given): lmh0's synaptic current")


def test_norse_unsupported_cells_refused_by_name() -> None:
    from norse.torch import LICell, LIFCell, LIFParameters, LIFRecurrentCell, SequentialState

    from lmh_deploy.frontends.neurons import NeuronError
    from lmh_deploy.frontends.torch_fx import FrontendError

    model = SequentialState(
        torch.nn.Flatten(), torch.nn.Linear(64, 8), LIFRecurrentCell(8, 8), torch.nn.Linear(8, 10)
    )
    with pytest.raises(
        NeuronError, match=r"^2 \(LIFRecurrentCell\): norse LIFRecurrentCell cannot be deployed: .*LIFCell"
    ):
        module_to_graph(model, input_shape=(1, 8, 8), timesteps=4)
    middle = SequentialState(
        torch.nn.Flatten(), torch.nn.Linear(64, 8), LICell(), LIFCell(), torch.nn.Linear(8, 10)
    )
    with pytest.raises(
        FrontendError, match=r"leaky integrator 2 \(LICell\), which can only be the model output"
    ):
        module_to_graph(middle, input_shape=(1, 8, 8), timesteps=4)
    adjoint = SequentialState(
        torch.nn.Flatten(), torch.nn.Linear(64, 8), LIFCell(LIFParameters(method="adjoint"))
    )
    with pytest.raises(NeuronError, match=r"^2 \(LIFCell\): LIFParameters\(method='adjoint'\)"):
        module_to_graph(adjoint, input_shape=(1, 8, 8), timesteps=4)


def test_our_nir_export_imports_into_norse_batched(tmp_path: Path, digits) -> None:
    """The reverse: a norse net compiled to the IR, exported with write_nir and loaded with
    norse's own ``from_nir`` (with the file's dt) runs a whole batch at once and gives the
    source's outputs. norse ignores NIR's ``r``; the export writes ``r = 1`` (the input gain
    in the weights), which earlier files did not (10.8 % agreement)."""
    import nir
    import norse.torch

    from lmh_deploy.interop.nir_export import write_nir

    torch.manual_seed(0)
    model = ns.mlp()
    ns.train(model, digits[0][:512], digits[1][:512], epochs=1)
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=ns.T)
    summary = write_nir(graph, tmp_path / "net.nir")
    assert summary["exact"] and summary["nir_native_rules"]
    g = nir.read(tmp_path / "net.nir")
    assert all(np.all(node.r == 1) for node in g.nodes.values() if isinstance(node, nir.LIF))
    net = norse.torch.from_nir(g, dt=float(g.metadata["dt"]))
    x = digits[2][:200]
    with torch.no_grad():
        source = ns.rate(model, x)
        state, outs = None, []
        for _ in range(ns.T):
            out, state = net(x.flatten(1), state)
            outs.append(out)
        imported = torch.stack(outs).mean(0)
    assert source.shape == imported.shape == (200, 10)
    assert float((source.argmax(1) == imported.argmax(1)).float().mean()) == 1.0
    torch.testing.assert_close(imported, source, atol=1e-4, rtol=0)


def test_our_conv_nir_export_imports_into_norse_batched(lif_cnn_nir) -> None:
    """The reverse for a conv net (Conv2d, AvgPool2d, Flatten, Linear, LIF), exported with
    ``lmh-deploy export --format nir``: norse's ``from_nir`` (the file's dt) runs 200 digits
    as one batch and predicts as the checkpoint does. norse imports no AvgPool2d (its map has
    SumPool2d only): the export writes each average pool as a Conv2d of 1/(kh kw) per channel;
    its Flatten counts dims from the end (norse builds ``torch.nn.Flatten`` from them as
    written and calls it on the batch)."""
    import nir
    import norse.torch

    g = nir.read(lif_cnn_nir.nir_file)
    flatten = [n for n in g.nodes.values() if isinstance(n, nir.Flatten)]
    assert len(flatten) == 1 and (flatten[0].start_dim, flatten[0].end_dim) == (-3, -1)
    net = norse.torch.from_nir(g, dt=float(g.metadata["dt"]))
    with torch.no_grad():
        state, outs = None, []
        for _ in range(lif_cnn_nir.timesteps):
            out, state = net(lif_cnn_nir.x, state)
            outs.append(out)
    imported = torch.stack(outs).mean(0)
    source = lif_cnn_nir.source
    assert imported.shape == source.shape == (200, 10)
    assert len(set(source.argmax(1).tolist())) >= 5  # a net that tells digits apart
    assert float((imported.argmax(1) == source.argmax(1)).float().mean()) >= 0.95
    torch.testing.assert_close(imported, source, atol=1e-4, rtol=0)


def test_our_residual_nir_export_imports_into_norse_batched(lif_resnet_nir) -> None:
    """The reverse for a residual net: norse's ``from_nir`` (nirtorch's legacy depth-first
    ``GraphExecutor``) runs the export of a LIF ResNet-20 on 100 digits as one batch and gives
    the graph's own outputs. The export chains each sum's branches through an all-zero node
    (named in ``metadata["lmh_order_nodes"]``), so that the executor's preorder runs every sum
    after both branches and ends at the Output (without them: an early stage's (100, 4, 8, 8)
    from a shortcut convolution, the last node it ran)."""
    import nir
    import norse.torch

    from lmh_deploy.interop.nir_export import depth_first_order_runs

    res = lif_resnet_nir
    g = nir.read(res.nir_file)
    sums = [n for n in res.graph.of_kind("lmh") if len(res.graph.inputs_of(n)) == 2]
    assert res.summary["sums"] == sorted(sums) and res.summary["depth_first_order_runs"]
    assert depth_first_order_runs(g) and len(g.metadata["lmh_order_nodes"]) == len(sums)
    net = norse.torch.from_nir(g, dt=float(g.metadata["dt"]), ignore_warnings=True)
    assert [n.name for n in net.execution_order][-1] == "output"
    with torch.no_grad():
        state, outs = None, []
        for _ in range(res.timesteps):
            out, state = net(res.x, state)
            outs.append(out)
    imported = torch.stack(outs).mean(0).numpy()
    assert imported.shape == res.logits.shape == (100, 10)
    assert float(np.mean(imported.argmax(1) == res.logits.argmax(1))) >= 0.95
    np.testing.assert_allclose(imported, res.logits, atol=1e-5)


def _residual_nir_graph(*, order_node: bool) -> tuple:
    """A residual sum written by hand (no lmh-deploy export): input -> a1 -> l1 -> a2 -> l2 and
    the shortcut input -> sc -> l2, then l2 -> a3 -> output; ``order_node`` adds an all-zero
    Affine sc -> z -> a1 (it adds nothing to a1's input) and lists input -> sc first."""
    import nir

    rng = np.random.default_rng(0)

    def lif(n: int):
        return nir.LIF(tau=np.full(n, 2e-3), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5))

    def affine(o: int, i: int, scale: float = 1.0):
        return nir.Affine(weight=rng.normal(size=(o, i)) * scale, bias=np.zeros(o))

    nodes = {"input": nir.Input(input_type={"input": np.array([3])}), "a1": affine(4, 3)}
    nodes |= {"l1": lif(4), "a2": affine(2, 4), "sc": affine(2, 3), "l2": lif(2), "a3": affine(2, 2)}
    nodes["output"] = nir.Output(output_type={"output": np.array([2])})
    edges = [("input", "a1"), ("a1", "l1"), ("l1", "a2"), ("a2", "l2"), ("input", "sc"), ("sc", "l2")]
    if order_node:
        nodes["z"] = affine(3, 2, scale=0.0)
        edges = [("input", "sc"), ("sc", "z"), ("z", "a1"), *edges[:4], ("sc", "l2")]
    return nir.NIRGraph(nodes=nodes, edges=[*edges, ("l2", "a3"), ("a3", "output")]), nodes


@pytest.mark.parametrize("order_node", [False, True])
def test_norse_from_nir_runs_a_residual_sum_only_with_its_branches_chained(order_node: bool) -> None:
    """norse 1.1.0's ``from_nir`` -> ``nirtorch.load`` (nirtorch 2.6's legacy
    ``GraphExecutor``): nodes run in depth-first preorder from the Input, edges in the order
    listed. On a hand-written residual sum it runs l2 right after a2 and sc last (l2 then
    reads sc from the previous step); with the all-zero node sc -> z -> a1 the order is
    topological and the run equals nirtorch's newer ``nir_to_torch`` (torch.fx, the executor
    snnTorch uses) with norse's own modules. ``depth_first_order_runs`` predicts both."""
    from functools import partial

    import nir
    import nirtorch
    import norse.torch
    from norse.torch.utils.import_nir import _import_norse_module

    from lmh_deploy.interop.nir_export import depth_first_order_runs

    g, nodes = _residual_nir_graph(order_node=order_node)
    dt = 1e-3
    x = torch.rand(6, 5, 3, generator=torch.Generator().manual_seed(0)) * 2

    def run(module) -> torch.Tensor:
        state, outs = None, []
        with torch.no_grad():
            for step in x:
                out, state = module(step, state)
                outs.append(out)
        return torch.stack(outs)

    legacy = norse.torch.from_nir(g, dt=dt, ignore_warnings=True)
    fx = nirtorch.nir_to_torch(
        g, {nir.Affine: partial(_import_norse_module, dt=dt), nir.LIF: partial(_import_norse_module, dt=dt)}
    )
    order = [n.name for n in legacy.execution_order]
    expected = run(fx)
    assert expected.abs().sum() > 0
    assert depth_first_order_runs(g) is order_node
    if order_node:
        assert order == ["input", "sc", "z", "a1", "l1", "a2", "l2", "a3", "output"]
        torch.testing.assert_close(run(legacy), expected, atol=0, rtol=0)
    else:
        assert order == ["input", "a1", "l1", "a2", "l2", "a3", "output", "sc"]
        assert not torch.equal(run(legacy), expected)
