"""Compiled event-driven synaptic gather (numba): only active presynaptic inputs are read."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _gather_binary(pre, w_t, out):
    rows, n_in = pre.shape
    n_out = w_t.shape[1]
    for r in range(rows):
        for j in range(n_in):
            if pre[r, j]:
                for o in range(n_out):
                    out[r, o] += w_t[j, o]


@numba.njit(cache=True, nogil=True)
def _gather_values(pre, w_t, out):
    rows, n_in = pre.shape
    n_out = w_t.shape[1]
    for r in range(rows):
        for j in range(n_in):
            v = pre[r, j]
            if v != 0:
                for o in range(n_out):
                    out[r, o] += v * w_t[j, o]


def gather_rows(pre: np.ndarray, w_t: np.ndarray, out: np.ndarray) -> None:
    """``out[r] += sum_j pre[r, j] * w_t[j]`` over the nonzero ``pre[r, j]`` only (in place).

    ``pre`` (rows, n_in) bool spikes or integers, ``w_t`` (n_in, n_out) int32/int64, ``out``
    (rows, n_out) of ``w_t``'s dtype; exact while every sum fits that dtype (the caller checks).
    """
    if pre.dtype == bool:
        _gather_binary(pre.view(np.uint8), w_t, out)
    else:
        _gather_values(pre.astype(np.int64, copy=False), w_t, out)
