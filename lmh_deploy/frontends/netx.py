"""lava-dl netx HDF5 (the file a slayer network's ``export_hdf5`` writes) -> float graph IR
whose values are the file's integers at fixed binary scales.

Checked against lava-dl 0.6's ``lava/lib/dl/netx/hdf5.py``, which builds, for each ``dense``
layer with a ``CUBA`` neuron, a Lava ``Dense`` (the file's ``weight``; netx only re-derives an
exponent that leaves even 8-bit integers unchanged) feeding Lava's ``LIF`` with ``vth =
vThMant``, ``du = iDecay - 1``, ``dv = vDecay``, ``bias_mant = bias``, ``bias_exp = 6``
(``refDelay`` is not read: Lava's LIF has no refractory period). In lmh-deploy terms, under
the ``loihi-lif`` profile (Lava's LIF bit for bit, docs/fixed-point.md §11):

* weight mantissa ``m = weight / 2`` (Lava weight ``2 m``), float weight ``m / 32``;
* ``theta = vThMant << 6``, ``mu_d = 4096 - iDecay``, ``lam_s = 4096 - vDecay``,
  ``mu_s = 0``, ``lam_d = 4096``; spike on ``v > theta``, ``v`` set to 0;
* an input value is a count of spike payloads, rounded to 0..255: data in ``[0, 1]`` sends
  0/1, exactly netx's default one-bit input (``input_message_bits=0``; 8 for larger counts);
* the last layer's spikes are counted by a readout (an identity synapse): the class is the
  neuron that spikes most.

The float values are the integers over these scales, so
:func:`lmh_deploy.passes.quantize.exact_graph` reads them back without re-quantising
(``meta["exact_weight_scale"]``). Anything else (another neuron type, graded spikes,
delays, a bias, an input or conv layer, a missing field) is refused naming the layer and
field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmh_deploy.errors import InteropError
from lmh_deploy.ir import LMH, Dense, Graph, Input, IRError, Readout, validate
from lmh_deploy.semantics import integer as fx

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Float weight = mantissa / WEIGHT_SCALE: a file weight w (Lava's ``2 m``) is w / 64, the
#: current it adds in thresholds of ``vThMant = 64`` (slayer's own scale, threshold 1.0).
WEIGHT_SCALE = 32
#: Integer state units per float unit: Lava weight (2 m) << 6.
STATE_SCALE = fx.WEIGHT_LAVA_SCALE * WEIGHT_SCALE * (1 << 6)
SUPPORTED = "'dense' layers with 'CUBA' neurons (lava-dl slayer block.cuba.Dense), no input layer"
VTH_MAX = (1 << 17) - 1


def is_netx_file(path: str | Path) -> bool:
    """An HDF5 file with a top-level ``layer`` group (NIR files are HDF5 too: ``.nir``)."""
    path = Path(path)
    if path.suffix == ".nir" or not path.is_file():
        return False
    with open(path, "rb") as f:
        if f.read(8) != HDF5_SIGNATURE:
            return False
    import h5py

    with h5py.File(path, "r") as f:
        return isinstance(f.get("layer"), h5py.Group)


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


def _dense_layer(group: Any, where: str, n_in: int) -> tuple[np.ndarray, dict[str, int]]:
    """The weight mantissas ``(n_out, n_in)`` and neuron integers of one ``dense`` group."""
    weight = np.asarray(_field(group, "weight", where), np.float64)
    if weight.ndim == 1:
        weight = weight.reshape(1, -1)
    if weight.ndim != 2 or weight.shape[1] != n_in:
        raise InteropError(
            f"{where}: weight of shape {weight.shape} does not take the {n_in} inputs before it"
        )
    if np.any(weight != np.round(weight)) or np.any(weight % 2) or np.abs(weight).max() > 254:
        raise InteropError(
            f"{where}: weights must be even integers in [-254, 254] (slayer's 8-bit weights, "
            f"Lava's weight 2 m); found range [{weight.min():g}, {weight.max():g}]"
        )
    for key in ("delay", "weight_rec"):
        if key in group and np.any(np.asarray(group[key][()]) != 0):
            raise InteropError(f"{where}: field {key!r} is not supported; {SUPPORTED}")
    if "bias" in group and np.any(np.asarray(group["bias"][()]) != 0):
        raise InteropError(
            f"{where}: a bias is not supported yet (netx adds it from step 1, before the "
            f"layer's first input); export the slayer block without bias"
        )
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
    ints = {
        "iDecay": _int_field(neuron, "iDecay", nwhere, 1, fx.FACTOR_ONE),
        "vDecay": _int_field(neuron, "vDecay", nwhere, 0, fx.FACTOR_ONE - 1),
        "vThMant": _int_field(neuron, "vThMant", nwhere, 1, VTH_MAX),
    }
    return (weight / 2).astype(np.int64), ints


def _lif(size: int, ints: dict[str, int]) -> LMH:
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
        bias=np.zeros(size),
        reset="set",
        reset_value=0.0,
        threshold_test=">",
        v_s_init=0.0,
    )


def netx_to_graph(path: str | Path, *, timesteps: int | None = None) -> Graph:
    """Import a netx HDF5 file into a validated float graph (module docstring)."""
    import h5py

    path = Path(path)
    ir = Graph(meta={"timesteps": int(timesteps or 4), "x_max": 1.0, "exact_weight_scale": WEIGHT_SCALE})
    layers_out: list[str] = []
    with h5py.File(path, "r") as f:
        if not isinstance(f.get("layer"), h5py.Group) or not len(f["layer"]):
            raise InteropError(f"{path}: no 'layer' group; not a lava-dl netx file")
        groups = f["layer"]
        keys = sorted(groups, key=lambda k: int(k) if str(k).isdigit() else -1)
        first = groups[keys[0]]
        if "type" not in first:
            raise InteropError(f"{path}: layer {keys[0]}: field 'type' is missing")
        if _text(first["type"][()]) != "dense":
            raise InteropError(
                f"{path}: layer {keys[0]} is a {_text(first['type'][()])!r} layer; supported: {SUPPORTED}"
            )
        n_in = int(np.asarray(first["weight"]).shape[-1]) if "weight" in first else 0
        # one integer input unit is one spike's payload (x_max = 255 levels of 1): values
        # round to 0..255, so [0, 1] data sends 0/1, what netx's default 1-bit input carries
        ir.add("input", Input(shape=(n_in,), x_max=float(fx.INPUT_MAX)))
        prev, unit = "input", 1.0  # a presynaptic spike's float value: 1, then theta
        for i, key in enumerate(keys):
            group = groups[key]
            where = f"{path.name}: layer {key}"
            kind = _text(_field(group, "type", where))
            if kind != "dense":
                raise InteropError(f"{where}: layer type {kind!r} is not supported; {SUPPORTED}")
            mant, ints = _dense_layer(group, where, n_in)
            lif = _lif(mant.shape[0], ints)
            dense = ir.add(f"dense{i}", Dense(weight=mant / WEIGHT_SCALE / unit), (prev,))
            prev, unit = ir.add(f"lmh{i}", lif, (dense,)), lif.theta
            layers_out.append(key)
            n_in = mant.shape[0]
    # the last layer's spike counts are the class scores (identity synapses into a readout)
    ident = ir.add("count", Dense(weight=np.eye(n_in) / unit), (prev,))
    ir.add("readout", Readout(bias=np.zeros(n_in)), (ident,))
    ir.meta["num_classes"] = n_in
    ir.meta["source_neurons"] = {f"lmh{i}": f"layer/{key}" for i, key in enumerate(layers_out)}
    ir.meta["source"] = {"format": "netx", "producer": "lava-dl netx HDF5"}
    try:
        validate(ir)
    except IRError as exc:
        raise InteropError(f"{path}: imported graph is invalid: {exc}") from None
    return ir
