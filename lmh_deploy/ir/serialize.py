"""JSON + npz serialisation of graphs (arrays read with ``allow_pickle=False``)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmh_deploy.ir.base import IRError, Node
from lmh_deploy.ir.graph import NODE_TYPES, Graph

IR_FORMAT_VERSION = 1


def _split_fields(node: Node) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    scalars, arrays = {}, {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if sp.issparse(value):  # CSR as its three arrays plus shape, no pickling
            csr = sp.csr_matrix(value)
            arrays.update({f"{f.name}.csr_data": csr.data, f"{f.name}.csr_indices": csr.indices,
                           f"{f.name}.csr_indptr": csr.indptr,
                           f"{f.name}.csr_shape": np.asarray(csr.shape)})
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
    nodes, arrays = [], {}
    for name in graph.order():
        node = graph.node(name)
        scalars, node_arrays = _split_fields(node)
        nodes.append({"name": name, "kind": node.kind, "inputs": graph.inputs_of(name),
                      "fields": scalars, "arrays": sorted(node_arrays)})
        arrays.update({f"{name}/{k}": v for k, v in node_arrays.items()})
    doc = {"format": "lmh-deploy/ir", "format_version": IR_FORMAT_VERSION,
           "meta": graph.meta, "nodes": nodes}
    json_path, npz_path = directory / f"{stem}.json", directory / f"{stem}.npz"
    json_path.write_text(json.dumps(doc, indent=1))
    np.savez(npz_path, **arrays)
    return [json_path, npz_path]


def load_graph(directory: str | Path, stem: str) -> Graph:
    """Read a graph written by :func:`save_graph`; raise :class:`IRError` naming the file."""
    directory = Path(directory)
    json_path, npz_path = directory / f"{stem}.json", directory / f"{stem}.npz"
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IRError(f"{json_path}: cannot read IR: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != "lmh-deploy/ir":
        raise IRError(f"{json_path}: not an lmh-deploy IR file")
    if doc.get("format_version") != IR_FORMAT_VERSION:
        raise IRError(f"{json_path}: unknown IR format version {doc.get('format_version')!r} "
                      f"(this lmh-deploy reads version {IR_FORMAT_VERSION})")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise IRError(f"{npz_path}: cannot read IR arrays: {exc}") from None
    graph = Graph(meta=doc.get("meta", {}))
    for entry in doc["nodes"]:
        cls = NODE_TYPES.get(entry["kind"])
        if cls is None:
            raise IRError(f"{json_path}: node {entry['name']!r} has unknown kind {entry['kind']!r}")
        fields = dict(entry["fields"])
        for key, value in fields.items():
            if isinstance(value, list):
                fields[key] = tuple(value)
        for key in entry["arrays"]:
            if key.endswith(".csr_data"):
                base = key.removesuffix(".csr_data")
                get = lambda part: arrays[f"{entry['name']}/{base}.csr_{part}"]  # noqa: E731
                fields[base] = sp.csr_matrix((get("data"), get("indices"), get("indptr")),
                                             shape=tuple(get("shape")))
            elif ".csr_" not in key:
                fields[key] = arrays[f"{entry['name']}/{key}"]
        try:
            node = cls(**fields)
        except TypeError as exc:
            raise IRError(f"{json_path}: node {entry['name']!r} ({entry['kind']}) has bad fields: "
                          f"{exc}") from None
        graph.add(entry["name"], node, tuple(entry["inputs"]))
    return graph
