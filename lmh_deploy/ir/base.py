"""Node base class, the IR error type and field checks shared by all nodes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

class IRError(ValueError):
    """An invalid graph; the message names the node or edge at fault."""


def _check_finite(owner: str, name: str, arr: np.ndarray) -> None:
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise IRError(f"{owner}: {name} has a non-finite value {arr[tuple(bad)]} at index {bad}")


@dataclass
class Node:
    """Base of all IR nodes. ``kind`` is the registry key used in JSON."""

    kind: ClassVar[str] = "node"

    def output_size(self) -> int:
        """Number of output channels (flattened)."""
        raise NotImplementedError

    def check(self, name: str) -> None:
        """Raise :class:`IRError` naming ``name`` if a field is malformed."""
