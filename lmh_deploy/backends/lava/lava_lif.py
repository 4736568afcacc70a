"""A ``loihi-lif`` integer graph as a network of Lava's OWN processes: ``LIF`` + ``Dense``.

No lmh-deploy arithmetic runs here: every neuron is ``lava.proc.lif.process.LIF`` (its
``PyLifModelBitAcc`` fixed_pt model) and every synapse ``lava.proc.dense.process.Dense``.
It is the independent oracle for the ``loihi-lif`` profile: sim/ must equal it bit for bit.

Mapping of one QLMH layer (profile ``loihi-lif``, one factor row, per-layer factors):
``du = 4095 - mu_d`` (Lava's current factor is ``4096 - (du + 1)``), ``dv = 4096 - lam_s``,
``vth = theta >> 6``, ``bias = bias_mant << bias_exp`` (13-bit mantissa, smallest exponent),
weights ``2 * mantissa`` with the layer's weight exponent. Samples run side by side as
copies of the network (block-diagonal weights), so one run evaluates a batch.

Timing: each Dense delays by one step, so a layer ``d`` hops from the input sees its first
input at global step ``d + 1``. Lava's LIF integrates its bias from global step 1; the host
therefore keeps each layer's ``bias_mant`` at 0 until the layer's first input arrives
(``Var.set`` between steps; the arithmetic is untouched), which is when sim/ starts the layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.process import Dense as LavaDense
from lava.proc.io.sink import RingBuffer as SinkBuffer
from lava.proc.io.source import RingBuffer as SourceBuffer
from lava.proc.lif.process import LIF
from lava.proc.monitor.process import Monitor

import lmh_deploy  # noqa: F401  - installs the Python 3.11 Lava import fix first
from lmh_deploy.backends.lava.supervise import lava_session
from lmh_deploy.ir import QLMH, Graph, IRError, QDense, QInput, QReadout
from lmh_deploy.ir.synapses import qdense_matrix
from lmh_deploy.passes.neurons import BIAS_EXP_MAX
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.readout import readout_sum

BIAS_MANT_BITS = 13


@dataclass
class LifRun:
    """What Lava's own network computed, per sample on sim/'s timeline.

    ``spikes``, ``u``, ``v``: (T, B, n) per layer (``u`` is the dendrite, ``v`` the soma);
    ``readout_trace``: (T, B, classes) integer readout input; ``logits`` as sim/'s.
    """

    spikes: dict[str, np.ndarray]
    u: dict[str, np.ndarray]
    v: dict[str, np.ndarray]
    readout_trace: np.ndarray
    logits: np.ndarray


def lif_parameters(name: str, node: QLMH) -> dict[str, object]:
    """Lava ``LIF`` arguments for one layer; :class:`IRError` naming what does not map."""
    if node.profile != "loihi-lif":
        raise IRError(
            f"{name}: Lava's LIF runs profile loihi-lif only; this layer uses "
            f"{node.profile!r} (compile with --profile loihi-lif)"
        )
    for fname in ("mu_d", "mu_s", "lam_d", "lam_s"):
        table = np.asarray(getattr(node, fname))
        if table.shape != (1, 1):
            raise IRError(
                f"{name}: Lava's LIF has one {fname} per population and no per-step "
                f"factors; this layer's table is {table.shape}"
            )
    bias = np.asarray(node.bias, np.int64)
    exp = np.zeros(bias.shape, np.int64)
    while True:  # the smallest exponent whose mantissa fits 13 bits (the quantiser made one)
        mant = bias >> exp
        fits = ((mant << exp) == bias) & (mant >= -(1 << 12)) & (mant < (1 << 12))
        if fits.all() or exp.max() > BIAS_EXP_MAX:
            break
        exp = np.where(fits, exp, exp + 1)
    if not fits.all():
        raise IRError(f"{name}: bias {int(bias[~fits][0])} is not a 13-bit mantissa << 3-bit exponent")
    return {
        "du": fx.FACTOR_ONE - 1 - int(node.mu_d[0, 0]),
        "dv": fx.FACTOR_ONE - int(node.lam_s[0, 0]),
        "vth": int(node.theta) >> 6,
        "bias_mant": bias >> exp,
        "bias_exp": exp,
    }


def _synapses(graph: Graph, name: str, batch: int) -> tuple[str, Any, int, bool]:
    (pred,) = graph.inputs_of(name)
    node = graph.node(pred)
    assert isinstance(node, QDense)
    if node.max_pool is not None:
        raise IRError(f"{name}: a max pool of currents is not lowered to Lava's LIF network")
    if node.delay:
        raise IRError(
            f"{name}: parallel synapse paths (residual delays) are not lowered to Lava's LIF network"
        )
    (src,) = graph.inputs_of(pred)
    w = qdense_matrix(node, fx.WEIGHT_LAVA_SCALE)
    w = sp.kron(sp.identity(batch, dtype=np.int64), sp.csr_matrix(w)).toarray()
    return src, w, int(node.weight_exp), bool(node.graded)


def run_lava_lif(graph: Graph, x_int: np.ndarray, timesteps: int) -> LifRun:
    """Run the integer input ``x_int`` (B, *shape) through Lava's LIF + Dense network."""
    order = graph.order()
    if not isinstance(graph.node(order[0]), QInput):
        raise IRError("Lava's LIF network needs a quantised graph (compile first)")
    batch = x_int.shape[0]
    flat = x_int.reshape(-1).astype(np.int32)  # sample-major, as the block-diagonal weights
    layers = [n for n in order if isinstance(graph.node(n), (QLMH, QReadout))]
    depth = {order[0]: 0}
    params: dict[str, dict[str, Any]] = {
        n: lif_parameters(n, graph.node(n)) for n in layers if isinstance(graph.node(n), QLMH)
    }
    plans = {n: _synapses(graph, n, batch) for n in layers}
    for name in layers:
        depth[name] = depth[plans[name][0]] + 1
    total = timesteps + max(depth.values())
    data = np.zeros((flat.size, total), np.int32)
    data[:, :timesteps] = flat[:, None]
    source = SourceBuffer(data=data)
    ports, lifs, sinks, monitors = {order[0]: source.s_out}, {}, {}, {}
    readout_sink = None
    for name in layers:
        src, w, exp, graded = plans[name]
        dense = LavaDense(
            weights=w,
            weight_exp=exp,
            num_weight_bits=8,
            num_message_bits=int(graph.node(order[0]).bits) if graded else 0,
            name=f"{name}/dense",
        )
        ports[src].connect(dense.s_in)
        if name not in params:
            readout_sink = SinkBuffer(shape=(w.shape[0],), buffer=total)
            dense.a_out.connect(readout_sink.a_in)
            continue
        p = params[name]
        n = w.shape[0]
        lif = LIF(
            shape=(n,),
            du=p["du"],
            dv=p["dv"],
            vth=p["vth"],
            bias_mant=np.zeros(n),
            bias_exp=np.tile(p["bias_exp"], batch),
            name=name,
        )
        dense.a_out.connect(lif.a_in)
        sinks[name] = SinkBuffer(shape=(n,), buffer=total)
        lif.s_out.connect(sinks[name].a_in)
        for var in ("u", "v"):
            monitors[name, var] = Monitor()
            monitors[name, var].probe(target=getattr(lif, var), num_steps=total)
        lifs[name], ports[name] = lif, lif.s_out
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    with lava_session(source):
        done = 0
        for step in range(1, max(depth.values()) + 2):  # switch biases on as inputs arrive
            for name, lif in lifs.items():
                if depth[name] + 1 == step:
                    lif.bias_mant.set(np.tile(params[name]["bias_mant"], batch).astype(float))
            if step <= total:
                source.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
                done += 1
        if total > done:
            source.run(condition=RunSteps(num_steps=total - done), run_cfg=cfg)
        raw = {name: sink.data.get() for name, sink in sinks.items()}
        probes = {key: mon.get_data()[lifs[key[0]].name][key[1]] for key, mon in monitors.items()}
        assert readout_sink is not None, "a quantised graph has one readout"
        readout = readout_sink.data.get()
    run = LifRun(spikes={}, u={}, v={}, readout_trace=np.zeros(0), logits=np.zeros(0))
    for name in lifs:
        start = depth[name]
        cols = slice(start, start + timesteps)
        run.spikes[name] = _per_sample(raw[name][:, cols].T != 0, batch)
        run.u[name] = _per_sample(np.asarray(probes[name, "u"])[cols], batch).astype(np.int64)
        run.v[name] = _per_sample(np.asarray(probes[name, "v"])[cols], batch).astype(np.int64)
    start = depth[layers[-1]]
    run.readout_trace = _per_sample(readout[:, start : start + timesteps].T, batch).astype(np.int64)
    readout = graph.node(layers[-1])
    run.logits = readout_sum(run.readout_trace, readout.bias, readout.leaky)
    return run


def _per_sample(steps_by_units: np.ndarray, batch: int) -> np.ndarray:
    """(T, B*n) with sample-major copies -> (T, B, n)."""
    t, bn = steps_by_units.shape
    return steps_by_units.reshape(t, batch, bn // batch)
