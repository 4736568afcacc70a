"""Stage 2: float graph IR -> integer graph IR (Loihi 2 fixed point), as a chain of passes.

1. chain composition (:mod:`~lmh_deploy.passes.compose`): the synapse chains into each neuron
   layer, each as one linear map in float current per integer presynaptic unit;
2. joint quantisation (:mod:`~lmh_deploy.passes.weights`): one 8-bit mantissa scale and
   exponent per layer, shared by all its paths;
3. neuron quantisation and factor codes (:mod:`~lmh_deploy.passes.neurons`): threshold, bias,
   rules and factors at the layer's state scale, under the numeric profile;
4. bias correction (:mod:`~lmh_deploy.passes.bias_correction`), given calibration activity:
   the weights' mean rounding current is taken off each layer's bias;
5. delay balancing (:mod:`~lmh_deploy.passes.delays`): parallel paths arrive together;
6. the report (:mod:`~lmh_deploy.passes.quant_report`).

The arithmetic the integer graph denotes is :mod:`lmh_deploy.semantics.integer`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lmh_deploy.ir import (
    LMH,
    QLMH,
    Graph,
    Input,
    IRError,
    QDense,
    QInput,
    QReadout,
    Readout,
    validate,
    validate_quantized,
)
from lmh_deploy.ir.synapses import compact_mantissa
from lmh_deploy.passes.bias_correction import correctable, keeps_silent_class, rounding_current
from lmh_deploy.passes.compose import SynapsePath, path_matrix, synapse_paths
from lmh_deploy.passes.delays import balance_delays
from lmh_deploy.passes.neurons import (
    quantize_neuron,
    state_scale_cap,
    to_state_int,
    weight_scale_cap,
    wrap_limit,
)
from lmh_deploy.passes.quant_report import LayerQuant, quantization_report, worst_case_state_bound
from lmh_deploy.passes.weights import (
    CURRENT_HEADROOM_BITS,
    FineWeights,
    WeightQuant,
    quantize_joint,
    quantize_weights,
    fine_path_name,
    split_fine,
    state_scale,
)
from lmh_deploy.semantics import integer as fx
from lmh_deploy.semantics.profiles import DEFAULT_PROFILE, NumericProfile, get_profile

__all__ = [
    "CURRENT_HEADROOM_BITS",
    "WeightQuant",
    "quantize_graph",
    "quantize_joint",
    "quantize_weights",
    "state_scale",
    "worst_case_state_bound",
]


#: ``compile --weight-bits``: 8 (one 8-bit synapse per weight) or 16 (two, about 15 bits)
WEIGHT_BITS = (8, 16)


def _qdense(path: SynapsePath, mant: Any, scale: float, exp: int) -> QDense:
    """The integer synapses of one path (kernels keep their geometry); delay 0 until balanced."""
    geometry: dict[str, Any] = (
        {}
        if path.conv is None
        else {
            "conv_input_shape": tuple(path.conv.input_shape),
            "conv_stride": tuple(path.conv.stride),
            "conv_padding": tuple(path.conv.padding),
        }
    )
    if path.pool is not None:  # the pooled current keeps the convolution's scale
        geometry.update(
            pool_kernel=tuple(path.pool.kernel),
            pool_stride=tuple(path.pool.stride),
            pool_padding=tuple(path.pool.padding),
            pool_dilation=tuple(path.pool.dilation),
            pool_ceil_mode=bool(path.pool.ceil_mode),
        )
    return QDense(
        weight_mant=compact_mantissa(mant), weight_exp=exp, graded=path.graded, weight_scale=scale, **geometry
    )


def _qinput(node: Input) -> QInput:
    """spikes: x in {0, x_max} -> {0, 1} (one bit); graded: ``node.bits``-wide direct encoding,
    unsigned [0, x_max] -> 0..2**bits - 1 or signed [-x_max, x_max] -> +-(2**(bits-1) - 1)."""
    return QInput(
        shape=node.shape, scale=1.0 / node.unit, bits=1 if node.spikes else node.bits, signed=node.signed
    )


def _quantize_layer(
    graph: Graph,
    q: Graph,
    name: str,
    prof: NumericProfile,
    mean_counts: dict[str, np.ndarray] | None = None,
    corrections: dict[str, float] | None = None,
    skipped: dict[str, str] | None = None,
    weight_bits: int = 8,
) -> LayerQuant:
    """Add the integer paths into float layer ``name`` and the layer itself to ``q``; with
    ``mean_counts``, correct the bias for the weights' mean rounding current and record its
    largest magnitude (in thresholds, or logits for the readout) in ``corrections``, or in
    ``skipped`` why a readout is left uncorrected (``keeps_silent_class``). ``weight_bits``
    16 splits each weight across two 8-bit synapse paths (:func:`~lmh_deploy.passes.weights.split_fine`)."""
    node = graph.node(name)
    timesteps = int(graph.meta.get("timesteps", 1))
    paths = synapse_paths(graph, name)

    headroom = prof.current_headroom_bits - prof.input_shift
    limit = wrap_limit(node, prof)

    def fit(cap: float) -> tuple[list[Any], float, int, FineWeights | None]:
        mants, w_scale, exp = quantize_joint(
            paths, headroom, prof.fixed_weight_exp, cap, limit, state_scale_cap(node, prof)
        )
        if weight_bits == 8:
            return mants, w_scale, exp, None
        top = (1 << headroom) if limit is None else limit
        for _ in range(8):  # the fine half adds at most ~1 %: shrink the coarse scale by that
            fine = split_fine(paths, mants, w_scale, exp)
            if fine is None or (fine.worst <= top and fine.worst_fine_sum <= fx.ACCUMULATOR_MAX):
                return mants, w_scale, exp, fine
            shrink = min(0.99, top / fine.worst, fx.ACCUMULATOR_MAX / fine.worst_fine_sum)
            mants, w_scale, exp = quantize_joint(
                paths, headroom, exp, w_scale * shrink, limit, state_scale_cap(node, prof)
            )
        return mants, w_scale, exp, None

    mants, w_scale, exp, fine = fit(weight_scale_cap(node, prof))
    for _ in range(3 if mean_counts is not None and correctable(node, prof) else 0):
        assert mean_counts is not None  # the loop runs only with calibration activity
        error = rounding_current(
            paths, mants if fine is None else fine.effective(mants), w_scale, mean_counts
        )
        corrected = dataclasses.replace(node, bias=node.bias - error)
        if isinstance(node, Readout) and not keeps_silent_class(
            node, np.round(corrected.bias * state_scale(w_scale, exp)), timesteps
        ):
            if skipped is not None:
                skipped[name] = "its correction would change the class that a silent input predicts"
            break
        cap = weight_scale_cap(corrected, prof)  # a fixed bias exponent bounds the scale
        if w_scale <= cap:
            node = corrected
            if corrections is not None:
                corrections[name] = float(
                    np.abs(error).max() / (node.theta if isinstance(node, LMH) else 1.0)
                )
            break
        # refit with room for the new rounding's correction (then correct it; else none)
        top = float(np.abs(corrected.bias).max())
        mants, w_scale, exp, fine = fit(cap * top / (top + float(np.abs(error).max())))
    inputs: tuple[str, ...] = ()
    for i, (path, mant) in enumerate(zip(paths, mants)):
        q.add(path.name, _qdense(path, mant, w_scale, exp), (path.source,))
        inputs += (path.name,)
        if fine is not None and fine.mants[i] is not None:
            fine_name = fine_path_name(path.name)
            if fine_name in graph.nx_graph or fine_name in q.nx_graph:
                raise IRError(
                    f"{fine_name}: a node has the name --weight-bits 16 gives {path.name}'s fine half"
                )
            q.add(fine_name, _qdense(path, fine.mants[i], w_scale, exp - fine.shift), (path.source,))
            inputs += (fine_name,)
    layer = LayerQuant(
        name=name,
        node=node,
        paths=paths,
        mants=mants if fine is None else fine.effective(mants),
        weight_scale=w_scale,
        weight_exp=exp,
    )
    s = state_scale(w_scale, exp)
    if isinstance(node, Readout):  # a readout sums raw a_in
        bias = to_state_int(node.bias, s, "bias", name)
        q.add(name, QReadout(bias=bias, state_scale=s, leaky=node.leaky), inputs)
        return layer
    layer.input_shift = prof.input_shift
    s *= 1 << prof.input_shift  # the neuron sees a_in << input_shift
    qn, layer.codes, layer.neuron_entries = quantize_neuron(name, node, s, prof)
    q.add(name, qn, inputs)
    return layer


def quantize_graph(
    graph: Graph,
    profile: str = DEFAULT_PROFILE,
    *,
    mean_counts: dict[str, np.ndarray] | None = None,
    weight_bits: int = 8,
) -> tuple[Graph, dict[str, Any]]:
    """Quantise a validated float graph under numeric ``profile``; returns ``(graph, report)``.

    Every chain of synapse nodes between two neuron layers becomes one ``QDense`` named
    after its last node; neuron layers fed by several chains (residual blocks) quantise
    them jointly and delay the shorter ones. A layer whose factors or rules the profile
    cannot express raises :class:`IRError` naming the layer and the rule. The input graph
    is not modified. ``mean_counts`` (mean count per step of the input and of every LM-H
    layer on calibration data, e.g. ``pipeline.compile.mean_counts``) turns on bias
    correction; the report's ``bias_correction`` then gives each layer's largest change.
    ``weight_bits`` 16 gives each weight a second, fine 8-bit synapse path (about 15 mantissa
    bits; docs/fixed-point.md §5), where the profile has a weight exponent to give it.
    """
    validate(graph)
    prof = get_profile(profile)
    if weight_bits not in WEIGHT_BITS:
        raise IRError(f"weight bits {weight_bits}: use 8 or 16")
    if weight_bits > 8 and prof.fixed_weight_exp is not None:
        raise IRError(
            f"profile {prof.name} fixes the weight exponent at {prof.fixed_weight_exp}; "
            f"--weight-bits 16 needs a second, lower one (use --profile lmh or cuba)"
        )
    q = Graph(meta={**graph.meta, "profile": prof.name})
    layers = []
    corrections: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name, node in graph.items():
        if isinstance(node, Input):
            q.add(name, _qinput(node))
        elif isinstance(node, (LMH, Readout)):  # synapse chains go with the layer they feed
            layers.append(
                _quantize_layer(graph, q, name, prof, mean_counts, corrections, skipped, weight_bits)
            )
    q = balance_delays(q)
    validate_quantized(q)
    timesteps = int(graph.meta.get("timesteps", 1))
    report = quantization_report(layers, q, prof.as_dict(), timesteps)
    report["weight_bits"] = weight_bits
    if mean_counts is not None:
        report["bias_correction"] = {
            "what": "mean rounding current of the "
            f"{'split weights (two 8-bit paths each)' if weight_bits > 8 else '8-bit weights'} "
            "on the calibration inputs, "
            "taken off each layer's bias; largest change per layer, in thresholds "
            "(the readout: in logits)",
            "layers": corrections,
        }
        if skipped:  # a readout whose correction would break the tie of a silent input
            report["bias_correction"]["not_corrected"] = skipped
    return q, report


def _exact_ints(name: str, what: str, value: Any) -> np.ndarray:
    """``value`` (float) as the integers it holds; an IRError if it holds none."""
    ints = np.rint(value)
    if not np.allclose(ints, value, rtol=0, atol=1e-6):
        raise IRError(f"{name}: {what} is not an integer at the imported file's scale")
    return ints.astype(np.int64)


def _exact_layer(graph: Graph, q: Graph, name: str, w_scale: float, prof: NumericProfile) -> LayerQuant:
    """Add the integer paths into float layer ``name`` and the layer itself to ``q``, with the
    integers its float values hold at weight scale ``w_scale`` (:func:`exact_graph`)."""
    node = graph.node(name)
    paths = synapse_paths(graph, name)
    mants = [_exact_ints(p.name, "weight", path_matrix(p.weights) * w_scale) for p in paths]
    for path, mant in zip(paths, mants):
        q.add(path.name, _qdense(path, mant, w_scale, 0), (path.source,))
    layer = LayerQuant(name=name, node=node, paths=paths, mants=mants, weight_scale=w_scale, weight_exp=0)
    s = state_scale(w_scale, 0)
    inputs = tuple(p.name for p in paths)
    if isinstance(node, Readout):
        bias = _exact_ints(name, "bias", node.bias * s)
        q.add(name, QReadout(bias=bias, state_scale=s, leaky=node.leaky), inputs)
        return layer
    layer.input_shift = prof.input_shift
    s *= 1 << prof.input_shift
    layer.codes = {f: _exact_ints(name, f, getattr(node, f) * fx.FACTOR_ONE) for f in LMH.FACTOR_RANGES}
    q.add(
        name,
        QLMH(
            size=node.size,
            theta=int(_exact_ints(name, "theta", node.theta * s)),
            bias=_exact_ints(name, "bias", node.bias * s),
            state_scale=s,
            profile=prof.name,
            reset=node.reset,
            reset_value=int(_exact_ints(name, "reset_value", node.reset_value * s)),
            threshold_test=node.threshold_test,
            reset_timing=node.reset_timing,
            v_d_init=fx.initial_ints(_exact_ints(name, "v_d_init", np.asarray(node.v_d_init) * s)),
            v_s_init=int(_exact_ints(name, "v_s_init", float(node.v_s_init or 0.0) * s)),
            mu_d=layer.codes["mu_d"],
            mu_s=layer.codes["mu_s"],
            lam_d=layer.codes["lam_d"],
            lam_s=layer.codes["lam_s"],
        ),
        inputs,
    )
    return layer


def exact_graph(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """The integer graph whose integers a float graph holds exactly (an imported netx file,
    ``graph.meta["exact_weight_scale"]``: weight mantissas are ``weight * unit * scale``),
    under ``loihi-lif``, not re-quantised; returns ``(graph, report)`` as
    :func:`quantize_graph` does."""
    validate(graph)
    prof = get_profile("loihi-lif")
    w_scale = float(graph.meta["exact_weight_scale"])
    q = Graph(meta={**graph.meta, "profile": prof.name})
    layers = []
    for name, node in graph.items():
        if isinstance(node, Input):
            q.add(name, _qinput(node))
        elif isinstance(node, (LMH, Readout)):  # synapse chains go with the layer they feed
            layers.append(_exact_layer(graph, q, name, w_scale, prof))
    q = balance_delays(q)
    validate_quantized(q)
    return q, quantization_report(layers, q, prof.as_dict(), int(graph.meta.get("timesteps", 1)))
