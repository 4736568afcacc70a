"""Tests of the graph IR: JSON + npz round trips and validation errors that name the node."""

from __future__ import annotations

import dataclasses
import json

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from lmh_deploy.ir import (
    IR_FORMAT_VERSION,
    LMH,
    NODE_TYPES,
    AvgPool,
    Conv2d,
    MaxPool,
    Dense,
    Graph,
    Input,
    IRError,
    QDense,
    QInput,
    QLMH,
    QReadout,
    Readout,
    load_graph,
    save_graph,
    validate,
)
from shared import plain_lmh, set_item


def _float_graph(rows: int = 1, per_neuron: bool = False) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph(meta={"timesteps": 4, "classes": 3, "source": "unit-test"})
    g.add("input", Input(shape=(1, 2, 3), x_max=2.5))
    g.add("dense0", Dense(weight=rng.normal(size=(4, 6))), ("input",))
    cols = 4 if per_neuron else 1
    g.add(
        "lmh0",
        LMH(
            size=4,
            theta=1.25,
            mu_d=rng.uniform(-0.5, 0.49, (rows, cols)),
            mu_s=rng.uniform(-0.5, 0.49, (rows, cols)),
            lam_d=rng.uniform(0.5, 1.49, (rows, cols)),
            lam_s=rng.uniform(0.5, 1.49, (rows, cols)),
            bias=rng.normal(size=4),
            v_d_init=rng.normal(size=4) if per_neuron else 0.0,
        ),
        ("dense0",),
    )
    g.add("dense1", Dense(weight=rng.normal(size=(3, 4))), ("lmh0",))
    g.add("readout", Readout(bias=np.array([0.5, -1.0, 0.0])), ("dense1",))
    return g


def _conv_graph() -> Graph:
    rng = np.random.default_rng(2)
    g = Graph(meta={"timesteps": 2})
    g.add("input", Input(shape=(1, 4, 4)))
    g.add(
        "conv0",
        Conv2d(weight=rng.normal(size=(2, 1, 3, 3)), input_shape=(1, 4, 4), stride=(1, 1), padding=(1, 1)),
        ("input",),
    )
    g.add(
        "lmh0",
        plain_lmh(32, bias=rng.normal(size=32)),
        ("conv0",),
    )
    g.add("pool0", AvgPool(input_shape=(2, 4, 4), kernel=(2, 2), stride=(2, 2)), ("lmh0",))
    g.add("dense1", Dense(weight=rng.normal(size=(3, 8))), ("pool0",))
    g.add("readout", Readout(bias=np.zeros(3)), ("dense1",))
    return g


def _max_pool_graph() -> Graph:
    """conv -> max pool of its currents (padding, stride != kernel, ceil_mode) -> LM-H."""
    rng = np.random.default_rng(3)
    g = Graph(meta={"timesteps": 2})
    g.add("input", Input(shape=(1, 5, 5)))
    g.add("conv0", Conv2d(weight=rng.normal(size=(2, 1, 3, 3)), input_shape=(1, 5, 5)), ("input",))
    pool = MaxPool(input_shape=(2, 3, 3), kernel=(2, 2), stride=(1, 2), padding=(1, 0), ceil_mode=True)
    g.add("maxpool0", pool, ("conv0",))
    g.add("lmh0", plain_lmh(pool.output_size(), bias=rng.normal(size=pool.output_size())), ("maxpool0",))
    g.add("dense1", Dense(weight=rng.normal(size=(3, pool.output_size()))), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(3)), ("dense1",))
    return g


def _max_pool_int_graph() -> Graph:
    """The integer graph with a convolution whose currents are max-pooled into lmh0."""
    g = _int_graph()
    g.replace("input", shape=(1, 4, 4))
    g.replace(
        "dense0",
        weight_mant=np.arange(-4, 5).reshape(1, 1, 3, 3),
        conv_input_shape=(1, 4, 4),
        conv_padding=(1, 1),
        pool_kernel=(3, 3),
        pool_stride=(3, 3),
        pool_padding=(1, 1),
        pool_ceil_mode=True,
    )
    assert g.node("dense0").sums_size() == 16 and g.node("dense0").output_size() == 4
    return g


def _sparse_int_graph() -> Graph:
    g = _int_graph()
    g.replace("dense1", weight_mant=sp.csr_matrix(g.node("dense1").weight_mant), delay=1)
    return g


def _int_graph() -> Graph:
    rng = np.random.default_rng(1)
    g = Graph(meta={"timesteps": 4})
    g.add("input", QInput(shape=(6,), scale=127.5, bits=8))
    g.add(
        "dense0",
        QDense(weight_mant=rng.integers(-127, 128, (4, 6)), weight_exp=5, graded=True, weight_scale=321.5),
        ("input",),
    )
    codes = lambda: rng.integers(-2048, 2048, (4, 1))
    g.add(
        "lmh0",
        QLMH(
            size=4,
            theta=12345,
            mu_d=codes(),
            mu_s=codes(),
            lam_d=codes() + 4096,
            lam_s=codes() + 4096,
            bias=rng.integers(-99, 99, 4),
            state_scale=20576.0,
            v_d_init=rng.integers(-99, 99, 4),  # one per neuron
        ),
        ("dense0",),
    )
    g.add(
        "dense1",
        QDense(weight_mant=rng.integers(-127, 128, (3, 4)), weight_exp=11, graded=False, weight_scale=88.25),
        ("lmh0",),
    )
    g.add("readout", QReadout(bias=np.array([7, -8, 0]), state_scale=361472.0), ("dense1",))
    return g


def _assert_same_graph(a: Graph, b: Graph) -> None:
    assert a.order() == b.order()
    assert a.meta == b.meta
    assert sorted(a.nx_graph.edges) == sorted(b.nx_graph.edges)
    for name in a.order():
        na, nb = a.node(name), b.node(name)
        assert type(na) is type(nb), name
        for f in dataclasses.fields(na):
            va, vb = getattr(na, f.name), getattr(nb, f.name)
            if sp.issparse(va):
                assert sp.issparse(vb) and va.shape == vb.shape, (name, f.name)
                assert (va != vb).nnz == 0, (name, f.name)
            elif isinstance(va, np.ndarray):
                assert isinstance(vb, np.ndarray), (name, f.name)
                assert va.dtype == vb.dtype and va.shape == vb.shape, (name, f.name)
                assert np.array_equal(va, vb), (name, f.name)
            else:
                assert type(va) is type(vb) and va == vb, (name, f.name, va, vb)


@pytest.mark.parametrize(
    "build",
    [
        _float_graph,
        lambda: _float_graph(rows=5, per_neuron=True),
        _int_graph,
        _conv_graph,
        _sparse_int_graph,
        _max_pool_graph,
        _max_pool_int_graph,
    ],
    ids=["float", "float-radical-per-neuron", "int", "conv", "int-sparse", "max-pool", "int-max-pool"],
)
def test_save_load_round_trip(tmp_path, build) -> None:
    g = build()
    paths = save_graph(g, tmp_path, "net")
    assert [p.name for p in paths] == ["net.json", "net.npz"]
    doc = json.loads(paths[0].read_text())
    assert doc["format_version"] == IR_FORMAT_VERSION
    loaded = load_graph(tmp_path, "net")
    _assert_same_graph(g, loaded)
    if isinstance(g.node("input"), Input):
        validate(loaded)


def test_every_node_type_is_round_tripped(tmp_path) -> None:
    kinds = set()
    for i, g in enumerate((_float_graph(), _int_graph(), _conv_graph(), _max_pool_graph())):
        save_graph(g, tmp_path, f"g{i}")
        kinds |= {n.kind for _, n in load_graph(tmp_path, f"g{i}").items()}
    assert kinds == set(NODE_TYPES)


def test_input_shape_is_a_tuple_again(tmp_path) -> None:
    save_graph(_float_graph(), tmp_path, "net")
    assert load_graph(tmp_path, "net").node("input").shape == (1, 2, 3)


def test_copy_is_deep_enough() -> None:
    g = _float_graph()
    c = g.copy()
    c.meta["timesteps"] = 99
    c.nx_graph.remove_node("readout")
    assert g.meta["timesteps"] == 4 and "readout" in g.nx_graph


# --------------------------------------------------------------------------- loading errors


def _rewrite_json(tmp_path, **changes) -> None:
    path = tmp_path / "net.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def test_unknown_format_version_is_refused(tmp_path) -> None:
    save_graph(_float_graph(), tmp_path, "net")
    _rewrite_json(tmp_path, format_version=IR_FORMAT_VERSION + 1)
    with pytest.raises(IRError, match=rf"net\.json: unknown IR format version {IR_FORMAT_VERSION + 1}"):
        load_graph(tmp_path, "net")


def test_old_format_version_1_asks_to_recompile(tmp_path) -> None:
    # Version 1 stored lambda - 1 and no neuron rules: reading it as version 2 would be wrong.
    save_graph(_float_graph(), tmp_path, "net")
    _rewrite_json(tmp_path, format_version=1)
    with pytest.raises(
        IRError,
        match=r"net\.json: IR format version 1 was written by an older "
        r"lmh-deploy .*recompile",
    ):
        load_graph(tmp_path, "net")


def test_not_an_ir_file_and_missing_files(tmp_path) -> None:
    save_graph(_float_graph(), tmp_path, "net")
    _rewrite_json(tmp_path, format="something-else")
    with pytest.raises(IRError, match="not an lmh-deploy IR file"):
        load_graph(tmp_path, "net")
    with pytest.raises(IRError, match=r"missing\.json: cannot read IR"):
        load_graph(tmp_path, "missing")
    save_graph(_float_graph(), tmp_path, "net2")
    (tmp_path / "net2.npz").unlink()
    with pytest.raises(IRError, match=r"net2\.npz: cannot read IR arrays"):
        load_graph(tmp_path, "net2")


def test_unknown_node_kind_in_file(tmp_path) -> None:
    save_graph(_float_graph(), tmp_path, "net")
    path = tmp_path / "net.json"
    doc = json.loads(path.read_text())
    doc["nodes"][2]["kind"] = "conv3d"
    path.write_text(json.dumps(doc))
    with pytest.raises(IRError, match=r"node 'lmh0': kind: unknown 'conv3d'; known: input, dense, "):
        load_graph(tmp_path, "net")


# --------------------------------------------------------------------------- validation


def test_valid_graph_passes() -> None:
    validate(_float_graph())
    validate(_float_graph(rows=3, per_neuron=True))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda g: g.replace("dense0", weight=np.zeros((4, 5))),
            r"edge 'input' -> 'dense0': dense expects 5 inputs, source gives 6",
        ),
        (
            lambda g: g.replace("dense1", weight=np.zeros((3, 2))),
            r"edge 'lmh0' -> 'dense1': dense expects 2 inputs",
        ),
        (
            lambda g: g.replace("dense0", weight=np.zeros(6)),
            r"dense0: dense weight must be a non-empty 2-D matrix",
        ),
        (lambda g: g.replace("lmh0", size=5), r"lmh0: bias shape \(4,\) != \(5,\)"),
        (lambda g: g.replace("lmh0", bias=np.zeros(3)), r"lmh0: bias shape \(3,\) != \(4,\)"),
        (
            lambda g: g.replace("lmh0", mu_s=np.zeros((2, 1))),
            r"lmh0: factor mu_s must be \(K, 1\) or \(K, 4\)",
        ),
        (lambda g: g.replace("lmh0", lam_d=np.ones((1, 3))), r"lmh0: factor lam_d must be"),
        (
            lambda g: g.replace("lmh0", v_d_init=np.arange(3.0)),
            r"lmh0: v_d_init must be one number or one per neuron \(4,\), got shape \(3,\)",
        ),
        (
            lambda g: g.replace("lmh0", v_d_init=np.array([0.0, 1.0, np.nan, 2.0])),
            r"lmh0: v_d_init has a non-finite value nan at index \[2\]",
        ),
        (
            lambda g: g.replace("readout", bias=np.zeros(5)),
            r"edge 'dense1' -> 'readout': readout of size 5 fed by 3 synapses",
        ),
        (lambda g: g.replace("input", shape=(0, 3)), r"input: input shape"),
        (lambda g: g.replace("input", x_max=0.0), r"input: x_max must be"),
        (
            lambda g: set_item(g, "dense1", "weight", (2, 1), np.nan),
            r"dense1: weight has a non-finite value nan at index \[2, 1\]",
        ),
        (lambda g: set_item(g, "lmh0", "lam_s", (0, 0), np.nan), r"lmh0: lam_s has a non-finite value nan"),
        (lambda g: set_item(g, "readout", "bias", 1, np.inf), r"readout: bias has a non-finite"),
        (lambda g: g.replace("lmh0", theta=float("nan")), r"lmh0: threshold theta"),
        (
            lambda g: g.replace("lmh0", mu_d=np.full((1, 1), -0.6)),
            r"lmh0: factor mu_d=-0.6 outside its representable range \[-0\.5, 1\.0\]",
        ),
    ],
)
def test_validate_errors_name_the_node(mutate, match: str) -> None:
    g = _float_graph()
    mutate(g)
    with pytest.raises(IRError, match=match):
        validate(g)


def test_a_per_neuron_initial_dendrite_holding_one_value_is_that_number() -> None:
    """``v_d_init`` per neuron is an array only where neurons differ: one value is stored,
    compared and reported as before (a number)."""
    g = _float_graph()
    g.replace("lmh0", v_d_init=np.full(4, 0.25))
    assert type(g.node("lmh0").v_d_init) is float and g.node("lmh0").v_d_init == 0.25
    g.replace("lmh0", v_d_init=np.array([0.25, 0.5, 0.0, 1.0]))
    assert g.node("lmh0").rules()["v_d_init"] == [0.25, 0.5, 0.0, 1.0]
    assert not g.node("lmh0").v_d_init.flags.writeable


def test_validate_rejects_unsupported_kind() -> None:
    g = _float_graph()
    g.nx_graph.nodes["dense1"]["node"] = QDense(
        weight_mant=np.zeros((3, 4), np.int64), weight_exp=0, graded=False, weight_scale=1.0
    )
    with pytest.raises(IRError, match=r"dense1: node kind 'q_dense' is not supported in a float"):
        validate(g)


def test_validate_rejects_wrong_wiring() -> None:
    g = Graph()
    g.add("input", Input(shape=(4,)))
    g.add(
        "lmh0",
        plain_lmh(4),
        ("input",),
    )
    with pytest.raises(
        IRError,
        match=r"edge 'input' -> 'lmh0': a lmh node takes a dense or "
        r"conv2d or avgpool or maxpool input",
    ):
        validate(g)


def test_validate_rejects_cycle() -> None:
    g = _float_graph()
    g.nx_graph.add_edge("lmh0", "dense0")
    with pytest.raises(
        IRError,
        match=r"graph has a cycle: .*'dense0'.*'lmh0'|"
        r"graph has a cycle: .*'lmh0'.*'dense0'",
    ):
        validate(g)
    assert not nx.is_directed_acyclic_graph(g.nx_graph)


def test_validate_rejects_two_inputs_and_empty_graph() -> None:
    g = _float_graph()
    g.add("input2", Input(shape=(6,)))
    g.nx_graph.add_edge("input2", "dense0")
    with pytest.raises(IRError, match=r"dense0: expects exactly one input, has 2"):
        validate(g)
    with pytest.raises(IRError, match="graph is empty"):
        validate(Graph())


def test_graph_add_errors() -> None:
    g = _float_graph()
    with pytest.raises(IRError, match="duplicate node name 'dense0'"):
        g.add("dense0", Dense(weight=np.zeros((1, 1))))
    with pytest.raises(IRError, match=r"edge 'nope' -> 'x': unknown source node 'nope'"):
        g.add("x", Dense(weight=np.zeros((1, 1))), ("nope",))


# --------------------------------------------------------------------------- immutability
@pytest.mark.parametrize(
    "build",
    [_float_graph, _int_graph, _conv_graph, _sparse_int_graph],
    ids=["float", "int", "conv", "int-sparse"],
)
def test_nodes_are_immutable_and_copies_protect_the_original(build) -> None:
    g = build()
    before = build()
    copy = g.copy()
    for _name, node in copy.items():
        with pytest.raises(dataclasses.FrozenInstanceError):
            node.kind_of_change = 1  # any attribute: frozen dataclass
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            arrays = (
                (value.data, value.indices, value.indptr)
                if sp.issparse(value)
                else (value,)
                if isinstance(value, np.ndarray)
                else ()
            )
            for arr in arrays:
                with pytest.raises(ValueError, match="read-only"):
                    arr[(0,) * arr.ndim] = 1
        first = next(f.name for f in dataclasses.fields(node))
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(node, first, getattr(node, first))
    # A change to the copy is a new node in the copy only; meta is copied too.
    weighted = next(n for n, node in copy.items() if hasattr(node, "weight") or hasattr(node, "weight_mant"))
    field = "weight" if hasattr(copy.node(weighted), "weight") else "weight_mant"
    copy.replace(weighted, **{field: getattr(copy.node(weighted), field) * 0})
    copy.meta["timesteps"] = 99
    _assert_same_graph(g, before)


def test_node_owns_its_arrays() -> None:
    """A node copies a writable array it is given: the caller's later writes do not reach it."""
    w = np.ones((2, 3))
    node = Dense(weight=w)
    w[0, 0] = 5.0
    assert node.weight[0, 0] == 1.0 and w.flags.writeable
    view = np.arange(6.0).reshape(2, 3)[:, :2]  # a view of writable memory is copied as well
    node = Dense(weight=view)
    assert node.weight.base is None or not node.weight.base.flags.writeable
    csr = sp.csr_matrix(np.eye(3, dtype=np.int64))
    q = QDense(weight_mant=csr, weight_exp=0, graded=False, weight_scale=1.0)
    csr.data[0] = 7
    assert q.weight_mant[0, 0] == 1 and not q.weight_mant.data.flags.writeable
    # Scipy operations that would canonicalise in place work on the read-only matrix.
    assert (abs(q.weight_mant) @ np.ones(3)).tolist() == [1, 1, 1]
    assert sp.csr_matrix(q.weight_mant).sum() == 3
