"""Node base class, the IR error type and field checks shared by all nodes.

Nodes are immutable: frozen dataclasses whose numpy arrays (and the data/indices/indptr of
scipy CSR matrices) are read-only. Passes therefore share nodes between graphs safely and
build changed nodes with :func:`dataclasses.replace` (or :meth:`Graph.replace`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from lmh_deploy.errors import UserError


class IRError(UserError, ValueError):
    """An invalid graph; the message names the node or edge at fault."""


def check_finite(owner: str, name: str, arr: np.ndarray) -> None:
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise IRError(f"{owner}: {name} must be numeric, got {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise IRError(f"{owner}: {name} has a non-finite value {arr[tuple(bad)]} at index {bad}")


def check_integers(owner: str, name: str, value: Any, lo: int, hi: int) -> None:
    """``value`` (a scalar, array or CSR matrix) holds integers within ``[lo, hi]``."""
    arr = value.data if sp.issparse(value) else np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise IRError(f"{owner}: {name} must be integer, got {arr.dtype}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = arr.min() if arr.min() < lo else arr.max()
        raise IRError(f"{owner}: {name}={int(bad)} outside its integer range [{lo}, {hi}]")


def check_positive(owner: str, name: str, value: Any) -> None:
    """A finite scale > 0."""
    if not (isinstance(value, Real) and math.isfinite(value) and float(value) > 0):
        raise IRError(f"{owner}: {name} must be finite and > 0, got {value!r}")


def _read_only(arr: Any) -> bool:
    """True when neither ``arr`` nor any array it views can be written through."""
    while isinstance(arr, np.ndarray):
        if arr.flags.writeable:
            return False
        arr = arr.base
    return arr is None or isinstance(arr, bytes)


def frozen_array(value: Any) -> Any:
    """``value`` as a read-only array the node owns; other values pass through unchanged.

    A writable array (or one viewing writable memory) is copied, so the caller's array stays
    writable and later writes to it cannot reach the node. A CSR matrix is copied into
    canonical form first: scipy then never needs to sort or merge its arrays in place.
    """
    if sp.issparse(value):
        parts = (value.data, value.indices, value.indptr) if value.format == "csr" else ()
        if parts and all(_read_only(a) for a in parts) and isinstance(value, sp.csr_matrix):
            return value
        csr = sp.csr_matrix(value, copy=True)
        csr.sum_duplicates()
        for part in (csr.data, csr.indices, csr.indptr):
            part.setflags(write=False)
        return csr
    if isinstance(value, np.ndarray):
        if _read_only(value):
            return value
        owned = value.copy()
        owned.setflags(write=False)
        return owned
    return value


@dataclass(frozen=True)
class Node:
    """Base of all IR nodes. ``kind`` is the registry key used in JSON."""

    kind: ClassVar[str] = "node"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            frozen = frozen_array(value)
            if frozen is not value:
                object.__setattr__(self, f.name, frozen)

    def output_size(self) -> int:
        """Number of output channels (flattened)."""
        raise NotImplementedError

    def input_size(self) -> int:
        """Number of inputs a synapse node takes (flattened); synapse kinds define it."""
        raise NotImplementedError(f"{self.kind} nodes have no fixed input size")

    def check(self, name: str) -> None:
        """Raise :class:`IRError` naming ``name`` if a field is malformed."""
