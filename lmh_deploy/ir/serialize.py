"""JSON + npz serialisation of graphs (arrays read with ``allow_pickle=False``)."""

from __future__ import annotations

import dataclasses
import json
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmh_deploy.ir.base import IRError, Node
from lmh_deploy.ir.graph import NODE_TYPES, Graph
from lmh_deploy.ir.schema import check_graph_document
from lmh_deploy.ir.validate import validate_any

#: 2: integer LM-H layers store full factor multipliers, neuron rules and a numeric profile.
IR_FORMAT_VERSION = 2


def _split_fields(node: Node) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    scalars: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if sp.issparse(value):  # CSR as its three arrays plus shape, no pickling
            csr = sp.csr_matrix(value)
            arrays.update(
                {
                    f"{f.name}.csr_data": csr.data,
                    f"{f.name}.csr_indices": csr.indices,
                    f"{f.name}.csr_indptr": csr.indptr,
                    f"{f.name}.csr_shape": np.asarray(csr.shape),
                }
            )
        elif isinstance(value, np.ndarray):
            arrays[f.name] = value
        elif isinstance(value, tuple):
            scalars[f.name] = list(value)
        elif isinstance(value, (np.integer, np.floating, np.bool_)):
            scalars[f.name] = value.item()
        else:
            scalars[f.name] = value
    return scalars, arrays


def save_graph(graph: Graph, directory: str | Path, stem: str) -> list[Path]:
    """Write ``stem.json`` + ``stem.npz`` into ``directory``; returns the paths written."""
    directory = Path(directory)
    nodes: list[dict[str, Any]] = []
    arrays: dict[str, Any] = {}  # Any: numpy 2 stubs type savez(**kw) values as bool
    for name in graph.order():
        node = graph.node(name)
        scalars, node_arrays = _split_fields(node)
        nodes.append(
            {
                "name": name,
                "kind": node.kind,
                "inputs": graph.inputs_of(name),
                "fields": scalars,
                "arrays": sorted(node_arrays),
            }
        )
        arrays.update({f"{name}/{k}": v for k, v in node_arrays.items()})
    doc = {"format": "lmh-deploy/ir", "format_version": IR_FORMAT_VERSION, "meta": graph.meta, "nodes": nodes}
    json_path, npz_path = directory / f"{stem}.json", directory / f"{stem}.npz"
    json_path.write_text(json.dumps(doc, indent=1))
    np.savez(npz_path, **arrays)
    return [json_path, npz_path]


def _has_declared_type(value: Any, declared: str) -> bool:
    """Whether a value read from a file has its field's declared type (others: not judged)."""
    if declared == "np.ndarray":
        return isinstance(value, np.ndarray)
    if declared in ("int", "float"):
        kind = Integral if declared == "int" else Real
        return isinstance(value, kind) and not isinstance(value, bool)
    if declared == "bool":
        return isinstance(value, bool)
    if declared.startswith("tuple[int"):
        return (value is None and declared.endswith("None")) or (
            isinstance(value, tuple)
            and all(isinstance(d, Integral) and not isinstance(d, bool) for d in value)
        )
    return True


def _read_node(entry: dict[str, Any], arrays: dict[str, np.ndarray]) -> Node:
    """One node from its JSON entry and the npz arrays (CSR matrices from their parts)."""
    cls = NODE_TYPES[entry["kind"]]  # a known kind: the schema checked the entry
    fields = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in dict(entry["fields"]).items()
    }
    for key in entry["arrays"]:
        if key.endswith(".csr_data"):
            base = key.removesuffix(".csr_data")
            parts = {
                part: arrays[f"{entry['name']}/{base}.csr_{part}"]
                for part in ("data", "indices", "indptr", "shape")
            }
            fields[base] = sp.csr_matrix(
                (parts["data"], parts["indices"], parts["indptr"]),
                shape=tuple(int(d) for d in parts["shape"]),
            )
        elif ".csr_" not in key:
            fields[key] = arrays[f"{entry['name']}/{key}"]
    for f in dataclasses.fields(cls):
        if f.name in fields and not _has_declared_type(fields[f.name], str(f.type)):
            raise IRError(
                f"node {entry['name']!r} ({entry['kind']}): field {f.name} should be "
                f"{f.type}, got {type(fields[f.name]).__name__}"
            )
    try:
        return cls(**fields)
    except TypeError as exc:
        raise IRError(f"node {entry['name']!r} ({entry['kind']}) has bad fields: {exc}") from None


def read_graph_document(json_path: str | Path) -> dict[str, Any]:
    """The JSON half of a saved graph, checked: readable, this format and version, and the
    meta and every node entry valid under :mod:`lmh_deploy.ir.schema`. No array is read, so
    this is cheap enough to run before anything heavy (the CLI does, for an artifact)."""
    json_path = Path(json_path)
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IRError(f"{json_path}: cannot read IR: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != "lmh-deploy/ir":
        raise IRError(f"{json_path}: not an lmh-deploy IR file")
    if doc.get("format_version") == 1:
        raise IRError(
            f"{json_path}: IR format version 1 was written by an older lmh-deploy "
            f"(factors stored as lambda - 1, no neuron rules or numeric profile); "
            f"recompile the model with this version"
        )
    if doc.get("format_version") != IR_FORMAT_VERSION:
        raise IRError(
            f"{json_path}: unknown IR format version {doc.get('format_version')!r} "
            f"(this lmh-deploy reads version {IR_FORMAT_VERSION})"
        )
    check_graph_document(doc, str(json_path))
    return doc


def load_graph(directory: str | Path, stem: str) -> Graph:
    """Read and validate a graph written by :func:`save_graph`.

    Raises :class:`IRError` naming the file (and the node) when it cannot be read, breaks
    the schema (checked before any array is read: :func:`read_graph_document`) or the
    graph it holds is invalid (:func:`~lmh_deploy.ir.validate.validate_any`).
    """
    directory = Path(directory)
    json_path, npz_path = directory / f"{stem}.json", directory / f"{stem}.npz"
    doc = read_graph_document(json_path)
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise IRError(f"{npz_path}: cannot read IR arrays: {exc}") from None
    for arr in arrays.values():
        arr.setflags(write=False)  # freshly read: the nodes can own them without a copy
    graph = Graph(meta=doc["meta"])
    for index, entry in enumerate(doc["nodes"]):
        name = entry.get("name", f"#{index}") if isinstance(entry, dict) else f"#{index}"
        try:
            graph.add(name, _read_node(entry, arrays), tuple(entry["inputs"]))
        except IRError as exc:
            raise IRError(f"{json_path}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise IRError(f"{json_path}: node {name!r} is malformed: {type(exc).__name__}: {exc}") from None
    try:
        validate_any(graph)
    except IRError as exc:
        raise IRError(f"{json_path}: {exc}") from None
    return graph
