"""Fuzzing: generated malformed graphs, bad files, manifests, metas, node fields and option
values only ever get clear errors: a run, or one line and exit 2 with nothing written."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lmh_deploy.cli import app
from lmh_deploy.ir import Dense, Graph, Input, IRError, Readout, load_graph, save_graph, validate
from lmh_deploy.ir.schema import NODE_FIELDS
from lmh_deploy.models.architectures import mlp
from lmh_deploy.models.checkpoint import save_checkpoint
from lmh_deploy.pipeline.artifact import REQUIRED_FILES, ArtifactError, check_artifact, sha256
from shared import plain_lmh

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_graph(n_in: int, hidden: int, classes: int) -> Graph:
    g = Graph(meta={"timesteps": 4})
    g.add("input", Input(shape=(n_in,)))
    g.add("dense0", Dense(weight=np.ones((hidden, n_in))), ("input",))
    g.add("lmh0", plain_lmh(hidden), ("dense0",))
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
        nodes["lmh0"]["node"] = plain_lmh(hidden, mu_s=np.full((1, 1), np.inf))
        expect = "lmh0"
    elif mutation == "factor_range":
        bad = value if np.isfinite(value) and not (-0.5 <= value <= 0.5) else 0.75
        # mu_s: its float range is [-0.5, 0.5] for every profile (mu_d reaches 1 for Loihi's LIF)
        nodes["lmh0"]["node"] = plain_lmh(hidden, mu_s=np.full((1, 1), bad))
        expect = "lmh0"
    elif mutation == "theta":
        bad = value if not (value > 0 and np.isfinite(value)) else -abs(value)
        nodes["lmh0"]["node"] = plain_lmh(hidden, theta=bad)
        expect = "lmh0"
    elif mutation == "bias_shape":
        nodes["lmh0"]["node"] = plain_lmh(hidden, bias=np.zeros(hidden + 1))
        expect = "lmh0"
    elif mutation == "factor_shape":
        nodes["lmh0"]["node"] = plain_lmh(hidden, lam_s=np.ones((2, 1)))
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


# --- artifacts: generated manifests, metas, node fields and option values ------------------

CLI_FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("fuzz")
    arch = {"neuron": "lmh", "factors": "progressive", "timesteps": 2, "width_mult": 0.25}
    dataset = {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "x_max": 1.0, "seed": 0}
    torch.manual_seed(0)
    save_checkpoint(work / "m.pt", mlp((1, 8, 8), 10, **arch), arch="mlp", arch_kwargs=arch, dataset=dataset)
    res = runner.invoke(app, ["compile", str(work / "m.pt"), "-o", str(work / "build")])
    assert res.exit_code == 0, res.output
    return work / "build"


def _one_line_or_ran(res, *, wrote: list[Path]) -> None:
    """Either it ran (exit 0), or one line and exit 2 with none of ``wrote`` left behind."""
    assert "Traceback" not in res.output, res.output
    if res.exit_code == 0:
        return
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert not any(p.exists() for p in wrote), res.output


NAMES = st.sampled_from(
    [*REQUIRED_FILES, "model.pt", "manifest.json", "../ir.json", "/etc/hostname", ".x", "a/b", "", "..", "x"]
)
DIGESTS = st.one_of(
    st.just("real"), st.text("0123456789abcdef", min_size=64, max_size=64), st.integers(), st.none()
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@CLI_FUZZ
@given(
    files=st.one_of(st.dictionaries(NAMES, DIGESTS, max_size=9), JSON_VALUES),
    format_=st.sampled_from(["lmh-deploy/artifact", "other", None]),
    keep_real=st.booleans(),
)
def test_generated_manifests_are_trusted_only_when_whole(artifact, files, format_, keep_real) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(shutil.copytree(artifact, Path(tmp) / "build"))
        real = json.loads((build / "manifest.json").read_text())
        doc = dict(real, format=format_)
        if isinstance(files, dict):
            digests = {
                n: (sha256(build / n) if (build / n).is_file() else "0" * 64) if d == "real" else d
                for n, d in files.items()
            }
            doc["files"] = {**real["files"], **digests} if keep_real else digests
        else:
            doc["files"] = files
        (build / "manifest.json").write_text(json.dumps(doc))
        whole = doc["files"] == real["files"] and format_ == "lmh-deploy/artifact"
        try:
            check_artifact(build)
            assert whole, doc
        except ArtifactError as exc:
            assert not whole and "\n" not in str(exc)
        report = Path(tmp) / "r.json"
        res = runner.invoke(app, ["run", str(build), "--samples", "2", "--json", str(report)])
        _one_line_or_ran(res, wrote=[report])
        assert (res.exit_code == 0) == whole, res.output


META_VALUES = st.one_of(
    st.integers(-(10**12), 10**12),
    st.sampled_from([0, 1, 2, 4, 1024, 1025, -1, 10**9, "four", "", None, True, 4.0, math.nan, math.inf]),
    JSON_VALUES,
)


@CLI_FUZZ
@given(key=st.sampled_from(["timesteps", "num_classes", "dataset", "target", "profile"]), value=META_VALUES)
def test_generated_metas_run_or_get_one_line(artifact, key, value) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(shutil.copytree(artifact, Path(tmp) / "build"))
        doc = json.loads((build / "quantized.json").read_text())
        doc["meta"][key] = value
        (build / "quantized.json").write_text(json.dumps(doc))
        manifest = json.loads((build / "manifest.json").read_text())
        manifest["files"]["quantized.json"] = sha256(build / "quantized.json")
        (build / "manifest.json").write_text(json.dumps(manifest))
        report = Path(tmp) / "r.json"
        res = runner.invoke(
            app, ["run", str(build), "--samples", "2", "--sweep", "none", "--json", str(report)]
        )
        _one_line_or_ran(res, wrote=[report])  # e.g. "quantized.json: meta.timesteps: ...", or
        # for dataset=None "compiled without a dataset ...; pass --inputs/--labels"


def _saved_graph(directory: Path) -> None:
    g = Graph(meta={"timesteps": 4})
    g.add("input", Input(shape=(3,)))
    g.add("dense0", Dense(weight=np.ones((2, 3))), ("input",))
    g.add("lmh0", plain_lmh(2), ("dense0",))
    g.add("dense1", Dense(weight=np.ones((2, 2))), ("lmh0",))
    g.add("readout", Readout(bias=np.zeros(2)), ("dense1",))
    save_graph(g, directory, "g")


@FUZZ
@given(
    node=st.integers(0, 4),
    field=st.sampled_from(sorted({f for model in NODE_FIELDS.values() for f in model.model_fields} | {"x"})),
    value=JSON_VALUES,
    kind=st.sampled_from([None, *NODE_FIELDS, "conv3d"]),
)
def test_generated_node_fields_load_or_raise_irerror(node, field, value, kind) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _saved_graph(Path(tmp))
        path = Path(tmp) / "g.json"
        doc = json.loads(path.read_text())
        doc["nodes"][node]["fields"][field] = value
        if kind is not None:
            doc["nodes"][node]["kind"] = kind
        path.write_text(json.dumps(doc))
        try:
            load_graph(tmp, "g")
        except IRError as exc:
            assert "\n" not in str(exc) and "g.json" in str(exc)


OPTION_VALUES = st.one_of(
    st.integers(-5, 5).map(str),
    st.sampled_from(["0", "-1", "1e9", "10000000000000", "abc", "", "nan", "inf", "2.5"]),
)


@CLI_FUZZ
@given(
    option=st.sampled_from(["--samples", "--batch-size", "--sweep", "--backend", "--device"]),
    value=OPTION_VALUES,
    output=st.sampled_from(["r.json", "build/r.json", "build", "m.pt/r.json", "/proc/x/r.json", "."]),
)
def test_generated_option_values_and_outputs_run_or_get_one_line(artifact, option, value, output) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(shutil.copytree(artifact, Path(tmp) / "build"))
        (Path(tmp) / "m.pt").write_bytes(b"x")
        before = {p: p.read_bytes() for p in build.iterdir()}
        target = output if output.startswith("/") else str(Path(tmp) / output)
        res = runner.invoke(
            app, ["run", str(build), "--samples", "2", "--sweep", "none", option, value, "--json", target]
        )
        _one_line_or_ran(res, wrote=[Path(tmp) / "r.json"])  # a bad value or path: one line
        assert {p: p.read_bytes() for p in build.iterdir()} == before  # the artifact never changes
