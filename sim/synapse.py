"""The synaptic sum of one integer synapse path, defined once for every backend and device.

A ``QDense`` path delivers ``a_in = shift(2 * S, weight_exp)`` with ``S = sum_j m_ij x_j``
(``m`` the 8-bit mantissas, ``x`` spikes 0/1 or graded input values, ``shift`` a left
shift or an arithmetic right shift, i.e. floor, for a negative exponent: Lava's Dense with
weights ``2 m``). :class:`SynapsePath` computes ``S`` exactly; the ways it can do so:

* ``gemm``: float BLAS (matrix product or convolution). Exact because every partial sum is
  an integer of magnitude <= ``bound = max|m| * max|x| * fan_in``: float32 when
  ``bound < 2**24``, float64 when ``bound < 2**53`` (on torch devices other than the CPU
  always float64: cuDNN may use TF32 for float32), int64 arithmetic beyond that.
* ``int8``: integer matrix products of the CPU's int8 units (VNNI / AMX through oneDNN: on
  this project's machine 7-20x the float32 multiply-adds per second), for binary input:
  ``torch._int_mm`` (int8 x int8 -> int32) for a dense layer, ``|S| <= 127 * fan_in < 2**31``
  required (checked once); oneDNN's u8 x s8 convolution (``torch.ops.onednn``, int32
  accumulation, written out as float32) for a convolution whose (sum-pooled) input values
  are at most 129 and whose sums stay below ``2**24``: every u8 x s8 pair then sums below
  ``2**15`` too, so even a CPU without VNNI (whose int8 kernels add pairs of products in
  saturating 16 bits) computes the exact integers. A convolution whose (pooled) input has
  no more positions than the kernel has taps (VGG-13's 2 x 2 layers) is instead one packed
  u8 x s8 matrix product with its unrolled kernel (:func:`~lmh_deploy.sim.conv.unrolled_kernel`):
  no columns gathered, no padding zeros multiplied, the same sums.
* ``events``: only the active presynaptic columns (spikes that occurred) are read: work
  proportional to the events. Rows of ``m^T`` are summed as float32/float64 under the same
  bound as ``gemm`` (a sparse-times-dense product), or as int32 by a compiled gather. A
  convolution of spikes (or their sum-pool) gathers, for each output, the kernel taps of
  the active input channels it meets, in int16 vector registers
  (:func:`~lmh_deploy.sim.gather.conv_gather`; int32 sums, when ``bound <= 2**31 - 1``);
  other integer inputs scatter each event's taps (:func:`~lmh_deploy.sim.gather.conv_scatter`).
  Against oneDNN's int8 convolution on the conv nets' own layers (bench/conv_ways.py, one
  thread, idle): faster on VGG-13's spike inputs of 128-512 channels (1.35-1.92x; 0.96x at
  64 channels), 0.96-1.46x on ResNet-19's (its inputs fire 15-20 %), slower on sum-pooled
  inputs (0.44-0.71x: a pooled input holds about 4x the events); the planner measures
  both per layer.

A convolution whose kernel is constant over aligned ``sy x sx`` blocks at stride
``(sy, sx)`` (what the quantiser makes of an average pooling followed by a convolution:
:func:`lmh_deploy.ir.synapses.pool_conv_kernel`) runs as an exact integer sum-pool followed
by the ``sy * sx`` times smaller kernel at stride 1 (:class:`ConvPlan`): the same integers
for a fraction of the multiply-adds.

All ways give identical integers; :meth:`SynapsePath.sums` picks one per call from the
number of rows and the measured fraction of active inputs (timing both from time to time).
A path with a max pool of currents (``QDense.max_pool``) pools the sums last
(:func:`lmh_deploy.semantics.pooling.max_pool`: the maximum commutes with the weight
exponent's monotone shift, so pooling ``S`` pools ``a_in``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmh_deploy.ir.synapses import qdense_fan_out
from lmh_deploy.sim.way_costs import WayCosts
from lmh_deploy.sim.conv import (
    ConvPlan,
    channels_last_order,
    conv_plan,
    flat_rows,
    pooled_integers,
    run_conv,
    unrolled_fits,
    unrolled_kernel,
)
from lmh_deploy.semantics.pooling import max_pool

F32_EXACT = 2.0**24
F64_EXACT = 2.0**53
INT32_LIMIT = 2**31 - 1
#: Re-time the runner-up way every this many calls (firing rates drift during a run).
RETIME_EVERY = 64
#: Seconds per unit of work assumed for a way not yet timed (float conv/BLAS per multiply-add,
#: events per tap or row added; one thread of this project's machine kind, rounded). They only
#: order the first calls: the likelier faster way runs (and is timed) first, so a run too short
#: to time both ways still takes it; measured costs replace them.
PRIOR_COST = {"gemm": 6e-11, "events": 3e-10, "int8": 1e-11}
#: Output positions (H x W) up to which the int8 convolution is one matrix product of its
#: columns (:meth:`SynapsePath._int8_columns`)
SMALL_CONV_OUTPUTS = 16
#: Largest (sum-pooled) input value of the int8 convolution: ``2 * 129 * 127 < 2**15``.
INT8_CONV_INPUT_MAX = 129
#: A CSR weight matrix at least this dense is kept dense here (the same integers): scipy's
#: sparse product runs a scalar loop, ~50x slower per nonzero than float BLAS per
#: multiply-add (VGG-13's pool-composed first classifier layer is CSR at 99.6 % density), and
#: from this density on dense float32 takes no more memory than CSR's 12 bytes a nonzero.
DENSE_ENOUGH = 0.5
#: A dense layer whose float weights would take more bytes than this keeps only its int8 rows
#: and converts a block of them at a time for the float product (exact: every partial sum is
#: an integer below the float's exact range, as the whole sum is)
FLOAT_COPY_BYTES = 64 << 20
#: Weight entries converted per block of that product
GEMM_BLOCK_ENTRIES = 1 << 22


def lava_current(sums, weight_exp: int):
    """``a_in = shift(2 * S, weight_exp)`` as int64 (numpy array or torch tensor). Float sums
    hold integers (the paths keep them below 2**24 in float32, 2**53 in float64); they are
    rounded, not truncated, so that a device convolution algorithm that missed an integer by
    a rounding error would still give it (no test here can produce such a sum: CPU only)."""
    if type(sums).__module__.startswith("torch"):
        import torch

        a = sums.to(torch.int64) if not sums.is_floating_point() else torch.round(sums).to(torch.int64)
    else:
        a = sums.astype(np.int64) if sums.dtype.kind != "f" else np.rint(sums).astype(np.int64)
    a = a * 2
    return a << weight_exp if weight_exp >= 0 else a >> -weight_exp


def summed_current(parts: list[tuple[Any, int | None, float | None]]):
    """``a_in = sum_i shift(2 * S_i, e_i)`` of several paths into one layer (residual blocks).

    ``parts`` are ``(S_i, e_i, bound_i)``: raw sums (numpy arrays or torch tensors, float or
    integer), weight exponents and bounds on ``|S_i|``. The sum is formed in float, one pass
    per path: ``2 * S * 2**e`` is exact (a power of two), ``floor`` of it is the arithmetic
    right shift, and every ``S_i``, term and partial sum is an integer below ``2**24`` when
    float32 is used, else below ``2**53`` in float64. Beyond that, int64 path by path.
    Two numpy parts with numba: one compiled pass in int64 arithmetic
    (:func:`lmh_deploy.sim.gather.add_shifted`), int32 out where the sum's bound fits.
    """
    terms = [(s, e, float(b)) for s, e, b in parts if e is not None and b is not None]
    total = sum(2.0 * b * 2.0**e + 1 for _, e, b in terms)  # +1: floor of a negative
    largest = max(b for _, _, b in terms) if terms else 0.0
    if len(terms) < len(parts) or total >= F64_EXACT or largest >= F64_EXACT:
        return sum(lava_current(s, e) if e is not None else s for s, e, _ in parts)
    if len(terms) == 2 and all(isinstance(s, np.ndarray) for s, _, _ in terms) and _numba():
        from lmh_deploy.sim.fused import input_shifts
        from lmh_deploy.sim.gather import add_shifted

        (a, e_a, _), (b, e_b, _) = terms
        out = np.empty(np.broadcast_shapes(a.shape, b.shape), np.int32 if total <= INT32_LIMIT else np.int64)
        a, b = (np.ascontiguousarray(np.broadcast_to(x, out.shape)) for x in (a, b))
        add_shifted(a, input_shifts(e_a, 0), b, input_shifts(e_b, 0), out)
        return out
    wide = (
        total >= F32_EXACT
        or largest >= F32_EXACT
        or any(_is_float(s) and _float_bits(s) == 64 for s, _, _ in parts)
    )
    out = None
    for sums, exp, _ in terms:
        term = _scaled(sums, 2.0 ** (exp + 1), wide)  # a new array: the sums stay untouched
        if exp + 1 < 0:
            term = term.floor_() if hasattr(term, "floor_") else np.floor(term, out=term)
        if out is None:
            out = term
        else:
            out += term
    return out


def summed_bound(parts: list[tuple[Any, int | None, float | None]]) -> float | None:
    """A bound on ``|summed_current(parts)|``, None where a part has no bound."""
    if any(e is None or b is None for _, e, b in parts):
        return None
    return sum(2.0 * float(b) * 2.0**e + 1 for _, e, b in parts)


def _scaled(sums, factor: float, wide: bool):
    if hasattr(sums, "floor_"):  # a torch tensor
        import torch

        return sums.to(torch.float64 if wide else torch.float32) * factor
    return np.multiply(sums, factor, dtype=np.float64 if wide else np.float32)


def _is_float(a) -> bool:
    return a.is_floating_point() if hasattr(a, "is_floating_point") else a.dtype.kind == "f"


def _float_bits(a) -> int:
    return a.element_size() * 8 if hasattr(a, "element_size") else a.dtype.itemsize * 8


class SynapsePath:
    """Exact synaptic sums of one ``QDense`` (prepared once: weights, bounds, dtypes).

    ``device=None`` works on numpy arrays; a torch device string works on tensors there.
    ``input_layout``: the (C, H, W) shape of the presynaptic layer where its rows hold the
    (H, W, C) order (channels last, :func:`lmh_deploy.sim.conv.channels_last_order`; a dense
    layer's weight columns are reordered to match); ``channels_last_out``: deliver the sums
    of a convolution in (H, W, C) order. The integers are the same in every order.
    ``largest_input`` (required for a graded path): the largest ``|x|`` its input sends
    (``QInput.max_value``: 255 for unsigned 8-bit messages, 32767 for signed 16-bit ones),
    which bounds the sums and so picks the exact float or integer way.
    """

    def __init__(
        self,
        node,
        device: str | None = None,
        input_layout: tuple[int, int, int] | None = None,
        channels_last_out: bool = False,
        largest_input: int | None = None,
    ) -> None:
        self.node = node
        self.weight_exp = int(node.weight_exp)
        self.graded = bool(node.graded)
        if self.graded and largest_input is None:
            raise ValueError("a graded path needs largest_input (QInput.max_value)")
        self.is_conv = bool(node.is_conv)
        self.device = device
        self.in_cl, self.out_cl = input_layout is not None, bool(channels_last_out and node.is_conv)
        if self.is_conv and input_layout is not None and tuple(input_layout) != tuple(node.conv_input_shape):
            raise ValueError(f"input layout {input_layout} is not the conv input {node.conv_input_shape}")
        mant = node.weight_mant
        if sp.issparse(mant) and mant.nnz >= DENSE_ENOUGH * np.prod(mant.shape):
            mant = mant.toarray()
        if input_layout is not None and not self.is_conv:
            mant = mant[:, channels_last_order(input_layout)]
        self.sparse = sp.issparse(mant)
        max_x = int(largest_input) if self.graded and largest_input is not None else 1
        self.conv: ConvPlan | None = conv_plan(node) if self.is_conv else None
        if self.conv is not None:  # bound on the partial sums of the (possibly factored) conv
            mant, max_x = self.conv.kernel, max_x * self.conv.pool_area
        peak_w = float(abs(mant).max()) if np.prod(mant.shape) else 0.0
        fan_in = int(np.prod(mant.shape[1:]))
        self.bound = peak_w * max_x * fan_in
        self.n_out = int(node.sums_size())  # before the max pool, if any
        self.n_in = int(node.input_size())
        pool = node.max_pool
        self.pool_windows = None if pool is None else pool.windows()
        if pool is not None and self.out_cl:
            raise ValueError("a max-pooled path delivers its sums in (C, H, W) order only")
        self.fan_out = qdense_fan_out(node)
        #: ``fan_out`` in the order of this path's input rows ((H, W, C) where the input is
        #: channels last): a layer's spike counts as the simulator holds them meet it directly
        self.fan_out_rows = (
            self.fan_out if input_layout is None else self.fan_out[channels_last_order(input_layout)]
        )
        on_cpu = device is None or str(device).startswith("cpu")
        if self.bound < F32_EXACT and on_cpu:
            self.float_dtype = np.float32
        elif self.bound < F64_EXACT:
            self.float_dtype = np.float64
        else:
            self.float_dtype = None  # int64 arithmetic
        self.int8_ok = (
            not self.graded and not self.is_conv and not self.sparse and 127 * fan_in <= INT32_LIMIT
        )
        self._prepare(mant)
        #: a diagonal convolution of binary input in one layout: its channel scales, int16
        #: where they fit (the sums are the scales themselves), for a compiled select
        self.diagonal_spikes = None
        if self.conv is not None and self.conv.diagonal and not self.graded and self.in_cl == self.out_cl:
            scale = self.conv.kernel.reshape(-1)
            small = int(np.abs(scale).max(initial=0)) <= np.iinfo(np.int16).max
            self.diagonal_spikes = np.ascontiguousarray(scale, np.int16 if small else np.int64)
        conv_events = (
            self.conv is not None and not self.conv.diagonal and device is None and self.bound <= INT32_LIMIT
        )
        ways = ["gemm"] + (["events"] if not self.is_conv or conv_events else [])
        if device is None and (self.int8_ok or self._int8_conv_ok(peak_w, max_x)):
            ways.append("int8")
        #: the ways offered, each one's measured cost, and which runs next
        self.costs = WayCosts({way: PRIOR_COST[way] for way in ways}, RETIME_EVERY)

    @property
    def ways(self) -> list[str]:
        """The exact ways this path may take (``gemm``, ``events``, ``int8``)."""
        return self.costs.ways

    @ways.setter
    def ways(self, ways: list[str]) -> None:
        self.costs.ways = list(ways)

    def _int8_conv_ok(self, peak_w: float, max_x: int) -> bool:
        """The int8 convolution computes this path's sums exactly (module docstring).

        oneDNN 3.x's int8 convolution gives wrong sums where a stride above 1 meets an output
        one row or column wide (measured: every such failure of a sweep over 9,477 shapes at
        64 and 256 rows, and no other); those paths keep the other ways."""
        return (
            self.conv is not None
            and not self.conv.diagonal
            and not (self.conv.stride != (1, 1) and min(self.conv.out_hw) == 1)
            and not self.graded
            and peak_w <= 127
            and max_x <= INT8_CONV_INPUT_MAX
            and self.bound < F32_EXACT
            and _onednn_has("qconv2d_pointwise")
        )

    # ------------------------------------------------------------------ preparation
    def _prepare(self, mant) -> None:
        dtype = self.float_dtype or np.int64
        if self.is_conv:
            import torch

            w = np.ascontiguousarray(self.conv.kernel, dtype=dtype)
            #: the event scatter's (C_in, kh, kw, C_out) slabs of int32 taps: made on its first
            #: call (four times the kernel's entries; the gather below serves spikes)
            self.w_taps = None
            #: the event gather's blocks of taps (:func:`lmh_deploy.sim.gather.tap_blocks`):
            #: int8 where the mantissas fit (half the bytes read per event), else int16; None
            #: beyond int16 or without numba (the scatter, or the convolution, then)
            self.w_tap_blocks = None
            self.tap_peak = int(np.abs(self.conv.kernel).max(initial=0))
            if self.tap_peak <= np.iinfo(np.int16).max and self.device is None and _numba():
                from lmh_deploy.sim.gather import tap_blocks

                self.w_tap_blocks = tap_blocks(
                    self.conv.kernel, np.int8 if self.tap_peak <= 127 else np.int16
                )
            self.kernel = (
                torch.from_numpy(w) if self.device is None else torch.as_tensor(w, device=self.device)
            )
            return
        if self.sparse:
            self.w = sp.csr_matrix(mant, dtype=dtype)
            self.w_t = sp.csr_matrix(self.w.T)
        else:
            # only the (n_in, n_out) copy, one row per input: ``x @ w_t`` is the gemm (a
            # (n_out, n_in) copy as well would double the largest array of a wide layer)
            self.w_t = (
                np.ascontiguousarray(np.asarray(mant).T, dtype=dtype)
                if not self._blocked_gemm(mant)
                else None
            )
            # the compiled gather adds into int32 when every sum fits (it always does for
            # 8-bit mantissas unless fan_in * max|x| * 127 >= 2**31), reading int8 rows
            # (a quarter of int32's memory traffic: measured 1.5-1.9x faster)
            self.gather_dtype = np.int32 if self.bound <= INT32_LIMIT else np.int64
            rows = np.asarray(mant).T
            small = rows.size == 0 or int(np.abs(rows).max()) <= 127
            self.w_t_int = np.ascontiguousarray(rows, dtype=np.int8 if small else self.gather_dtype)
            self.gather_peak = int(np.abs(rows).max()) if rows.size else 0
        if self.device is not None:
            import torch

            dense = self.w.toarray() if self.sparse else np.asarray(mant, dtype)
            self.w_dev = torch.as_tensor(dense, device=self.device)
            if self.int8_ok:
                self.w_int8 = torch.as_tensor(np.asarray(mant, np.int8).T.copy(), device=self.device)

    def _blocked_gemm(self, mant) -> bool:
        """Whether the float product converts int8 row blocks (:data:`FLOAT_COPY_BYTES`)."""
        return (
            self.float_dtype is not None
            and self.device is None
            and int(np.abs(mant).max(initial=0)) <= 127
            and np.prod(mant.shape) * np.dtype(self.float_dtype).itemsize > FLOAT_COPY_BYTES
        )

    def _float_rows(self):
        """``w_t``: kept, or converted from the int8 rows for one use."""
        return self.w_t if self.w_t is not None else self.w_t_int.astype(self.float_dtype)

    # ------------------------------------------------------------------ the sums
    def sums(self, pre, active: int | None = None):
        """``S`` for presynaptic values ``pre`` (rows, n_in): (rows, n_out), exact integers
        (max-pooled where the path pools: (rows, pooled size)).

        The result is float32/float64 holding integers, or int64 / int32. ``active``: the
        number of nonzero values in ``pre`` if the caller knows it (a neuron layer counts its
        spikes), else counted here.
        """
        out = self._sums(pre, active)
        return out if self.pool_windows is None else max_pool(out, self.pool_windows)

    def _sums(self, pre, active: int | None = None):
        if self.device is not None:
            return self._sums_torch(pre)
        rows = pre.shape[0]
        if len(self.ways) == 1:
            return self._run(self.ways[0], pre)
        if active is None:
            active = np.count_nonzero(pre)
        if self.conv is not None:  # multiply-adds of the plan's conv; taps met by each event
            c_out, c_in, kh, kw = self.conv.kernel.shape
            taps = c_out * kh * kw / (self.conv.stride[0] * self.conv.stride[1])
            units = {
                "gemm": rows * c_in * taps * np.prod(self.conv.out_hw),
                "events": active * taps + pre.size + rows * self.n_out,
            }
        else:
            units = {"gemm": rows * self.n_in * self.n_out, "events": active * self.n_out + pre.size}
        units["int8"] = units["gemm"]
        way = self.costs.choose(units)
        start, cpu = time.perf_counter(), time.process_time()
        out = self._run(way, pre)
        # the smaller of wall and CPU time: CPU time leaves out the waits for a core on a
        # loaded machine (a long call is preempted more often, which made the way with
        # fewer, longer calls look dearer); wall time is smaller where a way runs threads
        self.costs.record(way, units[way], min(time.perf_counter() - start, time.process_time() - cpu))
        return out

    def _run(self, way: str, pre):
        return self._gemm(pre) if way == "gemm" else self._events(pre) if way == "events" else self._int8(pre)

    def _as(self, pre, dtype):
        return pre if pre.dtype == dtype else pre.astype(dtype)

    def _gemm(self, pre):
        if self.is_conv:
            return self._conv(pre)
        x = self._as(pre, self.float_dtype or np.int64)  # w_t is int64 without a float dtype
        if self.sparse:
            return np.asarray((self.w @ x.T).T)
        if self.w_t is not None:
            return x @ self.w_t
        out = np.zeros((x.shape[0], self.n_out), self.float_dtype)
        step = max(1, GEMM_BLOCK_ENTRIES // self.n_out)
        for k in range(0, self.n_in, step):
            out += x[:, k : k + step] @ self.w_t_int[k : k + step].astype(self.float_dtype)
        return out

    def _int8(self, pre):
        """The sums by the CPU's int8 matrix units (binary ``pre``; exact, module docstring)."""
        pre = np.ascontiguousarray(pre)
        with _PREPARING:  # once, also where a run's batch shards (threads) arrive together
            if self.conv is None and getattr(self, "qlinear", None) is None:
                self._prepare_int8_linear(pre.shape[0])
            if self.conv is not None and getattr(self, "qconv", None) is None:
                self._prepare_int8_conv(pre.shape[0])
        if self.conv is None:
            return self.int8_sums(pre).numpy() if self.qlinear is False else self._int8_linear(pre)
        return self._int8_conv(pre) if "int8" in self.ways else self._gemm(pre)

    def _prepare_int8_linear(self, rows: int) -> None:
        """Pack the int8 weight rows once for oneDNN's u8 x s8 matrix product (``torch._int_mm``
        repacks its weight operand on every call: 5x slower at 64 x 4096 x 4096) and check it
        once against ``_int_mm``; ``qlinear`` False (``_int_mm`` kept) where the check fails,
        the sums may reach ``2**24`` (float32 output) or torch lacks the operator."""
        import torch

        self.qlinear = False
        if self.bound >= F32_EXACT or not _onednn_has("qlinear_pointwise"):
            return

        w = torch.from_numpy(np.ascontiguousarray(self.w_t_int.T, np.int8))  # (n_out, n_in)
        self.qlinear_scale = torch.ones(self.n_out, dtype=torch.float32)
        self.qlinear_zero = torch.zeros(self.n_out, dtype=torch.int64)
        self.qlinear = torch.ops.onednn.qlinear_prepack(w, [rows, self.n_in])
        probe = np.random.default_rng(0).random((32, self.n_in)) < 0.5
        probe[0] = True
        if not np.array_equal(self._int8_linear(probe), self.int8_sums(probe).numpy()):
            self.qlinear = False

    def _int8_linear(self, pre):
        """``S`` (rows, n_out) float32 by the packed u8 x s8 product (int32 sums, exact in
        float32 below ``2**24``: ``bound`` is checked by the caller)."""
        import torch

        x = torch.from_numpy(pre.view(np.uint8) if pre.dtype == bool else pre.astype(np.uint8))
        scale, zero = self.qlinear_scale, self.qlinear_zero
        return torch.ops.onednn.qlinear_pointwise(
            x, 1.0, 0, self.qlinear, scale, zero, None, 1.0, 0, torch.float32, "none", [], ""
        ).numpy()

    def _prepare_int8_conv(self, rows: int) -> bool:
        """Pack the kernel for oneDNN and check it once against the float convolution on
        this path's shapes (a guard beyond :meth:`_int8_conv_ok`'s known failure); a path
        that fails drops the way. Packed for an input of ``rows`` rows (the first call's):
        packed without an input shape, oneDNN reorders the weights again on every call for
        some shapes (measured: 512 x 512 x 3 x 3 at 4 x 4, 1.3 ms a call)."""
        import torch

        plan = self.conv
        kernel = torch.from_numpy(np.ascontiguousarray(plan.kernel, np.int8))
        c_out = kernel.shape[0]
        self.qconv_scale = torch.ones(c_out, dtype=torch.float32)
        self.qconv_zero = torch.zeros(c_out, dtype=torch.int64)
        c, h, w = plan.input_shape
        pooled = [c, -(-h // plan.pool[0]), -(-w // plan.pool[1])]  # what the conv itself reads
        self.qconv_cols = self.qconv_dense = None
        small = plan.out_hw[0] * plan.out_hw[1] <= SMALL_CONV_OUTPUTS
        if unrolled_fits(plan, pooled[1:]) and _onednn_has("qlinear_pointwise"):
            unrolled = unrolled_kernel(plan, tuple(pooled), self.in_cl, self.out_cl)
            self.qconv_scale_dense = torch.ones(unrolled.shape[0], dtype=torch.float32)
            self.qconv_zero_dense = torch.zeros(unrolled.shape[0], dtype=torch.int64)
            self.qconv_dense = torch.ops.onednn.qlinear_prepack(torch.from_numpy(unrolled), None)
        elif plan.stride == (1, 1) and small and _onednn_has("qlinear_pointwise"):
            # (c_out, kh * kw * c_in) in the (ky, kx, c) order of the columns
            rows_of_taps = kernel.permute(0, 2, 3, 1).reshape(c_out, -1).contiguous()
            self.qconv_cols = torch.ops.onednn.qlinear_prepack(rows_of_taps, None)
        self.qconv = torch.ops.onednn.qconv_prepack(
            kernel,
            self.qconv_scale,
            1.0,
            0,
            list(plan.stride),
            list(plan.padding),
            [1, 1],
            1,
            [rows, *pooled],
        )
        probe = np.random.default_rng(0).random((32, self.n_in)) < 0.5
        probe[0] = True
        if np.array_equal(self._int8_conv(probe), self._conv(probe)):
            return True
        self.ways.remove("int8")
        return False

    def _int8_columns(self, pooled):
        """The int8 convolution of ``pooled`` (rows, C, H, W) as one packed u8 x s8 matrix
        product of its (ky, kx, c) columns (stride 1): for outputs of at most
        :data:`SMALL_CONV_OUTPUTS` positions, where oneDNN's direct int8 convolution is slow
        (measured at 64 rows, one thread: 512 channels 4 x 4, 5.9 -> 3.6 ms; 2 x 2, 4.0 -> 1.0)."""
        import torch

        plan = self.conv
        rows, c, h, w = pooled.shape
        kh, kw = plan.kernel.shape[2:]
        (py, px), (oh, ow) = plan.padding, plan.out_hw
        if _numba():  # one compiled pass (a view of channels-last input: no copy before it)
            from lmh_deploy.sim.gather import conv_columns

            cols = np.empty((rows * oh * ow, kh * kw * c), np.uint8)
            images = np.ascontiguousarray(pooled.transpose(0, 2, 3, 1).astype(np.uint8, copy=False))
            conv_columns(images, cols, (kh, kw), (py, px), (oh, ow))
        else:
            padded = np.zeros((rows, h + 2 * py, w + 2 * px, c), np.uint8)
            padded[:, py : py + h, px : px + w] = pooled.transpose(0, 2, 3, 1)
            windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))[:, :oh, :ow]
            # a copy: the window view is read-only, and torch warns for (and must not get) such arrays
            cols = windows.transpose(0, 1, 2, 4, 5, 3).copy(order="C").reshape(rows * oh * ow, -1)
        out = torch.ops.onednn.qlinear_pointwise(
            torch.from_numpy(cols), 1.0, 0, self.qconv_cols, self.qconv_scale, self.qconv_zero,
            None, 1.0, 0, torch.float32, "none", [], "",
        ).numpy().reshape(rows, oh, ow, -1)  # fmt: skip
        return (out if self.out_cl else np.ascontiguousarray(out.transpose(0, 3, 1, 2))).reshape(rows, -1)

    def _int8_unrolled(self, pooled):
        """The int8 convolution of ``pooled`` (rows, C, H, W) as one packed u8 x s8 matrix
        product with its unrolled kernel (:func:`unrolled_kernel`): no columns are gathered,
        and no product meets a padding zero (VGG-13's 2 x 2 layers at 64 rows: half the
        multiply-adds of :meth:`_int8_columns`)."""
        import torch

        rows = pooled.shape[0]
        # the rows in the order the unrolled kernel reads: a view of the spikes where the
        # input is channels last and not pooled, else one copy
        flat = pooled.transpose(0, 2, 3, 1) if self.in_cl else pooled
        x = np.ascontiguousarray(flat.astype(np.uint8, copy=False)).reshape(rows, -1)
        return torch.ops.onednn.qlinear_pointwise(
            torch.from_numpy(x), 1.0, 0, self.qconv_dense, self.qconv_scale_dense, self.qconv_zero_dense,
            None, 1.0, 0, torch.float32, "none", [], "",
        ).numpy()  # fmt: skip

    def _int8_conv(self, pre):
        import torch

        plan = self.conv
        pooled = pooled_integers(plan, pre, self.in_cl)  # values <= INT8_CONV_INPUT_MAX (binary)
        if self.qconv_dense is not None:
            return self._int8_unrolled(pooled)
        if self.qconv_cols is not None:
            return self._int8_columns(pooled)
        x = torch.from_numpy(pooled.astype(np.uint8, copy=False)).contiguous(
            memory_format=torch.channels_last
        )
        out = torch.ops.onednn.qconv2d_pointwise(
            x,
            1.0,
            0,
            self.qconv,
            self.qconv_scale,
            self.qconv_zero,
            None,
            list(plan.stride),
            list(plan.padding),
            [1, 1],
            1,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )
        return flat_rows(out[:, :, : plan.out_hw[0], : plan.out_hw[1]], self.out_cl).numpy()  # as run_conv

    def _events(self, pre):
        """Sum of the rows of ``m^T`` at the active inputs: work proportional to the events.

        Compiled (numba) for dense weights; else a sparse (events) x dense product."""
        if self.conv is not None:  # without numba: the same integers by the conv
            return self._conv_events(pre) if _numba() else self._conv(pre)
        if _numba() and not self.sparse:
            from lmh_deploy.sim.gather import gather_rows

            out = np.zeros((pre.shape[0], self.n_out), self.gather_dtype)
            gather_rows(np.ascontiguousarray(pre), self.w_t_int, out, self.gather_peak)
            return out
        dtype = self.float_dtype or np.int64
        events = sp.csr_matrix(self._as(pre, dtype))
        out = events @ self._float_rows()
        return out.toarray() if sp.issparse(out) else np.asarray(out)

    def _conv_events(self, pre):
        from lmh_deploy.sim.gather import BLOCK, conv_gather, conv_scatter

        x = pooled_integers(self.conv, np.ascontiguousarray(pre), self.in_cl)
        rows, c_out = pre.shape[0], self.conv.kernel.shape[0]
        if self.w_tap_blocks is not None and x.dtype == np.uint8:  # spikes, or their sum-pool
            (oh, ow), blocks = self.conv.out_hw, self.w_tap_blocks.shape[1]
            sums = np.empty((rows * oh * ow, blocks * BLOCK), np.int32)
            images = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # a view where the input is channels last
            conv_gather(
                images, self.w_tap_blocks, self.conv.kernel.shape[2:], (oh, ow), self.tap_peak, sums,
                self.conv.stride, self.conv.padding,
            )  # fmt: skip
            if self.out_cl and blocks * BLOCK == c_out:
                return sums.reshape(rows, -1)
            images_out = sums.reshape(rows, oh, ow, -1)[..., :c_out]
            return np.ascontiguousarray(
                images_out if self.out_cl else images_out.transpose(0, 3, 1, 2)
            ).reshape(rows, -1)
        if self.out_cl:  # the same (rows, C, H, W) indexing over (H, W, C) memory
            flat = np.empty((rows,) + self.conv.out_hw + (c_out,), np.int32)
            out = flat.transpose(0, 3, 1, 2)
        else:
            flat = out = np.empty((rows, c_out) + self.conv.out_hw, np.int32)
        if self.w_taps is None:
            self.w_taps = np.ascontiguousarray(self.conv.kernel.transpose(1, 2, 3, 0), np.int32)
        conv_scatter(x, self.w_taps, out, self.conv.stride, self.conv.padding)
        return flat.reshape(rows, -1)

    def _conv(self, pre):
        import torch

        if self.diagonal_spikes is not None and _numba():  # an identity shortcut of spikes
            from lmh_deploy.sim.gather import scale_spikes

            out = np.empty(pre.shape, self.diagonal_spikes.dtype)
            scale_spikes(np.ascontiguousarray(pre), self.diagonal_spikes, out, self.in_cl)
            return out

        # beyond exact float64 the values still go in as float64 (exact: <= 2**24 * pool area)
        dtype = self.float_dtype or np.float64
        x = torch.from_numpy(self._as(np.ascontiguousarray(pre), dtype))
        return run_conv(self.conv, x, self.kernel, self.in_cl, self.out_cl).numpy()

    def _sums_torch(self, pre):
        import torch

        if self.float_dtype is None:
            raise OverflowError(
                f"synaptic sums up to {self.bound:.3g} exceed the exact float64 "
                "range of the torch device path"
            )
        if (
            self.int8_ok
            and pre.dtype == torch.bool
            and _int_mm_fits(pre.shape[0], self.n_in, self.n_out, pre.device)
        ):
            return torch._int_mm(pre.to(torch.int8), self.w_int8)
        dtype = torch.float32 if self.float_dtype is np.float32 else torch.float64
        x = pre.to(dtype)
        if self.is_conv:
            return run_conv(self.conv, x, self.kernel.to(dtype), self.in_cl, self.out_cl)
        return x @ self.w_dev.to(dtype).T

    def int8_sums(self, pre):
        """``S`` through ``torch._int_mm`` (binary ``pre``; exact, see the module doc)."""
        import torch

        if not self.int8_ok:
            raise ValueError("int8 products need binary input to a dense layer with 127 * fan_in < 2**31")
        w = getattr(self, "w_int8", None)
        if w is None:  # int8_ok: a dense path, whose w_t_int holds the rows (a fresh array:
            # contiguous, writable), int8 unless a mantissa is -128 (then int32, cast here)
            w = self.w_int8 = torch.from_numpy(np.asarray(self.w_t_int, np.int8))
        if isinstance(pre, np.ndarray):
            x = torch.from_numpy(pre.view(np.int8) if pre.dtype == bool else np.asarray(pre, np.int8))
        else:
            x = pre.to(torch.int8)
        return torch._int_mm(x, w.to(x.device))

    def synops(self, active_per_input, rows_order: bool = False) -> int:
        """Synaptic events: ``active_per_input`` (n_in,) counts of nonzero presynaptic values,
        in the graph's (C, H, W) order, or in the order of this path's input rows where
        ``rows_order`` (:attr:`fan_out_rows`; the same sum, no reordering of the counts)."""
        # fan_out (qdense_fan_out) is an integer array (n_in,): int64 counts @ it is int64
        fan_out = self.fan_out_rows if rows_order else self.fan_out
        return int(np.asarray(active_per_input, np.int64) @ fan_out)


#: op name -> whether this torch has it (probed once per op)
_ONEDNN_OPS: dict[str, bool] = {}


_PREPARING = threading.Lock()  # the int8 ways' one-time packing


def _onednn_has(op: str) -> bool:
    """torch has oneDNN's quantised op ``torch.ops.onednn.<op>`` (``qlinear_pointwise``: the
    matrix product, ``qconv2d_pointwise``: the convolution)."""
    if op not in _ONEDNN_OPS:
        try:
            import torch

            ok = torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, op)
        except (ImportError, RuntimeError, AttributeError):
            ok = False
        _ONEDNN_OPS[op] = bool(ok)
    return _ONEDNN_OPS[op]


def _numba() -> bool:
    from lmh_deploy.sim.neuron import numba_active

    return numba_active()


def _int_mm_fits(rows: int, n_in: int, n_out: int, device) -> bool:
    """Shapes ``torch._int_mm`` accepts on this device (CUDA: rows > 16, multiples of 8)."""
    if str(device).startswith("cuda"):
        return rows > 16 and n_in % 8 == 0 and n_out % 8 == 0
    return False  # on CPUs without VNNI it is far slower than float BLAS (measured)
