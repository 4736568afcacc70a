"""The one schema of what an IR file may hold: the graph's meta and every node's scalars.

pydantic models, strict (no "4" for 4, no 4.0 for an int, no NaN where a finite number
belongs, no unknown field), with the bounds of :mod:`lmh_deploy.bounds`. :func:`load_graph`
checks a file's JSON against it before any array is read, so an edited or foreign file gets
one line naming the file, the node and the field, never a traceback or a huge allocation.
Arrays are checked after reading by each node's own ``check`` (shapes against each other).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from lmh_deploy.bounds import MAX_CLASSES, MAX_INPUT_SIZE, MAX_TIMESTEPS
from lmh_deploy.choices import Dataset, Target
from lmh_deploy.ir.base import IRError
from lmh_deploy.semantics.integer import MAX_SPIKES
from lmh_deploy.semantics.profiles import PROFILES

#: Largest |integer| a stored integer field may hold (states and thresholds are 24-bit).
MAX_STORED_INT = 1 << 40


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"must be finite, got {value}")
    return value


def _shape(value: list[int]) -> list[int]:
    if math.prod(value) > MAX_INPUT_SIZE:
        raise ValueError(f"{value} has more than {MAX_INPUT_SIZE} elements")
    return value


Number = StrictInt | StrictFloat  # JSON writes 1.0 as 1.0 but a hand may write 1
Finite = Annotated[Number, AfterValidator(_finite)]
Positive = Annotated[Number, Field(gt=0), AfterValidator(_finite)]
Size = Annotated[StrictInt, Field(ge=1, le=MAX_INPUT_SIZE)]
StoredInt = Annotated[StrictInt, Field(ge=-MAX_STORED_INT, le=MAX_STORED_INT)]
Shape = Annotated[list[Size], Field(min_length=1, max_length=4), AfterValidator(_shape)]
Pair = Annotated[list[Size], Field(min_length=2, max_length=2)]
Padding = Annotated[
    list[Annotated[StrictInt, Field(ge=0, le=MAX_INPUT_SIZE)]], Field(min_length=2, max_length=2)
]
Chw = Annotated[list[Size], Field(min_length=3, max_length=3)]
Reset = Literal["subtract", "set"]
ThresholdTest = Literal[">=", ">"]
ResetTiming = Literal["same-step", "next-step"]


def _one_of(choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"unknown {value!r}; known: {', '.join(choices)}")
        return value

    return AfterValidator(check)


DatasetName = Annotated[StrictStr, _one_of(tuple(d.value for d in Dataset))]
TargetName = Annotated[StrictStr, _one_of(tuple(t.value for t in Target))]
ProfileName = Annotated[StrictStr, _one_of(tuple(PROFILES))]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class _Open(BaseModel):
    """Known keys are checked; others (provenance, notes of newer writers) pass through."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class DatasetMeta(_Open):
    name: DatasetName
    input_shape: Shape
    num_classes: Annotated[StrictInt, Field(ge=1, le=MAX_CLASSES)]
    x_max: Positive = 1.0
    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)] = 0
    data_dir: StrictStr | None = None
    frames: StrictBool | Annotated[StrictInt, Field(ge=0, le=MAX_TIMESTEPS)] | None = None
    spikes: StrictBool | None = None


class GraphMeta(_Open):
    """``meta`` of a graph (and of an artifact: timesteps, classes, dataset, target, profile)."""

    timesteps: Annotated[StrictInt, Field(ge=1, le=MAX_TIMESTEPS)]
    num_classes: Annotated[StrictInt, Field(ge=1, le=MAX_CLASSES)] | None = None
    dataset: DatasetMeta | None = None
    target: TargetName | None = None
    profile: ProfileName | None = None


class InputFields(_Strict):
    shape: Shape
    x_max: Positive = 1.0
    spikes: StrictBool = False
    signed: StrictBool = False
    bits: Annotated[StrictInt, Field(ge=1, le=32)] = 8  # files before it had 8-bit inputs


class NoFields(_Strict):
    """Dense and readout layers: every value is an array."""


class Conv2dFields(_Strict):
    input_shape: Chw
    stride: Pair = [1, 1]
    padding: Padding = [0, 0]


class AvgPoolFields(_Strict):
    input_shape: Chw
    kernel: Pair
    stride: Pair


class MaxPoolFields(_Strict):
    input_shape: Chw
    kernel: Pair
    stride: Pair
    padding: Padding = [0, 0]
    dilation: Pair = [1, 1]
    ceil_mode: StrictBool = False


class _RuleFields(_Strict):
    """The neuron rules both LM-H nodes store: the same choices, float or integer values."""

    reset: Reset = "subtract"
    threshold_test: ThresholdTest = ">="
    reset_timing: ResetTiming = "same-step"
    max_spikes: Annotated[StrictInt, Field(ge=1, le=MAX_SPIKES)] = 1


class LMHFields(_RuleFields):
    size: Size
    theta: Positive
    reset_value: Finite = 0.0
    v_d_init: Finite = 0.0
    v_s_init: Finite | None = None
    v_s_min: Finite | None = None


class QInputFields(_Strict):
    shape: Shape
    scale: Positive
    bits: Annotated[StrictInt, Field(ge=1, le=32)]
    signed: StrictBool = False


class QDenseFields(_Strict):
    weight_exp: Annotated[StrictInt, Field(ge=-64, le=64)]
    graded: StrictBool = False
    weight_scale: Positive = 1.0
    delay: Annotated[StrictInt, Field(ge=0, le=MAX_TIMESTEPS)] = 0
    conv_input_shape: Chw | None = None
    conv_stride: Pair = [1, 1]
    conv_padding: Padding = [0, 0]
    pool_kernel: Pair | None = None
    pool_stride: Pair = [1, 1]
    pool_padding: Padding = [0, 0]
    pool_dilation: Pair = [1, 1]
    pool_ceil_mode: StrictBool = False


class QLMHFields(_RuleFields):
    size: Size
    theta: Annotated[StrictInt, Field(ge=1, le=MAX_STORED_INT)]
    state_scale: Positive
    profile: ProfileName
    reset_value: StoredInt = 0
    v_d_init: StoredInt = 0
    v_s_init: StoredInt | None = None
    v_s_min: StoredInt | None = None


class QReadoutFields(_Strict):
    state_scale: Positive


#: The scalar fields each node kind may store (its arrays come from the npz file).
NODE_FIELDS: dict[str, type[_Strict]] = {
    "input": InputFields,
    "dense": NoFields,
    "conv2d": Conv2dFields,
    "avgpool": AvgPoolFields,
    "maxpool": MaxPoolFields,
    "lmh": LMHFields,
    "readout": NoFields,
    "q_input": QInputFields,
    "q_dense": QDenseFields,
    "q_lmh": QLMHFields,
    "q_readout": QReadoutFields,
}

#: Most nodes (layers and synapses) one graph may hold.
MAX_NODES = 4096


class NodeEntry(_Strict):
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    kind: Annotated[StrictStr, _one_of(tuple(NODE_FIELDS))]
    inputs: Annotated[list[StrictStr], Field(max_length=64)]
    fields: dict[str, Any]
    arrays: Annotated[list[StrictStr], Field(max_length=64)]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    if err["type"] == "value_error":  # our own validators say what they got
        return f"{where}: {err['ctx']['error']}"
    value = err.get("input")
    shown = repr(value)
    if len(shown) > 60:
        shown = type(value).__name__
    return f"{where}: {err['msg'].lower()} (got {shown})" if where else err["msg"]


def check_meta(meta: Any, where: str) -> GraphMeta:
    """``meta`` against :class:`GraphMeta`, or an :class:`IRError` naming ``where`` and the field."""
    if not isinstance(meta, dict):
        raise IRError(f"{where}: meta must be an object, got {type(meta).__name__}")
    try:
        return GraphMeta.model_validate(meta)
    except ValidationError as exc:
        raise IRError(f"{where}: meta.{_first_error(exc)}") from None


def check_node_entry(entry: Any, index: int, where: str) -> None:
    """One node's JSON entry: its keys, kind and scalar fields against the kind's schema."""
    name = entry.get("name", f"#{index}") if isinstance(entry, dict) else f"#{index}"
    try:
        node = NodeEntry.model_validate(entry)
        NODE_FIELDS[node.kind].model_validate(node.fields)
    except ValidationError as exc:
        raise IRError(f"{where}: node {name!r}: {_first_error(exc)}") from None


def check_graph_document(doc: dict[str, Any], where: str) -> None:
    """The meta and every node entry of an IR file (before its arrays are read)."""
    check_meta(doc.get("meta"), where)
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or not 1 <= len(nodes) <= MAX_NODES:
        raise IRError(f"{where}: 'nodes' must be a list of 1..{MAX_NODES} nodes")
    for index, entry in enumerate(nodes):
        check_node_entry(entry, index, where)
