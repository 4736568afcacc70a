"""MaxPool2d over currents (``Conv2d -> BatchNorm2d -> MaxPool2d -> neuron``), the tests that
need no Lava: the pool of the convolution's integer currents, defined once
(:mod:`lmh_deploy.semantics.pooling`), on hand-derived golden vectors and against torch; the float
reference against the PyTorch module and sim/ against its step-by-step reference; what cannot be
pooled exactly and the refusals of ``--target loihi2``, NIR and netx; the bias correction of a
pooled neuron. No Lava import, so scripts/mutation.sh can run them (Lava sets the
multiprocessing start method at import); the Lava side is in tests/test_max_pool_currents.py.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lmh_deploy.backends.float.ir import simulate_float
from lmh_deploy.backends.float.torch_source import run_source
from lmh_deploy.frontends.torch_fx import FrontendError, module_to_graph
from lmh_deploy.errors import InteropError
from lmh_deploy.interop.netx_artifact import artifact_to_netx
from lmh_deploy.interop.nir_export import check_exportable
from lmh_deploy.ir import IRError, MaxPool
from lmh_deploy.passes.loihi2_map import map_to_loihi2
from lmh_deploy.passes.quantize import quantize_graph
from lmh_deploy.semantics.pooling import max_pool, mean_over_windows, pool_windows
from lmh_deploy.sim import simulate
from lmh_deploy.sim.reference import simulate_reference

from shared import paper_clone

# One 4x4 channel with negatives and ties; the expected maxima are read off by hand.
X = np.array(
    [
        [1, -3, 2, 0],
        [-5, 4, -1, 7],
        [3, 3, -2, -6],
        [-4, 0, 5, -8],
    ]
)
GOLDEN = [
    # kernel 3, stride 2, padding 1: windows rows/cols {-1..1, 1..3} (padding never wins)
    (dict(kernel=(3, 3), stride=(2, 2), padding=(1, 1)), [4, 7, 4, 7]),
    # kernel 2, stride 2, padding 1: 3x3 outputs; the corner windows hold one pixel each, so a
    # negative one (-4, -8) stays negative (zero padding would give 0)
    (dict(kernel=(2, 2), stride=(2, 2), padding=(1, 1)), [1, 2, 0, 3, 4, 7, -4, 5, -8]),
    # kernel 3, stride 2, ceil_mode: a partial last window (rows/cols 2..3) is kept
    (dict(kernel=(3, 3), stride=(2, 2), ceil_mode=True), [4, 7, 5, 5]),
    # kernel 2, dilation 2, stride 1: taps two apart, e.g. out(0,0) = max(x00, x02, x20, x22)
    (dict(kernel=(2, 2), stride=(1, 1), dilation=(2, 2)), [3, 3, 5, 7]),
    # kernel 2, stride 1: the tie 3, 3 at (2,0), (2,1) gives 3 once
    (dict(kernel=(2, 2), stride=(1, 1)), [4, 4, 7, 4, 4, 7, 3, 5, 5]),
]


@pytest.mark.parametrize("geometry, expected", GOLDEN)
def test_max_pool_golden_vectors(geometry, expected) -> None:
    windows = pool_windows((1, 4, 4), **geometry)
    for x in (X.reshape(1, 16), torch.from_numpy(X.reshape(1, 16))):
        got = max_pool(x, windows)
        assert type(got) is type(x)  # numpy in, numpy out; torch in, torch out
        assert np.asarray(got).ravel().tolist() == expected
    assert MaxPool(input_shape=(1, 4, 4), **geometry).output_size() == len(expected)


def test_max_pool_golden_vector_of_a_geometry_that_differs_per_axis() -> None:
    """kernel (3, 2), stride (2, 1), padding (1, 0), dilation (1, 2) on X: rows
    (4 + 2 - 2 - 1) // 2 + 1 = 2 windows, rows {-1, 0, 1} and {1, 2, 3} (row -1 is padding);
    columns (4 - 2 - 1) // 1 + 1 = 2 windows, taps {0, 2} and {1, 3}.
    (0, 0): rows 0-1, cols 0, 2: 1, 2, -5, -1 -> 2;  (0, 1): cols 1, 3: -3, 0, 4, 7 -> 7;
    (1, 0): rows 1-3, cols 0, 2: -5, -1, 3, -2, -4, 5 -> 5;  (1, 1): 4, 7, 3, -6, 0, -8 -> 7.
    A second channel (X + 100) follows the first in the flat order."""
    geometry = dict(kernel=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    windows = pool_windows((2, 4, 4), **geometry)
    assert windows.shape == (8, 6) and windows.dtype == np.int64
    x = np.concatenate([X.ravel(), X.ravel() + 100])[None]
    assert max_pool(x, windows).tolist() == [[2, 7, 5, 7, 102, 107, 105, 107]]
    assert MaxPool(input_shape=(2, 4, 4), **geometry).output_shape == (2, 2, 2)


def test_pool_windows_refuses_geometry_with_no_window_or_an_empty_one() -> None:
    """Rows (1 - 1 - 1) // 1 + 1 = 0 windows while columns have 3: no output at all. Padding 1
    around a 2x2 input with a 1x1 kernel: 4x4 windows, the first (row -1, column -1) wholly in
    the padding while others are not (torch refuses padding > kernel / 2 before it gets here)."""
    with pytest.raises(ValueError, match=r"^the pooling window does not fit the input \(1, 1, 4\)$"):
        pool_windows((1, 1, 4), kernel=(2, 2), stride=(1, 1))
    with pytest.raises(
        ValueError, match=r"^a pooling window of input \(1, 2, 2\) lies wholly in the padding$"
    ):
        pool_windows((1, 2, 2), kernel=(1, 1), stride=(1, 1), padding=(1, 1))


def test_mean_over_windows_of_a_batch_by_hand() -> None:
    """x (2 samples, 4 positions), windows {0, 1}, {2, 3}, {0, 3}: the mean over each window's
    taps, per sample: (1 + 2) / 2 = 1.5, (3 + 4) / 2 = 3.5, (1 + 4) / 2 = 2.5; ten times that."""
    x = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    got = mean_over_windows(x, np.array([[0, 1], [2, 3], [0, 3]]))
    assert got.tolist() == [[1.5, 3.5, 2.5], [15.0, 35.0, 25.0]]


def test_max_pool_windows_equal_torch_on_every_geometry() -> None:
    """kernel, stride, padding, dilation, ceil_mode over odd and even sizes, against torch."""
    rng = np.random.default_rng(0)
    checked = 0
    for h, w, k, s, p, d, ceil in itertools.product(
        (5, 6, 7), (4, 7), (1, 2, 3), (1, 2, 3), (0, 1), (1, 2), (False, True)
    ):
        if 2 * p > k:
            continue
        x = rng.integers(-50, 50, size=(3, 2, h, w))
        try:
            want = nn.functional.max_pool2d(torch.from_numpy(x).double(), k, s, p, d, ceil_mode=ceil)
        except RuntimeError:  # torch refuses it: so does the IR node
            with pytest.raises(IRError):
                MaxPool((2, h, w), (k, k), (s, s), (p, p), (d, d), ceil).check("pool")
            continue
        node = MaxPool((2, h, w), (k, k), (s, s), (p, p), (d, d), ceil)
        node.check("pool")
        assert node.output_shape == tuple(want.shape[1:])
        got = max_pool(x.reshape(3, -1), node.windows())
        assert np.array_equal(got, want.reshape(3, -1).numpy().astype(np.int64))
        checked += 1
    assert checked > 300


class ConvBnPool(nn.Module):
    """``Conv2d -> BatchNorm2d -> MaxPool2d -> neuron`` twice, then a Linear readout (paper's
    ``LearnableNeuron``); ``pools`` gives each MaxPool2d's arguments."""

    def __init__(self, pools: list[dict], channels: tuple[int, int] = (6, 8), out: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = 1, 8
        for c, pool in zip(channels, pools):
            conv = nn.Conv2d(c_in, c, 3, padding=1)
            mp = nn.MaxPool2d(**pool)
            layers += [conv, nn.BatchNorm2d(c), mp, paper_clone("LearnableNeuron")]
            size = int(mp(torch.zeros(1, 1, size, size)).shape[-1])
            c_in = c
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * size * size, out)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def conv_bn_pool_net(pools: list[dict], seed: int, negative_bn: bool = True) -> nn.Module:
    """A seeded ``ConvBnPool`` in eval mode: conv weights times 2.5 (the neurons spike), random
    batch-norm statistics and scales (some negative unless ``negative_bn`` is false)."""
    torch.manual_seed(seed)
    model = ConvBnPool(pools)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(2.5)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                # a negative scale before the pool folds exactly: the max is of the folded conv
                m.weight.uniform_(-1.0 if negative_bn else 0.5, 2.0)
                m.bias.uniform_(-0.2, 0.4)
    return model.eval()


EDGE_POOLS = [
    [dict(kernel_size=2), dict(kernel_size=2)],
    [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, stride=1, ceil_mode=True)],
    [dict(kernel_size=2, stride=1, dilation=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)],
]


@pytest.fixture(scope="module")
def inputs(digits) -> np.ndarray:
    return digits[2][:24].numpy() * 2.0


@pytest.mark.parametrize("pools", EDGE_POOLS, ids=["2x2", "pad-stride-ceil", "dilation-ceil-pad"])
def test_float_ir_equals_the_module_and_sim_equals_the_reference(pools, inputs) -> None:
    """The traced float IR reproduces the module spike for spike (BN before the pool folded,
    negative scales included); sim (numpy and torch paths) equals its step-by-step reference."""
    model = conv_bn_pool_net(pools, seed=3).double()
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=4)
    assert graph.meta["source_max_pools"] == {"maxpool0": "features.2", "maxpool1": "features.6"}
    src = run_source(model, inputs, 4, source_neurons=graph.meta["source_neurons"])
    ref = simulate_float(graph, inputs, 4)
    for name, spikes in ref.spikes.items():
        assert 0.02 < spikes.mean() < 0.98, name
        assert np.array_equal(src.spikes[name], spikes), name
    assert np.abs(src.logits - ref.logits).max() < 1e-9
    q, _ = quantize_graph(graph)
    pooled = [n for n, node in q.items() if getattr(node, "pool_kernel", None) is not None]
    assert pooled == ["maxpool0", "maxpool1"]
    x_int = q.node("input").quantize(inputs)
    fast, slow = simulate(q, x_int, 4), simulate_reference(q, x_int, 4)
    on_torch = simulate(q, x_int, 4, device="cpu")  # sim's torch path (any device)
    for name in fast.spikes:
        assert np.array_equal(fast.spikes[name], slow["spikes"][name]), name
        assert np.array_equal(on_torch.spikes[name], fast.spikes[name]), name
    assert np.array_equal(fast.logits, slow["logits"])
    assert np.array_equal(on_torch.logits, fast.logits)


def test_loihi2_refuses_a_max_pool_of_currents_naming_the_layer(tmp_path: Path) -> None:
    """So do the NIR export (NIR has no max pool) and the netx export (netx's pool sums)."""
    graph = module_to_graph(conv_bn_pool_net(EDGE_POOLS[0], seed=1), input_shape=(1, 8, 8), timesteps=2)
    with pytest.raises(InteropError, match=r"^maxpool0: NIR has no max pooling"):
        check_exportable(graph)
    q, _ = quantize_graph(graph)
    with pytest.raises(InteropError, match=r"^lmh0: netx has no max pool of currents"):
        artifact_to_netx(q, tmp_path / "net.net")
    assert not (tmp_path / "net.net").exists()
    with pytest.raises(
        IRError, match=r"^maxpool0 \(source layer features\.2\): a MaxPool2d over currents"
    ) as e:
        map_to_loihi2(q)
    assert "AvgPool2d" in str(e.value) and "after the neuron" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "layers, match",
    [
        # BN after the pool with a negative scale: max would become min
        (
            lambda: [nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), nn.BatchNorm2d(3)],
            r"^2 \(BatchNorm2d\): batch norm after a max pool has a negative scale .* in channel 1",
        ),
        # a pool of currents feeding another synaptic layer
        (
            lambda: [nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), nn.Conv2d(3, 3, 1)],
            r"^2 \(Conv2d\): follows a MaxPool2d of currents",
        ),
        # a pool of the input pixels: no synapses before it
        (
            lambda: [nn.MaxPool2d(2), nn.Conv2d(1, 3, 3)],
            r"^0 \(MaxPool2d\): a MaxPool2d of currents must follow",
        ),
        (
            lambda: [nn.Conv2d(1, 3, 3), nn.AdaptiveMaxPool2d(1)],
            r"^1 \(AdaptiveMaxPool2d\): only nn.MaxPool2d",
        ),
        (
            lambda: [nn.Conv2d(1, 3, 3), nn.MaxPool2d(2, return_indices=True)],
            r"^1 \(MaxPool2d\): MaxPool2d with return_indices",
        ),
    ],
)
def test_what_cannot_be_pooled_exactly_is_refused_in_one_line(layers, match) -> None:
    body = layers()
    for m in body:
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.tensor([1.0, -0.5, 2.0]))
    model = nn.Sequential(*body, paper_clone("LearnableNeuron"), nn.Flatten(), nn.Linear(3, 3))
    with pytest.raises((FrontendError, IRError), match=match) as info:
        module_to_graph(model.eval(), input_shape=(1, 8, 8), timesteps=2)
    assert "\n" not in str(info.value)


def test_batch_norm_after_the_pool_folds_where_its_scales_are_not_negative(inputs) -> None:
    """``Conv2d -> MaxPool2d -> BatchNorm2d -> neuron``: gamma * max = max(gamma * x) for
    gamma >= 0 (a zero scale included), so the fold is exact; negative scales are refused above."""
    torch.manual_seed(2)
    norm = nn.BatchNorm2d(3)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.5, 0.0, 0.7]))
        norm.bias.uniform_(-0.2, 0.4)
        norm.running_mean.uniform_(-0.3, 0.3)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(3.0)
    neuron = paper_clone("LearnableNeuron")
    model = nn.Sequential(conv, nn.MaxPool2d(2), norm, neuron, nn.Flatten(), nn.Linear(48, 10))
    model = model.eval().double()
    graph = module_to_graph(model, input_shape=(1, 8, 8), timesteps=4)
    src = run_source(model, inputs, 4, source_neurons=graph.meta["source_neurons"])
    ref = simulate_float(graph, inputs, 4)
    assert 0.05 < ref.spikes["lmh0"].mean() < 0.95
    assert np.array_equal(src.spikes["lmh0"], ref.spikes["lmh0"])
    assert np.abs(src.logits - ref.logits).max() < 1e-9


def test_bias_correction_gives_a_pooled_neuron_its_windows_mean_rounding_error() -> None:
    """A 1x1 convolution's weight 0.1234 (beside the largest, 0.3, mantissa 127) rounds to
    mantissa 52 (0.1234 / 0.3 * 127 = 52.24); each position's rounding current is e * E[x];
    a 2x2 max pool's neuron gets the mean of its window's four (which tap wins is not known
    ahead)."""
    from lmh_deploy.passes.bias_correction import rounding_current
    from lmh_deploy.passes.compose import synapse_paths
    from lmh_deploy.passes.quantize import quantize_joint

    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.3, 0.1234]).reshape(2, 1, 1, 1))
    neuron = paper_clone("LearnableNeuron")
    model = nn.Sequential(conv, nn.MaxPool2d(2), neuron, nn.Flatten(), nn.Linear(2, 2))
    graph = module_to_graph(model.eval(), input_shape=(1, 2, 2), timesteps=2)
    paths = synapse_paths(graph, "lmh0")
    assert paths[0].pool is not None and paths[0].repeat == 1
    mants, scale, _ = quantize_joint(paths)
    unit = graph.node("input").unit
    assert mants[0].ravel().tolist() == [127, 52]
    error_per_count = 52 / scale - float(conv.weight.detach()[1]) * unit  # float current per input count
    counts = np.array([10.0, 20.0, 30.0, 60.0])  # mean input counts per step
    got = rounding_current(paths, mants, scale, {"input": counts})
    assert got.shape == (2,) and abs(got[0]) < 1e-12
    assert got[1] == pytest.approx(error_per_count * counts.mean(), rel=1e-9)
    assert abs(got[1]) > 1e-5  # not zero: the check above has something to compare
