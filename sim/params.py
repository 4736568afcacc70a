"""Kernel-ready parameters of one integer neuron layer: the profile and rules as small codes.

The integer step itself is defined in :mod:`lmh_deploy.semantics`; this module only turns a
``QLMH`` node into the flat arrays and integer codes the compiled kernels take, so that the
kernels never look at strings or Python objects in their inner loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmh_deploy.semantics.integer import LMHFixedParams, initial_ints
from lmh_deploy.semantics.profiles import get_profile

#: Rounding of a factor product ``f * v / 4096`` (codes shared by every kernel).
ROUNDING_CODES = {"half-up": 0, "toward-zero": 1, "floor": 2}
#: Overflow handling of a state update.
OVERFLOW_CODES = {"saturate": 0, "saturate-symmetric": 1, "wrap": 2}


@dataclass(frozen=True)
class NeuronParams:
    """One layer's integer step in kernel form.

    Factor rows are FULL multipliers over 4096, shape (K, n) (per-layer factors are
    broadcast to n): step ``t`` uses row ``min(t, K - 1)`` (K = T for radical factors).
    """

    mu_d: np.ndarray
    mu_s: np.ndarray
    lam_d: np.ndarray
    lam_s: np.ndarray
    bias_d: np.ndarray  # (n,) int64 added to the dendrite
    bias_s: np.ndarray  # (n,) int64 added to the soma
    theta: int
    reset_value: int
    v_d_init: int | np.ndarray  # one value per layer, or (n,) per neuron
    v_s_init: int
    input_shift: int
    rounding: int  # ROUNDING_CODES
    overflow_d: int  # OVERFLOW_CODES
    overflow_s: int
    threshold_gt: bool  # spike when m > theta (else m >= theta)
    reset_set: bool  # v_s := reset_value on a spike (else subtract theta)
    next_step: bool  # the reset of step t applies at step t + 1 (snnTorch's reset_delay)
    profile: str = "lmh"
    max_spikes: int = 1  # > 1: graded spikes (counts), run by the semantics' own step
    v_s_min: int | None = None  # a soma floor (sinabs's min_v_mem), run by the semantics too

    @property
    def by_semantics(self) -> bool:
        """Rules the fast kernels do not restate (graded spikes, a soma floor): this layer runs
        :func:`~lmh_deploy.semantics.integer.lmh_step` itself."""
        return self.max_spikes > 1 or self.v_s_min is not None

    def fixed_params(self) -> LMHFixedParams:
        """The same layer as :mod:`lmh_deploy.semantics`' parameter bundle (graded layers run
        :func:`~lmh_deploy.semantics.integer.lmh_step` itself)."""
        bias_to_soma = get_profile(self.profile).bias_to == "soma"
        return LMHFixedParams(
            mu_d=self.mu_d,
            mu_s=self.mu_s,
            lam_d=self.lam_d,
            lam_s=self.lam_s,
            theta=self.theta,
            bias=self.bias_s if bias_to_soma else self.bias_d,
            profile=get_profile(self.profile),
            reset="set" if self.reset_set else "subtract",
            reset_value=self.reset_value,
            threshold_test=">" if self.threshold_gt else ">=",
            reset_timing="next-step" if self.next_step else "same-step",
            v_d_init=self.v_d_init,
            v_s_init=self.v_s_init,
            max_spikes=self.max_spikes,
            v_s_min=self.v_s_min,
        )

    @property
    def size(self) -> int:
        return int(self.bias_d.shape[0])

    @property
    def rows(self) -> int:
        """K: the number of factor rows."""
        return int(self.mu_d.shape[0])


def _rows(values, size: int) -> np.ndarray:
    """Factor codes as a contiguous (K, n) int64 array."""
    a = np.asarray(values, np.int64)
    a = a.reshape(1, -1) if a.ndim < 2 else a.reshape(a.shape[0], -1)
    return np.ascontiguousarray(np.broadcast_to(a, (a.shape[0], size)))


def neuron_params(node) -> NeuronParams:
    """The kernel parameters of a ``QLMH`` node (its profile and neuron rules included)."""
    n = int(node.size)
    profile = get_profile(node.profile)
    bias = np.broadcast_to(np.asarray(node.bias, np.int64), (n,)).copy()
    zero = np.zeros(n, np.int64)
    theta = int(node.theta)
    return NeuronParams(
        mu_d=_rows(node.mu_d, n),
        mu_s=_rows(node.mu_s, n),
        lam_d=_rows(node.lam_d, n),
        lam_s=_rows(node.lam_s, n),
        bias_d=bias if profile.bias_to == "dendrite" else zero,
        bias_s=bias if profile.bias_to == "soma" else zero,
        theta=theta,
        reset_value=int(node.reset_value),
        v_d_init=initial_ints(node.v_d_init),
        v_s_init=theta // 2 if node.v_s_init is None else int(node.v_s_init),
        input_shift=int(profile.input_shift),
        rounding=ROUNDING_CODES[profile.rounding],
        overflow_d=OVERFLOW_CODES[profile.overflow_v_d],
        overflow_s=OVERFLOW_CODES[profile.overflow_v_s],
        threshold_gt=node.threshold_test == ">",
        reset_set=node.reset == "set",
        next_step=node.reset_timing == "next-step",
        profile=profile.name,
        max_spikes=int(node.max_spikes),
        v_s_min=None if node.v_s_min is None else int(node.v_s_min),
    )
