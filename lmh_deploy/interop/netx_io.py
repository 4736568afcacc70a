"""The lava-dl netx HDF5 layout (``lava.lib.dl.netx.hdf5.Network``) as lmh-deploy writes it.

netx builds each ``dense`` / ``conv`` layer as Lava ``Dense`` / ``Conv`` + ``LIF`` (its
``CUBA`` neuron), whose fixed-point update per step is (lava-nc 0.10, ``PyLifModelBitAcc``)::

    u = wrap24(trunc(u * (4096 - iDecay) / 4096) + (a_in << 6))
    v = clip24(trunc(v * (4096 - vDecay) / 4096) + u + (bias << 6))
    s = v > (vThMant << 6);  v[s] = 0                       # hard reset to zero

with ``a_in(t) = W . s_pre(t-1)`` (one step of synaptic delay per layer) and ``trunc``
rounding toward zero: the ``loihi-lif`` profile bit for bit. What goes into the layers (a
compiled artifact's integers) is :mod:`lmh_deploy.interop.netx_artifact`'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lmh_deploy.files import atomic_path


@dataclass
class NetxLayer:
    """One ``layer/<i>`` group with a CUBA neuron: a ``dense`` layer (weight (out, in)) or,
    when ``conv_shape`` is set, a ``conv`` layer (weight (C_out, C_in, kh, kw), a
    cross-correlation as PyTorch's; ``conv_shape`` its output (C, H, W)). ``bias`` is per
    neuron (a conv's as a (W, H, C) array, the order netx passes on to Lava) or, for a
    conv, per output channel."""

    weight: np.ndarray
    bias: np.ndarray
    i_decay: int
    v_decay: int
    v_th_mant: int
    name: str = ""
    conv_shape: tuple[int, int, int] | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def size(self) -> int:
        return int(np.prod(self.conv_shape)) if self.conv_shape else int(self.weight.shape[0])


def _kind_group(group: h5py.Group, kind: bytes, shape: tuple[int, ...]) -> h5py.Group:
    g = group.create_group(str(len(group)))
    g.create_dataset("type", (1,), "S10", [kind])
    g.create_dataset("shape", data=np.array(shape, dtype=np.int64))
    return g


def write_netx_layers(
    layers: list[NetxLayer],
    path: str | Path,
    meta: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> None:
    """Write ``layer/0..`` groups in the layout ``netx.hdf5.Network`` reads (lava-dl's slayer
    exporter's layout: shapes (C, H, W), which netx reverses to Lava's (W, H, C)).

    A net starting with a conv layer first gets an ``input`` group of ``input_shape``
    (C, H, W); a dense layer after a conv layer gets a ``flatten`` group before it (netx then
    flattens the (W, H, C) spikes in (C, H, W) order, the order of the dense weight's
    columns). Extra facts go to root attributes under ``lmh_deploy_*`` (netx ignores them).
    """
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:  # readers never see half a file
        for key, value in (meta or {}).items():
            f.attrs[f"lmh_deploy_{key}"] = value
        group = f.create_group("layer")
        if layers and layers[0].conv_shape is not None:
            assert input_shape is not None, "a conv layer first needs the input shape"
            _kind_group(group, b"input", tuple(input_shape))
        for i, layer in enumerate(layers):
            if layer.conv_shape is None:
                if i and layers[i - 1].conv_shape is not None:
                    _kind_group(group, b"flatten", (layers[i - 1].size,))
                g = _kind_group(group, b"dense", (layer.size,))
            else:
                g = _kind_group(group, b"conv", layer.conv_shape)
                g.create_dataset("inChannels", data=int(layer.weight.shape[1]))
                g.create_dataset("outChannels", data=int(layer.weight.shape[0]))
                g.create_dataset("kernelSize", data=np.array(layer.weight.shape[2:], np.int64))
                g.create_dataset("stride", data=np.array(layer.stride, np.int64))
                g.create_dataset("padding", data=np.array(layer.padding, np.int64))
                g.create_dataset("dilation", data=np.array([1, 1], np.int64))
                g.create_dataset("groups", data=1)
            g.create_dataset("weight", data=layer.weight.astype(np.int64))
            g.create_dataset("bias", data=layer.bias.astype(np.int64))
            if layer.name:
                g.attrs["lmh_deploy_name"] = layer.name
            n = g.create_group("neuron")
            n.create_dataset("type", (1,), "S10", [b"CUBA"])
            n.create_dataset("iDecay", data=int(layer.i_decay))
            n.create_dataset("vDecay", data=int(layer.v_decay))
            n.create_dataset("vThMant", data=int(layer.v_th_mant))
            n.create_dataset("refDelay", data=1)
            n.create_dataset("gradedSpike", data=False)
