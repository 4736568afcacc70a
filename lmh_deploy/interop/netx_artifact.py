"""A compiled ``loihi-lif`` artifact as a lava-dl netx HDF5 file, with exactly its integers.

This writes the integer graph as it is (a checkpoint is compiled with ``--profile loihi-lif``
first), so Lava's netx network computes what sim/ computes:

* each ``QDense -> QLMH`` pair becomes a ``dense`` layer with a ``CUBA`` neuron:
  ``weight = 2 * mantissa`` (netx re-derives a weight exponent that leaves these integers
  unchanged), ``bias = bias >> 6`` (netx fixes ``bias_exp = 6``), ``iDecay = 4096 - mu_d``
  (netx passes ``du = iDecay - 1``; Lava's current factor is ``4096 - (du + 1)``),
  ``vDecay = 4096 - lam_s``, ``vThMant = theta >> 6``;
* the readout becomes a last ``dense`` layer whose neuron keeps no current
  (``iDecay = 4096``: ``u = a_in << 6`` every step) and never spikes (``vThMant = 2**17 - 1``);
  the logits are ``sum_t (u[t] >> 6) + T * bias``, read from Lava.

What netx cannot hold is refused naming the layer (another profile, a weight exponent, a
bias that is not ``mant << 6``, per-neuron or per-step factors, residual paths).
:func:`run_netx_artifact` runs the file freely in Lava ``fixed_pt`` (loaded by
``netx.hdf5.Network(..., input_message_bits=B, reset_interval=T, reset_offset=1)``, ``B`` the
artifact's input width (``QInput.bits``, 8 for pixels; written into the file), samples
back to back through its ``inp`` port, biases from the file, no host writes) and returns
every layer's spikes on sim/'s timeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmh_deploy.backends.lava.supervise import lava_session
from lmh_deploy.interop import InteropError, leaky_readout_refusal
from lmh_deploy.interop.netx_io import NetxLayer, write_netx_layers
from lmh_deploy.ir import QLMH, Graph, QDense, QInput, QReadout
from lmh_deploy.ir.synapses import abs_row_sums, qdense_matrix
from lmh_deploy.semantics import integer as fx

ACT_SHIFT = 6
VTH_MAX = (1 << 17) - 1
BIAS_TOP = 1 << 12  # 13-bit signed bias mantissa
CONV_SUM_MAX = (1 << 23) - 1


def _chain(graph: Graph) -> list[tuple[str, QDense, Any]]:
    """``(layer name, its QDense, its QLMH or QReadout)`` from the input to the readout."""
    order = graph.order()
    if not isinstance(graph.node(order[0]), QInput):
        raise InteropError("netx export needs a compiled (integer) graph")
    out = []
    for name in order:
        node = graph.node(name)
        if not isinstance(node, (QLMH, QReadout)):
            continue
        if isinstance(node, QReadout) and node.leaky.size:
            raise InteropError(leaky_readout_refusal(name, "netx"))
        preds = graph.inputs_of(name)
        if len(preds) != 1:
            raise InteropError(
                f"{name}: {len(preds)} synapse paths meet here (a residual sum); netx layers form a chain"
            )
        dense = graph.node(preds[0])
        out.append((name, dense, node))
    return out


def _conv_geometry(name: str, dense: QDense, inp: QInput) -> dict[str, Any]:
    """A conv ``QDense``'s netx layer fields: its kernel (a cross-correlation, PyTorch's
    (C_out, C_in, kh, kw) layout, which netx's loader turns into Lava's flipped (C_out, W,
    H, C_in) kernel), output shape, stride and padding."""
    kernel = fx.WEIGHT_LAVA_SCALE * np.asarray(dense.weight_mant, np.int64)
    presyn_max = inp.max_value if dense.graded else 1
    worst = int(abs_row_sums(kernel).max()) * presyn_max
    if worst > CONV_SUM_MAX:  # Lava's Conv sums in float32 and clamps to 24 bits
        raise InteropError(
            f"{name}: a convolution input can reach {worst}, beyond the 24 bits Lava's Conv computes exactly"
            + (f" (its {inp.bits}-bit inputs; compile with fewer --input-bits)" if dense.graded else "")
        )
    return {
        "weight": kernel,
        "conv_shape": tuple(int(d) for d in dense.conv_node().output_shape),
        "stride": tuple(int(d) for d in dense.conv_stride),
        "padding": tuple(int(d) for d in dense.conv_padding),
    }


def _layer(name: str, dense: QDense, node: Any, inp: QInput) -> NetxLayer:
    if isinstance(node, QLMH) and node.max_spikes > 1:
        raise InteropError(
            f"{name}: graded spikes (up to {node.max_spikes} a step, max_spikes); netx's CUBA "
            f"neurons send one spike a step"
        )
    if dense.max_pool is not None:
        raise InteropError(
            f"{name}: netx has no max pool of currents (its pool layer sums); use AvgPool2d, "
            f"or put the MaxPool2d after the neuron"
        )
    if dense.weight_exp != 0:
        raise InteropError(
            f"{name}: weight exponent {dense.weight_exp} has no place in netx "
            f"(it derives its own from the written integers); compile with "
            f"--profile loihi-lif, which keeps it 0"
        )
    if int(np.max(abs_row_sums(dense.weight_mant), initial=0)) == 0:
        raise InteropError(
            f"{name}: every weight rounds to 0, and netx's loader divides by the largest one"
            + (
                f" (its {inp.bits}-bit inputs left no mantissa bits under the fixed weight exponent; "
                f"compile with fewer --input-bits)"
                if dense.graded
                else ""
            )
        )
    if dense.is_conv and not isinstance(node, QReadout):
        synapse = _conv_geometry(name, dense, inp)
    else:  # a dense layer, or a readout fed by a convolution: its synaptic matrix
        weight = qdense_matrix(dense, fx.WEIGHT_LAVA_SCALE)
        synapse = {"weight": np.asarray(weight.toarray() if sp.issparse(weight) else weight, np.int64)}
    if isinstance(node, QReadout):
        bias = np.asarray(node.bias, np.int64)
        if np.any(np.abs(bias) >= BIAS_TOP):
            raise InteropError(
                f"{name}: readout bias {int(np.abs(bias).max())} exceeds netx's 13-bit bias mantissa"
            )
        return NetxLayer(bias=bias, i_decay=fx.FACTOR_ONE, v_decay=0, v_th_mant=VTH_MAX, name=name, **synapse)
    if node.profile != "loihi-lif":
        raise InteropError(
            f"{name}: profile {node.profile!r}; netx runs Lava's LIF, export "
            f"an artifact compiled with --profile loihi-lif"
        )
    for fname in ("mu_d", "lam_s"):
        if np.asarray(getattr(node, fname)).shape != (1, 1):
            raise InteropError(f"{name}: netx has one {fname} per layer and no per-step factors")
    bias = np.asarray(node.bias, np.int64)
    mant = bias >> ACT_SHIFT
    if np.any(mant << ACT_SHIFT != bias) or np.any(np.abs(mant) >= BIAS_TOP):
        raise InteropError(f"{name}: bias is not a 13-bit mantissa << 6 (netx's bias_exp)")
    if "conv_shape" in synapse:  # per channel when uniform (as lava-dl writes it), else
        # per neuron in the (W, H, C) order netx's Conv block takes it as it is
        per_channel = mant.reshape(synapse["conv_shape"][0], -1)
        mant = (
            per_channel[:, 0].copy()
            if np.all(per_channel == per_channel[:, :1])
            else mant.reshape(synapse["conv_shape"]).transpose(2, 1, 0).copy()
        )
    return NetxLayer(
        bias=mant,
        i_decay=fx.FACTOR_ONE - int(node.mu_d[0, 0]),
        v_decay=fx.FACTOR_ONE - int(node.lam_s[0, 0]),
        v_th_mant=int(node.theta) >> ACT_SHIFT,
        name=name,
        **synapse,
    )


def _check_sequence(chain: list[tuple[str, QDense, Any]], layers: list[NetxLayer]) -> None:
    """netx feeds each layer the previous one's output: a conv layer needs a conv (or the
    input) before it, with exactly the shape it expects."""
    for i, ((name, dense, _), layer) in enumerate(zip(chain, layers)):
        if layer.conv_shape is None:
            continue
        expects = tuple(dense.conv_input_shape or ())
        before = layers[i - 1].conv_shape if i else expects
        if before is None:
            raise InteropError(
                f"{name}: a convolution after the dense layer {chain[i - 1][0]}; "
                f"netx flattens only before dense layers"
            )
        if tuple(before) != expects:
            raise InteropError(f"{name}: expects input {expects} but receives {tuple(before)}")


def artifact_to_netx(graph: Graph, path: str | Path) -> dict[str, Any]:
    """Write the integer ``graph`` as a netx HDF5 file; returns a short report.

    Convolutions (pooling composed into them by the quantiser) become ``conv`` layers; a
    pooling or convolution feeding a dense layer or the readout becomes that layer's matrix.
    """
    chain = _chain(graph)
    inp = graph.node(graph.order()[0])
    layers = [_layer(name, dense, node, inp) for name, dense, node in chain]
    _check_sequence(chain, layers)
    readout = chain[-1][2]
    timesteps = int(graph.meta.get("timesteps", 1))
    write_netx_layers(
        layers,
        path,
        input_shape=tuple(inp.shape),
        meta={
            "producer": "lmh-deploy (artifact integers)",
            "timesteps": timesteps,
            "readout": "logits = sum_t (u[t] >> 6) of the last layer + T * its bias",
            "readout_scale": float(readout.state_scale),
            "input_scale": float(inp.scale),
            "input_range": list(fx.input_range(int(inp.bits), bool(inp.signed))),
            "input_message_bits": int(inp.bits),
        },
    )
    return {
        "input_message_bits": int(inp.bits),
        "input_range": list(fx.input_range(int(inp.bits), bool(inp.signed))),
        "path": str(path),
        "layers": [layer.name for layer in layers],
        "conv_layers": [layer.name for layer in layers if layer.conv_shape is not None],
        "latency_steps": len(layers),
        "timesteps": timesteps,
    }


def netx_network_line(path: str | Path, timesteps: int, input_bits: int = fx.INPUT_BITS_UNSIGNED) -> str:
    """How to load the written file: graded input of the artifact's width and netx's own
    per-sample reset."""
    return (
        f"net = netx.hdf5.Network(net_config={str(path)!r}, input_message_bits={int(input_bits)}, "
        f"reset_interval={int(timesteps)}, reset_offset=1)"
    )


def artifact_netx_usage(path: str | Path, report: dict[str, Any]) -> str:
    """The Python lines that load the written file and run samples as sim/ does.

    ``input_message_bits=B`` (the artifact's input width, 8 for pixels): the first layer takes
    graded values; netx's default (0, 1-bit spikes) turns each into 0 or 1 and leaves the net
    silent. ``reset_interval=T,
    reset_offset=1``: netx clears each layer's ``u``, ``v`` on the step its first input of a
    sample arrives (layer ``i`` at step ``i + 2`` of every ``T``), so samples run back to back
    and the biases in the file act from each layer's first input, as in sim/.
    """
    layout = "(W, H, C) frames" if report.get("conv_layers") else "flat vectors"
    bits = int(report.get("input_message_bits", fx.INPUT_BITS_UNSIGNED))
    lo, hi = report.get("input_range", fx.input_range(bits))
    return "\n".join(
        [
            "from lava.lib.dl import netx",
            netx_network_line(path, report["timesteps"], bits),
            f"# its input: {bits}-bit integers {lo}..{hi} as {layout}, "
            f"each sample for {report['timesteps']} steps, back to back; to run samples that way",
            "# and read every layer's spikes and the readout on sim/'s timeline (no host writes):",
            "from lmh_deploy.interop.netx_artifact import run_netx_artifact",
            f"spikes, trace, logits = run_netx_artifact({str(path)!r}, x_int, "
            f"{report['timesteps']})  # x_int: (N, C*H*W) ints",
        ]
    )


def run_netx_artifact(
    path: str | Path, x_int: np.ndarray, timesteps: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Run the samples of ``x_int`` (B, n_in) through ``path`` loaded by netx, in Lava
    fixed_pt, freely (:func:`run_netx_free`, with graded input messages of the width written
    into the file, 8 bits when it names none, and a Monitor on the readout's ``u``).

    Returns ``(spikes per hidden layer (T, B, n), readout trace (T, B, classes), logits)`` on
    sim/'s timeline; the logits are ``sum_t (u[t] >> 6) + T * bias`` of the last layer.
    """
    import h5py
    from lava.lib.dl import netx

    import lmh_deploy  # noqa: F401  - the Python 3.11 Lava import fix, before any lava import

    with h5py.File(path, "r") as f:
        bits = int(f.attrs.get("lmh_deploy_input_message_bits", fx.INPUT_BITS_UNSIGNED))
    net = netx.hdf5.Network(
        net_config=str(path), input_message_bits=bits, reset_interval=timesteps, reset_offset=1
    )
    records, u = run_netx_free(net, x_int, timesteps, readout_u=True)
    assert u is not None
    readout_bias = np.asarray(net.layers[-1].neuron.bias_mant.init, np.int64)
    names = _layer_names(path, len(records))[:-1]
    spikes = {name: records[i] != 0 for i, name in enumerate(names)}
    trace = u >> ACT_SHIFT
    logits = trace.sum(0) + timesteps * readout_bias
    return spikes, trace, logits


def run_netx_free(
    net: Any, x_int: np.ndarray, timesteps: int, *, readout_u: bool = False
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Run the samples of ``x_int`` (B, ...) through a built ``netx.hdf5.Network`` (loaded with
    ``reset_interval=timesteps, reset_offset=1``) in Lava fixed_pt, freely: the samples go in
    through ``net.inp`` back to back (each for ``timesteps`` steps), netx's reset clears the
    states between samples, and the host only reads (sinks on every layer's ``out``, with
    ``readout_u`` a Monitor on the last layer's ``u``).

    Returns every layer's output values (T, B, n) in (C, H, W) order and, with ``readout_u``,
    the last layer's ``u`` (T, B, n), on sim/'s timeline: layer ``i`` (0-based) sees local step
    ``t`` of sample ``b`` at global step ``b T + i + 2 + t`` (one step of synaptic delay per
    layer), i.e. sink column ``b T + i + 1 + t``.
    """
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.monitor.process import Monitor

    x_int = np.asarray(x_int, np.int64).reshape(x_int.shape[0], -1)
    batch = x_int.shape[0]
    depth = len(net.layers)
    total = batch * timesteps + depth  # the last sample drains through every layer
    in_shape = tuple(net.inp.shape)  # (n,) or a conv's (W, H, C)
    frames = _to_lava_order(x_int, in_shape)
    data = np.zeros(in_shape + (total,), np.int32)
    for b in range(batch):
        data[..., b * timesteps : (b + 1) * timesteps] = frames[b][..., None]
    source = io.source.RingBuffer(data=data)
    source.s_out.connect(net.inp)
    sinks = []
    for layer in net.layers:
        sink = io.sink.RingBuffer(shape=layer.out.shape, buffer=total)
        layer.out.connect(sink.a_in)
        sinks.append(sink)
    readout = net.layers[-1].neuron
    monitor = Monitor() if readout_u else None
    if monitor is not None:
        monitor.probe(target=readout.u, num_steps=total)
    with lava_session(net):  # no worker outlives the run, even on an error
        net.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        raw = [_from_lava_order(sink.data.get()) for sink in sinks]
        u_read = None if monitor is None else np.asarray(monitor.get_data()[readout.name]["u"], np.int64)

    def columns(layer: int) -> np.ndarray:  # (B, T) sink columns of a layer's local steps
        return np.arange(batch)[:, None] * timesteps + layer + 1 + np.arange(timesteps)[None, :]

    records = [raw[i][:, columns(i)].transpose(2, 1, 0) for i in range(depth)]
    trace = None if u_read is None else u_read[columns(depth - 1)].transpose(1, 0, 2)
    return records, trace


def _to_lava_order(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, n) values in (C, H, W) order -> (B, *shape) in netx's (W, H, C) order."""
    if len(shape) == 1:
        return x
    return x.reshape((x.shape[0],) + shape[::-1]).transpose(0, 3, 2, 1)


def _from_lava_order(data: np.ndarray) -> np.ndarray:
    """A sink's (*shape, steps) record -> (n, steps) in (C, H, W) order."""
    if data.ndim == 2:
        return data
    return data.transpose(2, 1, 0, 3).reshape(-1, data.shape[-1])


def _layer_names(path: str | Path, count: int) -> list[str]:
    """The names of the groups that are network layers (those with a neuron)."""
    import h5py

    with h5py.File(path, "r") as f:
        groups = [f["layer"][str(i)] for i in range(len(f["layer"]))]
        names = [
            str(g.attrs.get("lmh_deploy_name", f"layer{i}")) for i, g in enumerate(groups) if "neuron" in g
        ]
    assert len(names) == count, (names, count)
    return names
