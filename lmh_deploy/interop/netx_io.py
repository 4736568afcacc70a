"""Float IR -> lava-dl netx HDF5 (``lava.lib.dl.netx.hdf5.Network``), for LIF-compatible nets.

netx builds each ``dense`` layer as Lava ``Dense`` + ``LIF`` (its ``CUBA`` neuron), whose
fixed-point update per step is (lava-nc 0.10, ``PyLifModelBitAcc``)::

    u = wrap24(trunc(u * (4096 - iDecay) / 4096) + (a_in << 6))
    v = clip24(trunc(v * (4096 - vDecay) / 4096) + u + (bias << 6))
    s = v > (vThMant << 6);  v[s] = 0                       # hard reset to zero

with ``a_in(t) = W . s_pre(t-1)`` (one step of synaptic delay per layer) and ``trunc``
rounding toward zero. An LM-H layer with ``mu_d = mu_s = 0`` (a LIF) maps to
``iDecay = 4096`` (``u`` = this step's input), ``vDecay = round(4096 * (1 - lam_s))``,
integer weights ``round(s * lam_d * W * a)`` (``a``: presynaptic amplitude, ``theta_pre`` for
spikes, ``x_max / 255`` for the 8-bit graded input), ``bias = round(s * lam_d * b)`` and
``vThMant = round(s * theta``) with one scale ``s`` per layer. Known differences from LM-H:
reset to zero (LM-H subtracts theta), ``v`` starts at 0 (LM-H: theta/2), fire at
``v > theta`` (LM-H: ``>=``), truncating decay, the pipeline delay, and the bias acting
from step 0. ``docs/interop.md`` has the details; :func:`netx_reference` reproduces
Lava's run of a written file exactly (the tests check this).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lmh_deploy.backends.lava.supervise import lava_session
from lmh_deploy.files import atomic_path
from lmh_deploy.interop import InteropError
from lmh_deploy.interop.nir_export import plan_graph
from lmh_deploy.ir import LMH, Dense, Graph, Input, Readout
from lmh_deploy.passes.compose import presynaptic_unit
from lmh_deploy.semantics import integer as fx

#: Largest |weight| written: netx's ``optimize_weight_bits`` keeps [-256, 254] exactly.
WEIGHT_MAX = 254
#: ``vThMant`` is 17 bits in Lava's bit-accurate LIF.
VTH_MAX = (1 << 17) - 1
#: ``bias_mant`` is a signed 13-bit integer (netx fixes ``bias_exp = 6``).
BIAS_MIN, BIAS_MAX = -(1 << 12), (1 << 12) - 1
#: ``a_in << 6`` must stay inside the 24-bit current ``u`` (it wraps around otherwise).
CURRENT_MAX = (1 << 17) - 1
DECAY_ONE = 4096
ACT_SHIFT = 6
UV_MAX = 1 << 23


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


@dataclass
class NetxRun:
    """Spikes (steps, n) per layer and the final ``u``, ``v`` per layer (integers)."""

    spikes: list[np.ndarray]
    v: list[np.ndarray]
    u: list[np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)


# =============================================================================== export
def _row_bound(w: np.ndarray) -> np.ndarray:
    """Per row: the largest |sum_j w_j x_j| over x_j in [0, 1]."""
    return np.maximum(np.clip(w, 0, None).sum(axis=1), np.clip(-w, 0, None).sum(axis=1))


def _quantize_layer(
    w_eff: np.ndarray,
    b_eff: np.ndarray,
    theta: float | None,
    max_presyn: int,
    where: str,
    readout_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Integer weights, bias, vThMant and the scale s (integer units per float unit).

    ``s`` is the largest value keeping |w| <= 254, vThMant <= 2**17-1, the bias in 13 bits
    and the worst-case input ``a_in`` below 2**17 (hidden layers), or, for the readout
    (``theta`` None), the readout's accumulated ``v`` below its threshold for ``readout_steps``.
    Presynaptic values are non-negative (spikes, 8-bit pixels), so the worst case of a row
    is ``max_presyn * max(sum of its positive weights, sum of |its negative weights|)``.
    """
    if theta is None and readout_steps is None:
        raise TypeError("the readout's scale needs readout_steps")
    steps = readout_steps or 0
    peak = float(np.max(np.abs(w_eff)))
    if peak == 0:
        raise InteropError(f"{where}: all weights are zero; netx cannot load such a layer")
    rowsum = float(np.max(_row_bound(w_eff)))
    bmax = float(np.max(np.abs(b_eff), initial=0.0))
    limits = [WEIGHT_MAX / peak]
    if theta is not None:
        limits.append(VTH_MAX / theta)
        limits.append(CURRENT_MAX / (max_presyn * rowsum))
    else:
        limits.append(VTH_MAX / (steps * (max_presyn * rowsum + bmax)))
    if bmax > 0:
        limits.append(BIAS_MAX / bmax)
    s = min(limits)
    for _ in range(200):
        w = np.round(w_eff * s).astype(np.int64)
        b = np.round(b_eff * s).astype(np.int64)
        current = max_presyn * int(_row_bound(w).max())
        ok = np.abs(w).max() <= WEIGHT_MAX and b.min(initial=0) >= BIAS_MIN and b.max(initial=0) <= BIAS_MAX
        if theta is not None:
            vth = int(round(theta * s))
            ok = ok and current <= CURRENT_MAX and vth <= VTH_MAX
        else:
            vth = VTH_MAX
            ok = ok and steps * (current + int(np.abs(b).max(initial=0))) < VTH_MAX
        if ok:
            break
        s *= 0.995
    else:  # pragma: no cover - the limits above make the first few tries succeed
        raise InteropError(f"{where}: no integer scale fits netx's bit widths")
    if theta is not None and vth < 1:
        raise InteropError(f"{where}: threshold {theta} rounds to vThMant = 0 at scale {s:.4g}")
    if np.abs(w).max() == 0:
        raise InteropError(f"{where}: all weights round to zero at scale {s:.4g}")
    return w, b, vth, s


def graph_to_netx(graph: Graph, path: str | Path, *, timesteps: int | None = None) -> dict[str, Any]:
    """Write a LIF-compatible float IR graph as a netx HDF5 network; returns a report.

    Every ``Dense -> LMH`` pair becomes a ``dense`` layer with a ``CUBA`` neuron; the
    ``Dense -> Readout`` pair becomes a non-spiking integrator (``iDecay = 4096``,
    ``vDecay = 0``, ``vThMant = 2**17-1``) whose ``v / (64 * scale)`` after the run is the sum
    of its inputs plus bias. Load with ``netx.hdf5.Network(net_config=path,
    input_message_bits=8)`` and feed ``netx_input(graph, x)`` (8-bit graded values).
    Raises :class:`InteropError` naming the layer and factor for non-LIF layers.
    """
    plans = plan_graph(graph, target="netx", lossy=False)
    steps = int(timesteps if timesteps is not None else graph.meta.get("timesteps", 1))
    inp = graph.node(graph.order()[0])
    assert isinstance(inp, Input)
    denses = graph.of_kind("dense")
    readout_steps = steps + len(denses)
    layers: list[NetxLayer] = []
    report: dict[str, Any] = {
        "path": str(path),
        "input_scale": 1.0 / inp.unit,
        "input_message_bits": fx.INPUT_BITS,
        "input_range": list(fx.input_range(fx.INPUT_BITS, inp.signed)),
        "timesteps": steps,
        "latency_steps": len(denses),
        "readout_steps": readout_steps,
        "layers": [],
    }
    for name in denses:
        dense = graph.node(name)
        assert isinstance(dense, Dense)
        (src,) = graph.inputs_of(name)
        (dst,) = list(graph.nx_graph.successors(name))
        pre, post = graph.node(src), graph.node(dst)
        graded = isinstance(pre, Input)
        amp = presynaptic_unit(pre)
        max_presyn = pre.levels if isinstance(pre, Input) else 1
        if isinstance(post, LMH):
            plan = plans[dst]
            w_eff = dense.weight * amp * plan.lam_d[:, None]
            w, b, vth, s = _quantize_layer(w_eff, post.bias * plan.lam_d, post.theta, max_presyn, dst)
            v_decay = int(round(DECAY_ONE * (1.0 - float(plan.lam_s[0]))))
            entry = {
                "name": dst,
                "kind": "hidden",
                "size": post.size,
                "lam_s_effective": 1.0 - v_decay / DECAY_ONE,
                "theta_rel_error": abs(vth / s - post.theta) / post.theta,
            }
        else:
            assert isinstance(post, Readout)
            w_eff = dense.weight * amp
            w, b, vth, s = _quantize_layer(
                w_eff, post.bias, None, max_presyn, dst, readout_steps=readout_steps
            )
            v_decay = 0
            entry = {"name": dst, "kind": "readout", "size": post.output_size()}
            report["readout_scale"] = s
        layer = NetxLayer(weight=w, bias=b, i_decay=DECAY_ONE, v_decay=v_decay, v_th_mant=vth, name=dst)
        entry.update(
            {
                "scale": s,
                "iDecay": DECAY_ONE,
                "vDecay": v_decay,
                "vThMant": vth,
                "graded_input": graded,
                "weight_min": int(w.min()),
                "weight_max": int(w.max()),
                "max_weight_error_rel": float(np.max(np.abs(w / s - w_eff)) / np.max(np.abs(w_eff))),
                "max_input_current": max_presyn * int(_row_bound(w).max()),
            }
        )
        layers.append(layer)
        report["layers"].append(entry)
    write_netx_layers(
        layers,
        path,
        meta={
            "producer": "lmh-deploy",
            "timesteps": steps,
            "input_scale": report["input_scale"],
            "readout_scale": report["readout_scale"],
            "readout_steps": readout_steps,
        },
    )
    return report


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


def read_netx(path: str | Path) -> list[NetxLayer]:
    """Read the dense CUBA layers of a netx HDF5 file (raises InteropError for other layouts)."""
    layers = []
    with h5py.File(path, "r") as f:
        if "layer" not in f:
            raise InteropError(f"{path}: no 'layer' group; not a netx network file")
        for i in range(len(f["layer"])):
            g = f["layer"][str(i)]
            kind = g["type"][0].decode("ascii") if g["type"].shape else g["type"][()].decode("ascii")
            ntype = g["neuron"]["type"][0].decode("ascii")
            if kind != "dense" or ntype != "CUBA":
                raise InteropError(f"{path}: layer {i} is {kind}/{ntype}; only dense/CUBA is read")
            nrn = g["neuron"]
            layers.append(
                NetxLayer(
                    weight=g["weight"][()].astype(np.int64),
                    bias=g["bias"][()].astype(np.int64)
                    if "bias" in g
                    else np.zeros(int(g["shape"][0]), np.int64),
                    i_decay=int(nrn["iDecay"][()]),
                    v_decay=int(nrn["vDecay"][()]),
                    v_th_mant=int(nrn["vThMant"][()]),
                    name=str(g.attrs.get("lmh_deploy_name", "")),
                )
            )
    return layers


def netx_input(graph: Graph, x: np.ndarray) -> np.ndarray:
    """8-bit graded input values for the netx network: (B, *shape) floats -> (B, n_in) ints."""
    inp = graph.node(graph.order()[0])
    assert isinstance(inp, Input)
    x = np.asarray(x, dtype=np.float64)
    return fx.quantize_input(x, 1.0 / inp.unit, fx.INPUT_BITS, inp.signed).reshape(x.shape[0], -1)


def netx_usage(path: str | Path, report: dict[str, Any]) -> str:
    """The exact Python lines that load and run the written file on one sample ``x``.

    ``input_message_bits=8`` is required: the input layer is ``dense`` on 8-bit graded values,
    and netx's default (0: 1-bit spikes) silently turns every pixel into 0 or 1 (a silent net).
    """
    return "\n".join(
        [
            "import numpy as np",
            "from lava.lib.dl import netx",
            "from lava.magma.core.run_conditions import RunSteps",
            "from lava.magma.core.run_configs import Loihi2SimCfg",
            "from lava.proc import io",
            f"net = netx.hdf5.Network(net_config={str(path)!r}, input_message_bits=8)",
            "# x: one sample of floats; the same 8-bit frame at every step",
            f"pixels = np.clip(np.floor(np.ravel(x) * {report['input_scale']!r} + 0.5), "
            f"{report['input_range'][0]}, {report['input_range'][1]})",
            f"frames = np.repeat(pixels.astype(int)[:, None], {report['readout_steps']}, axis=1)",
            "source = io.source.RingBuffer(data=frames)",
            "source.s_out.connect(net.inp)",
            (
                f"net.run(condition=RunSteps(num_steps={report['readout_steps']}), "
                "run_cfg=Loihi2SimCfg(select_tag='fixed_pt'))"
            ),
            f"logits = net.layers[-1].neuron.v.get() / (64 * {report['readout_scale']!r})",
            "net.stop()",
        ]
    )


# =============================================================================== reference
def _decay(value: np.ndarray, decay: int) -> np.ndarray:
    prod = value.astype(np.int64) * (DECAY_ONE - decay)
    return np.sign(prod) * (np.abs(prod) >> 12)


def netx_reference(layers: list[NetxLayer] | str | Path, frames: np.ndarray) -> NetxRun:
    """What Lava computes for a written netx network fed ``frames`` (steps, n_in) ints.

    Lava step ``t`` (0-based): the source sends ``frames[t]``; layer ``i`` receives the
    synaptic input its ``Dense`` computed at ``t - 1`` from layer ``i - 1``'s output at
    ``t - 1`` (the source's for ``i = 0``), then runs the CUBA update of the module
    docstring. Returns spikes (steps, n) per layer and the final states.
    """
    if not isinstance(layers, list):
        layers = read_netx(layers)
    frames = np.asarray(frames, dtype=np.int64)
    pend = [np.zeros(layer.size, np.int64) for layer in layers]
    u = [np.zeros(layer.size, np.int64) for layer in layers]
    v = [np.zeros(layer.size, np.int64) for layer in layers]
    spikes = [np.zeros((frames.shape[0], layer.size), bool) for layer in layers]
    for t in range(frames.shape[0]):
        pre = frames[t]
        new_pend = []
        for i, layer in enumerate(layers):
            cur = _decay(u[i], layer.i_decay) + (pend[i] << ACT_SHIFT)
            wrapped = np.where(cur > UV_MAX, cur - 2 * UV_MAX, cur)
            u[i] = np.where(wrapped <= -UV_MAX, cur + 2 * UV_MAX, wrapped)
            vi = _decay(v[i], layer.v_decay) + u[i] + (layer.bias << ACT_SHIFT)
            vi = np.clip(vi, -UV_MAX + 1, UV_MAX - 1)
            s = vi > (layer.v_th_mant << ACT_SHIFT)
            vi[s] = 0
            v[i] = vi
            spikes[i][t] = s
            new_pend.append(layer.weight @ pre)
            pre = s.astype(np.int64)
        pend = new_pend
    return NetxRun(spikes=spikes, v=v, u=u)


def run_netx_lava(
    path: str | Path,
    frames: np.ndarray,
    *,
    input_message_bits: int = fx.INPUT_BITS,
    select_tag: str = "fixed_pt",
) -> NetxRun:
    """Load ``path`` with ``netx.hdf5.Network`` and run ``frames`` (steps, n_in) under
    ``Loihi2SimCfg``; spikes of every layer come from sinks, ``u``/``v`` from the neurons.

    ``extra`` holds the loaded ``weights`` and ``weight_exp`` of each Dense (after the run,
    i.e. after Lava's own clipping and truncation) and the network's description string.
    """
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io

    import lmh_deploy  # noqa: F401  - the Python 3.11 Lava import fix, before any lava import

    frames = np.asarray(frames, dtype=np.int64)
    steps = frames.shape[0]
    net = netx.hdf5.Network(net_config=str(path), input_message_bits=input_message_bits)
    source = io.source.RingBuffer(data=frames.T.copy())
    source.s_out.connect(net.inp)
    sinks = []
    for layer in net.layers:
        sink = io.sink.RingBuffer(shape=layer.out.shape, buffer=steps)
        layer.out.connect(sink.a_in)
        sinks.append(sink)
    with lava_session(net):
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag=select_tag))
        spikes = [s.data.get().T != 0 for s in sinks]
        v = [layer.neuron.v.get().astype(np.int64) for layer in net.layers]
        u = [layer.neuron.u.get().astype(np.int64) for layer in net.layers]
        weights = [layer.synapse.weights.get().astype(np.int64) for layer in net.layers]
        exps = [int(layer.synapse.proc_params.get("weight_exp", 0)) for layer in net.layers]
    return NetxRun(
        spikes=spikes, v=v, u=u, extra={"weights": weights, "weight_exp": exps, "description": str(net)}
    )
