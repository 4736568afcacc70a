"""lmh_deploy.ir.schema: the one schema of an IR file's meta and nodes, rule by rule."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from lmh_deploy.bounds import MAX_TIMESTEPS
from lmh_deploy.ir import NODE_TYPES, IRError
from lmh_deploy.ir.schema import NODE_FIELDS, check_meta, check_node_entry

META = {
    "timesteps": 4,
    "num_classes": 10,
    "dataset": {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "x_max": 1.0, "seed": 0},
    "target": "lava-sim",
    "profile": "lmh",
    "source": {"format": "checkpoint"},  # unknown keys pass through
}


def _meta(**over):
    meta = {**META, "dataset": dict(META["dataset"])}
    for key, value in over.items():
        if key.startswith("dataset_"):
            meta["dataset"][key.removeprefix("dataset_")] = value
        else:
            meta[key] = value
    return meta


def test_a_real_meta_passes() -> None:
    check_meta(_meta(), "q.json")
    check_meta({"timesteps": 1}, "q.json")
    check_meta(_meta(dataset=None, timesteps=MAX_TIMESTEPS), "q.json")


@pytest.mark.parametrize(
    "over, field",
    [
        ({"timesteps": 10**9}, "meta.timesteps"),
        ({"timesteps": 0}, "meta.timesteps"),
        ({"timesteps": -3}, "meta.timesteps"),
        ({"timesteps": "four"}, "meta.timesteps"),
        ({"timesteps": math.nan}, "meta.timesteps"),
        ({"timesteps": 4.0}, "meta.timesteps"),
        ({"timesteps": True}, "meta.timesteps"),
        ({"num_classes": -1}, "meta.num_classes"),
        ({"num_classes": 0}, "meta.num_classes"),
        ({"dataset_name": "imagenet"}, "meta.dataset.name"),
        ({"dataset_input_shape": [1, 0, 8]}, "meta.dataset.input_shape"),
        ({"dataset_input_shape": [1, 8, 8, 1, 1]}, "meta.dataset.input_shape"),
        ({"dataset_input_shape": [4096, 4096, 4096]}, "meta.dataset.input_shape"),
        ({"dataset_x_max": math.inf}, "meta.dataset.x_max"),
        ({"dataset_num_classes": -1}, "meta.dataset.num_classes"),
        ({"target": "gpu"}, "meta.target"),
        ({"profile": "mine"}, "meta.profile"),
    ],
)
def test_each_bad_meta_value_is_one_line_naming_the_field(over, field) -> None:
    with pytest.raises(IRError, match="^" + re.escape(f"q.json: {field}") + "[.:]") as exc:
        check_meta(_meta(**over), "q.json")
    assert "\n" not in str(exc.value)


def test_meta_must_be_an_object() -> None:
    with pytest.raises(IRError, match="meta must be an object, got list"):
        check_meta([1], "q.json")


def _entry(kind: str, **fields):
    return {"name": "n", "kind": kind, "inputs": [], "fields": fields, "arrays": []}


@pytest.mark.parametrize(
    "kind, fields, field",
    [
        ("input", {"shape": [0, 8]}, "shape"),
        ("input", {"shape": [1, 8], "x_max": -1.0}, "x_max"),
        ("input", {"shape": [1, 8], "x_max": math.nan}, "x_max"),
        ("q_input", {"shape": [64], "scale": 255.0, "bits": 99}, "bits"),
        ("lmh", {"size": 0, "theta": 1.0}, "size"),
        ("lmh", {"size": 4, "theta": -1.0}, "theta"),
        ("lmh", {"size": 4, "theta": 1.0, "reset": "explode"}, "reset"),
        ("q_lmh", {"size": 4, "theta": 0, "state_scale": 1.0, "profile": "lmh"}, "theta"),
        ("q_lmh", {"size": 4, "theta": 5, "state_scale": 1.0, "profile": "nope"}, "profile"),
        ("q_dense", {"weight_exp": 1000}, "weight_exp"),
        ("q_dense", {"weight_exp": 0, "delay": -1}, "delay"),
        ("conv2d", {"input_shape": [1, 8, 8], "stride": [0, 1]}, "stride"),
        ("avgpool", {"input_shape": [1, 8], "kernel": [2, 2], "stride": [2, 2]}, "input_shape"),
        ("q_readout", {"state_scale": 0.0}, "state_scale"),
        ("dense", {"surprise": 1}, "surprise"),
    ],
)
def test_each_bad_node_field_is_one_line_naming_node_and_field(kind, fields, field) -> None:
    with pytest.raises(IRError, match=rf"^q.json: node 'n': {field}"):
        check_node_entry(_entry(kind, **fields), 0, "q.json")


def test_node_entry_keys_and_kind() -> None:
    with pytest.raises(IRError, match="node '#3': "):
        check_node_entry([1, 2], 3, "q.json")
    with pytest.raises(IRError, match="node 'n': kind"):
        check_node_entry(_entry("q_magic"), 0, "q.json")
    with pytest.raises(IRError, match="node 'n': inputs"):
        check_node_entry({**_entry("dense"), "inputs": "input"}, 0, "q.json")


def test_the_schema_covers_every_node_kind_and_scalar_field() -> None:
    # a new node kind or field must get its schema, or files holding it cannot be loaded
    assert set(NODE_FIELDS) == set(NODE_TYPES)
    for kind, cls in NODE_TYPES.items():
        scalars = {f.name for f in dataclasses.fields(cls) if f.type not in ("np.ndarray", "Any")}
        assert set(NODE_FIELDS[kind].model_fields) == scalars, kind


def test_a_saved_graph_passes_and_an_edited_one_is_refused_before_its_arrays_load(tmp_path) -> None:
    import json

    from lmh_deploy.ir import Dense, Graph, Input, Readout, load_graph, save_graph

    g = Graph(meta={"timesteps": 4})
    g.add("input", Input(shape=(3,)))
    g.add("dense0", Dense(weight=np.ones((2, 3))), ("input",))
    g.add("readout", Readout(bias=np.zeros(2)), ("dense0",))
    save_graph(g, tmp_path, "ir")
    load_graph(tmp_path, "ir")
    doc = json.loads((tmp_path / "ir.json").read_text())
    doc["meta"]["timesteps"] = 10**9
    (tmp_path / "ir.json").write_text(json.dumps(doc))
    (tmp_path / "ir.npz").write_bytes(b"not read")  # the schema refuses before the arrays load
    with pytest.raises(IRError, match=r"ir.json: meta.timesteps: input should be less than or equal to 1024"):
        load_graph(tmp_path, "ir")
