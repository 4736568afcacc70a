"""lava-dl netx HDF5 (the file a slayer network's ``export_hdf5`` writes) -> float graph IR
whose values are the file's integers at fixed binary scales.

Checked against lava-dl 0.6's ``lava/lib/dl/netx/hdf5.py`` and ``blocks/process.py``, which
build, for each ``dense`` / ``conv`` layer with a ``CUBA`` neuron, a Lava ``Dense`` (the file's
``weight``; netx only re-derives an exponent that leaves even 8-bit integers unchanged) /
``Conv`` (the kernel as it is, read as PyTorch's cross-correlation) feeding Lava's ``LIF`` with
``vth = vThMant``, ``du = iDecay - 1``, ``dv = vDecay``, ``bias_mant = bias.astype(int32)``
(per layer, per channel or per ``(W, H, C)`` neuron), ``bias_exp = 6`` (``refDelay`` is not
read: Lava's LIF has no refractory period); ``flatten`` feeds the next dense layer the
``(C, H, W)`` order. In lmh-deploy terms, under the ``loihi-lif`` profile (Lava's LIF bit for
bit, docs/fixed-point.md §11):

* weight mantissa ``m = weight / 2`` (Lava weight ``2 m``), float weight ``m / 32``;
* ``theta = vThMant << 6``, ``mu_d = 4096 - iDecay``, ``lam_s = 4096 - vDecay``,
  ``mu_s = 0``, ``lam_d = 4096``, bias ``bias << 6`` on the soma; spike on ``v > theta``,
  ``v`` set to 0;
* a ``pool`` layer (slayer's ``Pool``: one weight on every tap of each channel's window;
  netx 0.6 itself raises ``NotImplementedError`` for it) is that per-channel convolution;
* an input value is a count of spike payloads, rounded to 0..255: data in ``[0, 1]`` sends
  0/1, exactly netx's default one-bit input (``input_message_bits=0``; 8 for larger counts);
* the last layer's spikes are counted by a readout (an identity synapse): the class is the
  neuron that spikes most.

The float values are the integers over these scales, so
:func:`lmh_deploy.passes.quantize.exact_graph` reads them back without re-quantising
(``meta["exact_weight_scale"]``). Anything else (another neuron type, graded spikes, delays,
grouped or dilated convolutions, an input layer with a neuron, a bias beyond 13 bits, a
missing field) is refused naming the layer and field.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from lmh_deploy.errors import InteropError
from lmh_deploy.ir import LMH, Conv2d, Dense, Graph, Input, IRError, Readout, validate
from lmh_deploy.semantics import integer as fx

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Float weight = mantissa / WEIGHT_SCALE: a file weight w (Lava's ``2 m``) is w / 64, the
#: current it adds in thresholds of ``vThMant = 64`` (slayer's own scale, threshold 1.0).
WEIGHT_SCALE = 32
#: Integer state units per float unit: Lava weight (2 m) << 6.
STATE_SCALE = fx.WEIGHT_LAVA_SCALE * WEIGHT_SCALE * (1 << 6)
SUPPORTED = (
    "'input' (shape only), 'conv', 'pool', 'flatten' and 'dense' layers with 'CUBA' neurons "
    "(lava-dl slayer block.cuba.Conv, Pool, Flatten, Dense)"
)
VTH_MAX = (1 << 17) - 1
#: Lava LIF's ``bias_mant``: a signed 13-bit integer.
BIAS_MIN, BIAS_MAX = -(1 << 12), (1 << 12) - 1


def is_netx_file(path: str | Path) -> bool:
    """An HDF5 file with a top-level ``layer`` group (NIR files are HDF5 too: ``.nir``)."""
    path = Path(path)
    if path.suffix == ".nir" or not path.is_file():
        return False
    with open(path, "rb") as f:
        if f.read(8) != HDF5_SIGNATURE:
            return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return isinstance(f.get("layer"), h5py.Group)
    except OSError as exc:  # an HDF5 signature but a truncated or damaged file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InteropError(f"{path}: an HDF5 file h5py cannot open ({first})") from None


def _text(value: Any) -> str:
    """An HDF5 string field as lava-dl writes it (a bytes scalar or a 1-element array)."""
    value = np.asarray(value).reshape(-1)[0] if np.ndim(value) else value
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _field(group: Any, key: str, where: str) -> Any:
    if key not in group:
        raise InteropError(f"{where}: field {key!r} is missing; {SUPPORTED} carry it")
    if not hasattr(group[key], "shape"):  # a group (e.g. complex weight/real, weight/imag)
        raise InteropError(f"{where}: field {key!r} is a group, not an array; {SUPPORTED}")
    return group[key][()]


def _int_field(group: Any, key: str, where: str, lo: int, hi: int) -> int:
    value = np.asarray(_field(group, key, where))
    if value.size != 1 or float(value) != int(value) or not lo <= int(value) <= hi:
        raise InteropError(
            f"{where}: {key} = {value.tolist()}; Lava's LIF takes one integer in [{lo}, {hi}] per layer"
        )
    return int(value)


def _synapse_weight(group: Any, where: str) -> np.ndarray:
    """The layer's ``weight`` as Lava weights: even integers in [-254, 254] (slayer's 8-bit
    weights, Lava's ``2 m``; netx hands a dense weight through ``optimize_weight_bits``, which
    keeps these exactly, and a conv weight to Lava's ``Conv`` as it is)."""
    weight = np.asarray(_field(group, "weight", where), np.float64)
    if (
        weight.size == 0
        or np.any(weight != np.round(weight))
        or np.any(weight % 2)
        or np.abs(weight).max() > 254
    ):
        raise InteropError(
            f"{where}: weights must be even integers in [-254, 254] (slayer's 8-bit weights, "
            f"Lava's weight 2 m); found range [{weight.min(initial=0):g}, {weight.max(initial=0):g}]"
        )
    for key in ("delay", "weight_rec"):
        if key in group and np.any(np.asarray(group[key][()]) != 0):
            raise InteropError(
                f"{where}: field {key!r} (axonal delays / recurrence) is not supported; {SUPPORTED}"
            )
    return weight


def _neuron_ints(group: Any, where: str) -> dict[str, int]:
    """The CUBA neuron's integers (what netx passes to Lava's LIF)."""
    if "neuron" not in group:
        raise InteropError(f"{where}: group 'neuron' is missing; {SUPPORTED}")
    neuron = group["neuron"]
    kind = _text(_field(neuron, "type", f"{where} neuron"))
    if kind not in ("CUBA", "LOIHI"):
        raise InteropError(f"{where}: neuron type {kind!r} is not supported; {SUPPORTED}")
    nwhere = f"{where} neuron"
    if "gradedSpike" in neuron and bool(np.asarray(neuron["gradedSpike"][()])):
        raise InteropError(f"{nwhere}: graded spikes are not supported; {SUPPORTED} with gradedSpike False")
    if "messageBits" in neuron and int(np.asarray(neuron["messageBits"][()])) != 0:
        raise InteropError(f"{nwhere}: messageBits != 0 (graded spikes) is not supported; {SUPPORTED}")
    return {
        "iDecay": _int_field(neuron, "iDecay", nwhere, 1, fx.FACTOR_ONE),
        "vDecay": _int_field(neuron, "vDecay", nwhere, 0, fx.FACTOR_ONE - 1),
        "vThMant": _int_field(neuron, "vThMant", nwhere, 1, VTH_MAX),
    }


def _bias(group: Any, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """The layer's ``bias`` per neuron in (C, H, W) order, as netx gives it to Lava's LIF
    (``bias_mant``, ``bias_exp = 6``): truncated to integers (``astype(np.int32)``), one value
    per layer (dense), per channel ``(C,)`` or per neuron ``(W, H, C)`` (conv)."""
    size = int(np.prod(shape))
    if "bias" not in group:
        return np.zeros(size, np.int64)
    raw = np.asarray(group["bias"][()], np.float64)
    bias = np.trunc(raw).astype(np.int64)
    if len(shape) == 1 and bias.size in (1, size):
        bias = np.broadcast_to(bias.reshape(-1), (size,))
    elif len(shape) == 3 and bias.shape == (shape[0],):
        bias = np.broadcast_to(bias[:, None, None], shape).reshape(-1)
    elif len(shape) == 3 and bias.shape == shape[::-1]:
        bias = bias.transpose(2, 1, 0).reshape(-1)
    else:
        raise InteropError(
            f"{where}: bias of shape {raw.shape} fits neither the layer (one per neuron) nor its channels"
        )
    if bias.min() < BIAS_MIN or bias.max() > BIAS_MAX:
        raise InteropError(
            f"{where}: bias in [{bias.min()}, {bias.max()}] exceeds Lava LIF's 13-bit bias_mant "
            f"[{BIAS_MIN}, {BIAS_MAX}]"
        )
    return bias.copy()


def _pair(group: Any, key: str, where: str, default: int) -> tuple[int, int]:
    """A (h, w) geometry field: a scalar or two values, as slayer writes it."""
    if key not in group:
        return (default, default)
    value = np.asarray(group[key][()]).reshape(-1)
    if value.size not in (1, 2) or np.any(value != np.round(value)):
        raise InteropError(f"{where}: {key} = {value.tolist()} is not one or two integers")
    return (int(value[0]), int(value[-1]))


def _kernel(group: Any, where: str, kind: str, in_shape: tuple[int, ...]) -> Conv2d:
    """A ``conv`` layer's kernel, or a ``pool`` layer's (slayer's ``Pool``: one weight on
    every tap of each channel's window, i.e. a per-channel convolution)."""
    if len(in_shape) != 3:
        raise InteropError(f"{where}: a {kind} layer needs a (C, H, W) input, gets {in_shape}")
    if _pair(group, "dilation", where, 1) != (1, 1):
        raise InteropError(f"{where}: dilation {_pair(group, 'dilation', where, 1)} is not supported")
    weight = _synapse_weight(group, where)
    if weight.ndim == 5 and weight.shape[-1] == 1:  # slayer's (..., 1) time axis
        weight = weight[..., 0]
    if kind == "conv":
        groups = int(np.asarray(group["groups"][()])) if "groups" in group else 1
        if groups != 1:
            raise InteropError(f"{where}: groups = {groups}; only groups = 1 convolutions are supported")
        if weight.ndim != 4 or weight.shape[1] != in_shape[0]:
            raise InteropError(
                f"{where}: weight of shape {weight.shape} is not (C_out, {in_shape[0]}, kh, kw) for "
                f"the input {in_shape}"
            )
        kernel = weight
    else:
        if weight.ndim != 4 or weight.shape[:2] != (1, 1) or np.ptp(weight) != 0:
            raise InteropError(
                f"{where}: pool weight of shape {weight.shape} is not one value on a (1, 1, kh, kw) window"
            )
        c = in_shape[0]
        kernel = np.zeros((c, c, *weight.shape[2:]))
        kernel[np.arange(c), np.arange(c)] = weight[0, 0]
    conv = Conv2d(
        weight=kernel,
        input_shape=tuple(in_shape),
        stride=_pair(group, "stride", where, 1),
        padding=_pair(group, "padding", where, 0),
    )
    shape = tuple(int(d) for d in np.asarray(_field(group, "shape", where)).reshape(-1))
    if shape != conv.output_shape:
        raise InteropError(
            f"{where}: shape {shape} is not the {conv.output_shape} its kernel {kernel.shape[2:]}, "
            f"stride {conv.stride} and padding {conv.padding} give the input {in_shape}"
        )
    return conv


def _lif(size: int, ints: dict[str, int], bias: np.ndarray) -> LMH:
    """Lava's LIF as an LM-H node: current factor, voltage factor, threshold in float units."""

    def factor(value: float) -> np.ndarray:
        return np.full((1, 1), value / fx.FACTOR_ONE)

    return LMH(
        size=size,
        theta=ints["vThMant"] * (1 << 6) / STATE_SCALE,
        mu_d=factor(fx.FACTOR_ONE - ints["iDecay"]),
        mu_s=factor(0),
        lam_d=factor(fx.FACTOR_ONE),
        lam_s=factor(fx.FACTOR_ONE - ints["vDecay"]),
        bias=bias * (1 << 6) / STATE_SCALE,
        reset="set",
        reset_value=0.0,
        threshold_test=">",
        v_s_init=0.0,
    )


def netx_to_graph(
    path: str | Path, *, timesteps: int | None = None, input_shape: tuple[int, ...] | None = None
) -> Graph:
    """Import a netx HDF5 file into a validated float graph (module docstring).

    ``input_shape`` (C, H, W) is the network's input where the file has no ``input`` layer
    before a first ``conv`` / ``pool`` layer (netx asks for ``input_shape`` then too).
    """
    import h5py

    path = Path(path)
    ir = Graph(meta={"timesteps": int(timesteps or 4), "x_max": 1.0, "exact_weight_scale": WEIGHT_SCALE})
    source_neurons: dict[str, str] = {}
    with h5py.File(path, "r") as f:
        if not isinstance(f.get("layer"), h5py.Group) or not len(f["layer"]):
            raise InteropError(f"{path}: no 'layer' group; not a lava-dl netx file")
        groups = f["layer"]
        keys = sorted(groups, key=lambda k: int(k) if str(k).isdigit() else -1)
        kinds = [_text(_field(groups[k], "type", f"{path.name}: layer {k}")) for k in keys]
        first = kinds[0]
        where0 = f"{path.name}: layer {keys[0]}"
        if first == "input":
            if "neuron" in groups[keys[0]]:
                raise InteropError(
                    f"{where0}: an input layer with a neuron (slayer block.cuba.Input) is not "
                    f"supported; {SUPPORTED}"
                )
            shape = tuple(int(d) for d in np.asarray(_field(groups[keys[0]], "shape", where0)).reshape(-1))
            keys, kinds = keys[1:], kinds[1:]
        elif first in ("conv", "pool"):
            if input_shape is None:
                raise InteropError(
                    f"{where0}: a {first} layer first and no 'input' layer giving the image shape; "
                    f"pass --dataset (its (C, H, W) is used, as netx's input_shape)"
                )
            shape = tuple(int(d) for d in input_shape)
        elif first == "dense":
            shape = (int(np.asarray(_field(groups[keys[0]], "weight", where0)).shape[-1]),)
        else:
            raise InteropError(f"{where0}: layer type {first!r} is not supported first; {SUPPORTED}")
        # one integer input unit is one spike's payload (x_max = 255 levels of 1): values
        # round to 0..255, so [0, 1] data sends 0/1, what netx's default 1-bit input carries
        prev = ir.add("input", Input(shape=shape, x_max=float(fx.input_levels(fx.INPUT_BITS_UNSIGNED))))
        unit = 1.0  # a presynaptic spike's float value: 1, then theta
        for i, (key, kind) in enumerate(zip(keys, kinds)):
            group, where = groups[key], f"{path.name}: layer {key}"
            if kind == "flatten":
                if len(shape) != 3 or (i + 1 < len(kinds) and kinds[i + 1] != "dense"):
                    raise InteropError(f"{where}: 'flatten' must sit between a conv/pool and a dense layer")
                shape = (int(np.prod(shape)),)
                continue
            synapse: Dense | Conv2d
            if kind in ("conv", "pool"):
                lava = _kernel(group, where, kind, shape)  # Lava weights; float: mantissa / scale
                synapse = dataclasses.replace(lava, weight=lava.weight / 2 / WEIGHT_SCALE / unit)
                out_shape: tuple[int, ...] = lava.output_shape
            elif kind == "dense":
                if len(shape) != 1:
                    raise InteropError(
                        f"{where}: a dense layer after a {shape} map needs a 'flatten' layer before it"
                    )
                weight = _synapse_weight(group, where)
                n_in = int(np.prod(shape))
                weight = weight.reshape(1, -1) if weight.ndim == 1 else weight
                if weight.ndim != 2 or weight.shape[1] != n_in:
                    raise InteropError(
                        f"{where}: weight of shape {weight.shape} does not take the {n_in} inputs before it"
                    )
                synapse = Dense(weight=weight / 2 / WEIGHT_SCALE / unit)
                out_shape = (weight.shape[0],)
            else:
                raise InteropError(f"{where}: layer type {kind!r} is not supported; {SUPPORTED}")
            ints = _neuron_ints(group, where)
            lif = _lif(int(np.prod(out_shape)), ints, _bias(group, where, out_shape))
            name = f"lmh{len(source_neurons)}"
            syn = ir.add(f"{kind}{len(source_neurons)}", synapse, (prev,))
            prev, unit, shape = ir.add(name, lif, (syn,)), lif.theta, out_shape
            source_neurons[name] = f"layer/{key}"
    if not source_neurons:
        raise InteropError(f"{path}: no layer with a neuron; {SUPPORTED}")
    n_out = int(np.prod(shape))
    # the last layer's spike counts are the class scores (identity synapses into a readout)
    ident = ir.add("count", Dense(weight=np.eye(n_out) / unit), (prev,))
    ir.add("readout", Readout(bias=np.zeros(n_out)), (ident,))
    ir.meta["num_classes"] = n_out
    ir.meta["source_neurons"] = source_neurons
    ir.meta["source"] = {"format": "netx", "producer": "lava-dl netx HDF5"}
    try:
        validate(ir)
    except IRError as exc:
        raise InteropError(f"{path}: imported graph is invalid: {exc}") from None
    return ir
