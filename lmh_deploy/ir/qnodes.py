"""Integer IR nodes, as the quantise pass produces them (Loihi 2 fixed point)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lmh_deploy.ir.base import Node
from lmh_deploy.ir.nodes import Conv2d


@dataclass(frozen=True)
class QInput(Node):
    """Input quantised to unsigned ``bits``: ``x_int = clip(floor(x * scale + 1/2), 0, 2**bits - 1)``."""

    kind: ClassVar[str] = "q_input"
    shape: tuple[int, ...]
    scale: float
    bits: int

    def output_size(self) -> int:  # noqa: D102
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class QDense(Node):
    """Integer synapses: ``a = (sum_j 2*m_ij x_j) << weight_exp`` (Lava weights = ``2*m``).

    The composition of every float synapse node between two neuron layers (e.g. pool ->
    conv). ``weight_mant`` is a dense int array, or a ``scipy.sparse.csr_matrix`` for
    convolutions and pooling. ``graded`` is true when the presynaptic side sends integers
    (the input layer). ``delay`` is the number of extra steps this path must wait so that
    parallel branches into one neuron arrive together (residual shortcuts).

    A single convolution (possibly with a pooling folded in) keeps its kernel instead of a
    matrix: ``weight_mant`` is then (C_out, C_in, kh, kw) and ``conv_input_shape``,
    ``conv_stride``, ``conv_padding`` give its geometry, so large networks never
    materialise their synaptic matrices (``lmh_deploy.ir.synapses.qdense_matrix`` does,
    on demand).
    """

    kind: ClassVar[str] = "q_dense"
    weight_mant: Any  # np.ndarray | scipy.sparse.csr_matrix, int, |m| <= 127
    weight_exp: int
    graded: bool
    weight_scale: float  # float weight (times presynaptic amplitude) = m / weight_scale
    delay: int = 0
    conv_input_shape: tuple[int, ...] | None = None
    conv_stride: tuple[int, ...] = (1, 1)
    conv_padding: tuple[int, ...] = (0, 0)

    @property
    def is_conv(self) -> bool:  # noqa: D102
        return self.conv_input_shape is not None

    def conv_node(self, weight=None) -> Conv2d:
        """The float Conv2d node with this geometry (``weight`` defaults to the mantissas)."""
        return Conv2d(weight=self.weight_mant if weight is None else weight,
                      input_shape=tuple(self.conv_input_shape), stride=tuple(self.conv_stride),
                      padding=tuple(self.conv_padding))

    def output_size(self) -> int:  # noqa: D102
        if self.is_conv:
            return self.conv_node().output_size()
        return int(self.weight_mant.shape[0])

    def input_size(self) -> int:  # noqa: D102
        return int(np.prod(self.conv_input_shape)) if self.is_conv else int(self.weight_mant.shape[1])


@dataclass(frozen=True)
class QLMH(Node):
    """Integer LM-H layer; see :mod:`lmh_deploy.semantics.integer` for the exact arithmetic.

    ``state_scale`` is integer state units per float unit (``theta = theta_float * scale``).
    """

    kind: ClassVar[str] = "q_lmh"
    size: int
    theta: int
    mu_d: np.ndarray
    mu_s: np.ndarray
    lam_d_off: np.ndarray
    lam_s_off: np.ndarray
    bias: np.ndarray
    state_scale: float

    def output_size(self) -> int:  # noqa: D102
        return self.size


@dataclass(frozen=True)
class QReadout(Node):
    """Integer readout: ``logits_int = sum_t a[t] + T * bias``; float logits = that / (T*scale)."""

    kind: ClassVar[str] = "q_readout"
    bias: np.ndarray
    state_scale: float

    def output_size(self) -> int:  # noqa: D102
        return int(self.bias.shape[0])
