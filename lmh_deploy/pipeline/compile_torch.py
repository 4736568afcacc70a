"""Compile the user's own PyTorch module (any module the fx frontend maps) into an artifact.

``--model FILE.py:FACTORY`` names trusted code, as ``python FILE.py`` would run it: FILE.py
is imported where it is, its folder first on ``sys.path`` (it may import its own clone's
modules), and FACTORY (a function or class in it) returns the module with its neurons in
place; the weights are a bare ``state_dict`` loaded with ``weights_only=True`` (never
unpickled). The artifact records FILE.py's path and SHA-256 and keeps a copy of the
weights, so ``verify`` can run the source model itself from any working directory.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from lmh_deploy.errors import InputError, MissingFileError
from lmh_deploy.frontends.neurons import find_adapter
from lmh_deploy.frontends.rockpool import load_json
from lmh_deploy.frontends.torch_fx import module_to_graph
from lmh_deploy.models.data import load_dataset
from lmh_deploy.options import AUTO
from lmh_deploy.pipeline.artifact import sha256
from lmh_deploy.ir import Graph
from lmh_deploy.pipeline.compile import (
    SOURCE_FILE,
    Artifact,
    FloatRun,
    build_artifact,
    check_model_file,
    save_artifact,
)
from lmh_deploy.pipeline.inputs import is_sequence
from lmh_deploy.pipeline.user_code import defining_file, model_files, users_code

SOURCE_WEIGHTS = "source_weights.pt"


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,8,8"`` -> (1, 8, 8); one error line otherwise."""
    try:
        shape = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise InputError(f"--input-shape {text!r}: expected sizes such as 1,8,8 or 64") from None
    if not shape or min(shape) < 1:
        raise InputError(f"--input-shape {text!r}: sizes must be >= 1")
    return shape


def parse_model_spec(spec: str) -> tuple[Path, str]:
    """``FILE.py:FACTORY`` -> (the file's absolute path, FACTORY); one line otherwise."""
    file_text, sep, name = str(spec).rpartition(":")
    if not sep or not file_text.endswith(".py") or not name.isidentifier():
        raise InputError(
            f"--model {spec!r}: expected FILE.py:FACTORY (a function or class in your model file)"
        )
    path = Path(file_text).resolve()
    if not path.is_file():
        raise MissingFileError(f"--model {spec!r}: {path} does not exist")
    return path, name


def build_from_file(path: Path, name: str, kwargs: dict[str, Any], where: str) -> nn.Module:
    """Import ``path`` where it is and call its ``name`` with ``kwargs``, as ``python FILE.py``
    would run it: its folder first on ``sys.path``, whatever the working directory, so that
    ``from utils import *`` finds the ``utils.py`` beside it."""
    with model_folder_first(path.parent):
        module = _import_file(path, f"lmh_user_model_{sha256(path)[:12]}")
        factory = getattr(module, name, None)
        if not callable(factory):
            raise InputError(f"{where}: {path.name} has no function or class {name!r}")
        return build_module(factory, kwargs, where)


@contextmanager
def model_folder_first(folder: Path) -> Iterator[None]:
    """``folder`` first on ``sys.path``; modules of the same top-level name imported from
    elsewhere (another ``utils``) leave ``sys.modules`` meanwhile and come back after."""
    local = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    shadowed = {
        name: sys.modules.pop(name)
        for name in list(sys.modules)
        if name.partition(".")[0] in local and not _lives_in(sys.modules[name], folder)
    }
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        sys.modules.update(shadowed)


def _lives_in(module: Any, folder: Path) -> bool:
    places = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])]
    return any(p is not None and Path(p).resolve().is_relative_to(folder) for p in places)


def _import_file(path: Path, module_name: str) -> Any:
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with users_code(f"importing {path.name}", [path], always=True):
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def build_module(factory: Callable[..., Any], kwargs: dict[str, Any], where: str) -> nn.Module:
    """Call the user's factory; it must return an nn.Module."""
    with users_code(where, [defining_file(factory)], always=True):
        module = factory(**kwargs)
    if not isinstance(module, nn.Module):
        raise InputError(f"{where} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """``--model-kwargs`` JSON object -> dict."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--model-kwargs: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError("--model-kwargs: expected a JSON object such as '{\"hidden\": 64}'")
    return value


def neuron_state_keys(module: nn.Module) -> set[str]:
    """state_dict keys of the neurons' run state (their adapters' ``state_buffers``)."""
    keys: set[str] = set()
    for path, m in module.named_modules():
        adapter = find_adapter(m)
        if adapter is not None:
            keys.update(f"{path}.{name}" if path else name for name in adapter.state_buffers(m))
    return keys


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a bare state_dict (weights_only=True) into ``module``; one line on any mismatch."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such weights file")
    if path.suffix == ".json":  # rockpool's net.save(path): parameters as JSON
        load_json(module, path)
        return
    from lmh_deploy.models.checkpoint import load_weights_only

    state = load_weights_only(path, fix="; save the weights with torch.save(model.state_dict(), path)")
    if isinstance(state, dict) and not all(isinstance(v, torch.Tensor) for v in state.values()):
        nested = [k for k in ("state_dict", "model", "model_state_dict") if isinstance(state.get(k), dict)]
        if not nested:
            raise InputError(
                f"{path}: a dict but not a state_dict (keys {sorted(state)[:5]}); "
                f"save it with torch.save(model.state_dict(), ...)"
            )
        state = state[nested[0]]
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    run_state = neuron_state_keys(module)  # e.g. sinabs's v_mem, sized for the last batch
    state = {k: v for k, v in state.items() if k not in run_state}
    own = module.state_dict()
    mismatched = [
        f"{key}: file {tuple(value.shape)}, model {tuple(own[key].shape)}"
        for key, value in state.items()
        if key in own
        and not isinstance(own[key], (UninitializedParameter, UninitializedBuffer))
        and tuple(value.shape) != tuple(own[key].shape)
    ]
    if mismatched:  # load_state_dict would raise a RuntimeError for these
        raise InputError(
            f"{path}: does not fit the model (shape mismatch: {'; '.join(mismatched[:3])}"
            f"{f'; {len(mismatched) - 3} more' if len(mismatched) > 3 else ''}); is --model the "
            "factory these weights were trained with?"
        )
    result = module.load_state_dict(state, strict=False)
    problems = []
    missing = [k for k in result.missing_keys if k not in run_state]
    if missing:
        problems.append(f"missing {', '.join(missing[:4])}")
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:4])}")
    if any(k.endswith(".up") for k in result.unexpected_keys):  # the paper's QCFS threshold
        problems.append(
            "its '.up' entries are QCFS thresholds of the ANN as trained: convert it with "
            "replace_QCFS_by_Lneuron(model, use_TEBN, use_SEW, T) and save that model's state_dict"
        )
    if problems:
        raise InputError(f"{path}: does not fit the model ({'; '.join(problems)})")


def calibration_inputs(path: str | Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """A .npy of (N, *input_shape) finite floats (never unpickled); negative values make the
    input signed (:func:`lmh_deploy.pipeline.inputs.fit_input_range`)."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    n = int(np.prod(input_shape))
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != n:
        raise InputError(
            f"{path}: calibration data has shape {tuple(x.shape)}, the model takes "
            f"(N, {', '.join(map(str, input_shape))})"
        )
    if not np.all(np.isfinite(x)):
        raise InputError(f"{path}: calibration data must be finite (it holds NaN or inf)")
    return x.reshape((len(x), *input_shape)).astype(np.float64)


def module_artifact(
    module: nn.Module,
    *,
    input_shape: tuple[int, ...],
    timesteps: int,
    dataset: str | None = None,
    calibration: np.ndarray | str | Path | None = None,
    calibration_samples: int = 64,
    target: str = "lava-sim",
    source: dict[str, Any] | None = None,
    profile: str | None = None,
    bias_correction: bool = True,
    input_bits: int | None = None,
    weight_bits: int | str = AUTO,
    warn: Callable[[str], None] = lambda msg: None,
) -> Artifact:
    """Trace ``module``, quantise and calibrate (dataset train split or ``calibration``
    inputs) in memory. ``source`` describes how to rebuild the module for ``verify``.
    Our own nets (:class:`~lmh_deploy.models.architectures.SpikingNet`) are exported by
    their layer list, every other module by torch.fx."""
    from lmh_deploy.models.architectures import SpikingNet

    input_shape = tuple(int(d) for d in input_shape)
    if int(timesteps) < 1:
        raise InputError(f"--timesteps must be >= 1, got {timesteps}")
    if dataset is None and calibration is None:
        raise InputError("give --dataset NAME or --calibration X.npy (inputs to measure the state ranges on)")
    ds, x, sample_shape = None, None, input_shape
    if dataset is not None:
        train, _, spec = load_dataset(dataset)
        if int(np.prod(spec.input_shape)) != int(np.prod(input_shape)):
            raise InputError(
                f"--input-shape {','.join(map(str, input_shape))} does not fit "
                f"dataset {dataset} (samples of shape {spec.input_shape})"
            )
        ds = {
            "name": spec.name,
            "input_shape": list(input_shape),
            "num_classes": spec.num_classes,
            "x_max": 1.0,
            "seed": 0,
        }
        x = train.tensors[0][:calibration_samples].numpy()
        sample_shape = tuple(x.shape[1:])
    if calibration is not None:
        if isinstance(calibration, (str, Path)):
            x = calibration_inputs(calibration, input_shape)
            sample_shape = tuple(np.load(calibration, mmap_mode="r", allow_pickle=False).shape[1:])
        else:
            sample_shape = tuple(np.shape(calibration)[1:])
            x = np.asarray(calibration, dtype=np.float64).reshape((-1, *input_shape))
        x = x[:calibration_samples]
    assert x is not None  # dataset or calibration, checked above
    x_max = 1.0 if ds else max(1.0, float(np.abs(x).max()))
    meta = {
        "dataset": ds,
        "source": source or {"format": "pytorch-module", "class": type(module).__name__},
        "sample_shape": list(sample_shape),
    }
    if isinstance(module, SpikingNet):
        from lmh_deploy.frontends.pytorch import export_model

        graph = export_model(module, input_shape=input_shape, x_max=x_max, timesteps=timesteps, meta=meta)
    else:
        graph = module_to_graph(module, input_shape=input_shape, timesteps=timesteps, x_max=x_max, meta=meta)
    return build_artifact(
        graph,
        target=target,
        calibration_x=x,
        profile=profile,
        bias_correction=bias_correction,
        input_bits=input_bits,
        weight_bits=weight_bits,
        # our own nets' float side is the float IR (their layer list is what it exports)
        run_float=None if isinstance(module, SpikingNet) else _source_run(module, graph, timesteps),
        warn=warn,
    )


def save_module_artifact(
    art: Artifact,
    module: nn.Module,
    outdir: str | Path,
    files: dict[str, Path] | None = None,
    *,
    force: bool = False,
) -> Path:
    """Save ``art`` with the module's weights (``verify`` runs the source model) and
    ``files`` (artifact name -> source path) copied in (``force``: see
    :func:`~lmh_deploy.pipeline.compile.save_artifact`)."""
    files = dict(files or {})
    with tempfile.TemporaryDirectory(prefix="lmh-weights-") as tmp:
        if SOURCE_WEIGHTS not in files:
            files[SOURCE_WEIGHTS] = Path(tmp) / SOURCE_WEIGHTS
            torch.save(module.state_dict(), files[SOURCE_WEIGHTS])
        return save_artifact(art, outdir, files, force=force)


def compile_module(
    module: nn.Module,
    outdir: str | Path,
    *,
    files: dict[str, Path] | None = None,
    force: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """:func:`module_artifact` written to ``outdir`` (:func:`save_module_artifact`); returns
    the compile report."""
    art = module_artifact(module, **options)
    save_module_artifact(art, module, outdir, files, force=force)
    return art.report


def _source_run(module: nn.Module, graph: Graph, timesteps: int) -> FloatRun:
    """The float model for the bias correction's counts: the module itself (in its own
    dtype, typically float32: several times faster than the float64 IR on convolutions)
    for static inputs; the float IR for frames, which the module's one-call-per-step
    convention does not cover."""
    from lmh_deploy.backends.float.ir import simulate_float
    from lmh_deploy.backends.float.torch_source import run_traced_source

    def run(xs: np.ndarray) -> Any:
        if is_sequence(xs, tuple(graph.node(graph.order()[0]).shape)):
            return simulate_float(graph, xs, timesteps)
        with users_code("running your model", model_files(module)):
            return run_traced_source(module, xs, timesteps, graph.meta)

    return run


def compile_model_file(
    weights: str | Path,
    model_spec: str,
    outdir: str | Path,
    *,
    model_kwargs: str | dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """The ``compile WEIGHTS --model FILE.py:FACTORY`` path: build, load, compile. The
    artifact records the model file's absolute path and SHA-256 (``verify`` imports it from
    there and refuses it once changed) and keeps a copy of it for the record."""
    path, name = parse_model_spec(model_spec)
    kwargs = model_kwargs if isinstance(model_kwargs, dict) else parse_kwargs(model_kwargs)
    module = build_from_file(path, name, kwargs, f"--model {model_spec}")
    load_weights(module, weights)
    source = {
        "format": "pytorch-module",
        "file": path.name,
        "model_file": str(path),
        "model_file_sha256": sha256(path),
        "factory": name,
        "kwargs": kwargs,
        "weights": Path(weights).name,
        "sha256": sha256(Path(weights)),
    }
    files = {SOURCE_FILE: path}
    if Path(weights).suffix != ".json":  # a rockpool JSON file: the loaded state_dict is kept
        files[SOURCE_WEIGHTS] = Path(weights)
    return compile_module(module, outdir, source=source, files=files, **options)


def load_source_module(art: Artifact) -> nn.Module | None:
    """The source module of a ``--model`` artifact, rebuilt from the model file where it was
    at compile time (refused once changed or gone) and the weights' copy; else None."""
    src = art.float_graph.meta.get("source") or {}
    if src.get("format") != "pytorch-module" or not src.get("factory"):
        return None
    path = check_model_file(art)
    assert path is not None and art.directory is not None  # a --model artifact on disk
    model = build_from_file(path, src["factory"], src.get("kwargs") or {}, f"{path}:{src['factory']}")
    load_weights(model, art.directory / SOURCE_WEIGHTS)
    return model
