"""Fuzzing: generated malformed graphs and generated bad files only ever get clear errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lmh_deploy.cli import app
from lmh_deploy.ir import LMH, Dense, Graph, Input, IRError, Readout, validate

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _lmh(n: int, **over) -> LMH:
    base = dict(
        size=n,
        theta=1.0,
        mu_d=np.zeros((1, 1)),
        mu_s=np.zeros((1, 1)),
        lam_d=np.ones((1, 1)),
        lam_s=np.ones((1, 1)),
        bias=np.zeros(n),
    )
    base.update(over)
    return LMH(**base)


def _valid_graph(n_in: int, hidden: int, classes: int) -> Graph:
    g = Graph(meta={"timesteps": 4})
    g.add("input", Input(shape=(n_in,)))
    g.add("dense0", Dense(weight=np.ones((hidden, n_in))), ("input",))
    g.add("lmh0", _lmh(hidden), ("dense0",))
    g.add("dense1", Dense(weight=np.ones((classes, hidden))), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(classes)), ("dense1",))
    return g


MUTATIONS = [
    "weight_shape",
    "nan_weight",
    "inf_factor",
    "factor_range",
    "theta",
    "bias_shape",
    "factor_shape",
    "readout_size",
    "extra_edge",
    "input_shape",
    "x_max",
    "wrong_kind_edge",
]


@FUZZ
@given(
    n_in=st.integers(1, 6),
    hidden=st.integers(1, 6),
    classes=st.integers(1, 4),
    mutation=st.sampled_from(MUTATIONS),
    value=st.floats(allow_nan=True, allow_infinity=True),
)
def test_malformed_graphs_raise_irerror_naming_the_node(n_in, hidden, classes, mutation, value):
    g = _valid_graph(n_in, hidden, classes)
    validate(g)  # the unmutated graph is fine
    nodes = g.nx_graph.nodes
    expect = None
    if mutation == "weight_shape":
        nodes["dense0"]["node"] = Dense(weight=np.ones((hidden, n_in + 1)))
        expect = "dense0"
    elif mutation == "nan_weight":
        w = np.ones((hidden, n_in))
        w[0, 0] = np.nan
        nodes["dense0"]["node"] = Dense(weight=w)
        expect = "dense0"
    elif mutation == "inf_factor":
        nodes["lmh0"]["node"] = _lmh(hidden, mu_s=np.full((1, 1), np.inf))
        expect = "lmh0"
    elif mutation == "factor_range":
        bad = value if np.isfinite(value) and not (-0.5 <= value <= 0.5) else 0.75
        # mu_s: its float range is [-0.5, 0.5] for every profile (mu_d reaches 1 for Loihi's LIF)
        nodes["lmh0"]["node"] = _lmh(hidden, mu_s=np.full((1, 1), bad))
        expect = "lmh0"
    elif mutation == "theta":
        bad = value if not (value > 0 and np.isfinite(value)) else -abs(value)
        nodes["lmh0"]["node"] = _lmh(hidden, theta=bad)
        expect = "lmh0"
    elif mutation == "bias_shape":
        nodes["lmh0"]["node"] = _lmh(hidden, bias=np.zeros(hidden + 1))
        expect = "lmh0"
    elif mutation == "factor_shape":
        nodes["lmh0"]["node"] = _lmh(hidden, lam_s=np.ones((2, 1)))
        expect = "lmh0"
    elif mutation == "readout_size":
        nodes["readout"]["node"] = Readout(bias=np.zeros(classes + 1))
        expect = "readout"
    elif mutation == "extra_edge":
        g.nx_graph.add_edge("lmh0", "readout")
        expect = "readout"
    elif mutation == "input_shape":
        nodes["input"]["node"] = Input(shape=(0,))
        expect = "input"
    elif mutation == "x_max":
        nodes["input"]["node"] = Input(shape=(n_in,), x_max=value if not value > 0 else -1.0)
        expect = "input"
    elif mutation == "wrong_kind_edge":
        g.nx_graph.remove_edge("dense0", "lmh0")
        g.nx_graph.add_edge("input", "lmh0")
        expect = "lmh0"
    try:
        validate(g)
    except IRError as exc:
        assert expect in str(exc), (mutation, str(exc))
    else:
        raise AssertionError(f"mutation {mutation} was not caught")


runner = CliRunner()


@FUZZ
@given(
    content=st.one_of(
        st.binary(min_size=0, max_size=512),
        st.binary(max_size=256).map(lambda b: b"PK\x03\x04" + b),  # zip magic, garbage after
        st.binary(max_size=256).map(lambda b: b"\x80\x04" + b),  # pickle magic, garbage after
    )
)
def test_generated_bad_files_get_one_line_and_no_output(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.pt"
        path.write_bytes(content)
        res = runner.invoke(app, ["compile", str(path), "-o", str(Path(tmp) / "out")])
        assert res.exit_code == 2, res.output
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "fuzz.pt" in lines[0], res.output
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["fuzz.pt"]
