"""A compiled network as a Python object: ``lmh_deploy.compile(net, ...)`` returns one.

    dep = lmh_deploy.compile(net, example_input=x[:1], timesteps=4, calibration=x[:64])
    v = dep.verify(x[:64], lava_samples=2)        # VerifyResult: v.ok, v.agreement, ...
    r = dep.run(x, labels=y)                      # RunResult: r.accuracy, r.spikes, r.energy
    dep.save("build"); dep2 = lmh_deploy.load("build")
    dep.export("nir", "net.nir"); proc = dep.lava_process()

Nothing is written until :meth:`Deployment.save` or :meth:`Deployment.export`; nothing is
printed unless ``progress=True``. Inputs are torch tensors, numpy arrays, ``.npy`` paths or
a ``DataLoader`` (batches of ``x`` or ``(x, y)``), static ``(N, *shape)`` or time-varying
frames ``(T, N, *shape)``; they pass the same checks as ``--inputs`` on the command line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmh_deploy.choices import Backend, ExportFormat, choice
from lmh_deploy.errors import InputError
from lmh_deploy.files import check_output
from lmh_deploy.pipeline.artifact import ArtifactError
from lmh_deploy.pipeline.compile import Artifact
from lmh_deploy.pipeline.results import RunResult, VerifyResult


def as_arrays(data: Any, labels: Any = None, what: str = "inputs") -> tuple[np.ndarray, np.ndarray | None]:
    """``data`` (tensor, array, .npy path or DataLoader) and ``labels`` as numpy arrays.

    A DataLoader's batches are ``x`` or ``(x, y, ...)`` with samples first; they are
    concatenated (``labels`` then come from the loader)."""
    from lmh_deploy.pipeline.inputs import read_npy

    def array(value: Any, name: str) -> np.ndarray:
        if isinstance(value, (str, Path)):
            return np.asarray(read_npy(value, name))
        if hasattr(value, "detach"):  # a torch tensor
            return value.detach().cpu().numpy()
        return np.asarray(value)

    if (
        hasattr(data, "__iter__")
        and not isinstance(data, (np.ndarray, str, Path))
        and not hasattr(data, "detach")
    ):
        xs, ys = [], []
        for batch in data:
            if isinstance(batch, (tuple, list)):
                xs.append(array(batch[0], what))
                if len(batch) > 1:
                    ys.append(array(batch[1], "labels"))
            else:
                xs.append(array(batch, what))
        if not xs:
            raise InputError(f"{what}: the loader yields no batches")
        if labels is None and ys:
            labels = np.concatenate(ys)
        return np.concatenate(xs), None if labels is None else array(labels, "labels")
    return array(data, what), None if labels is None else array(labels, "labels")


@contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``: a tqdm.auto bar in a notebook (when tqdm is installed), a rich
    bar on a terminal, nothing when not ``enabled``."""
    if not enabled:
        yield lambda n: None
        return
    if "ipykernel" in sys.modules:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            with tqdm(total=total, desc=description) as bar:
                yield bar.update
            return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@dataclass(frozen=True)
class CompileSummary:
    """The compile table: ``rows`` (one dict per layer) and ``text``."""

    rows: list[dict[str, str]]
    text: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def compile_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per layer of a compile report: layer, kind, exp/theta, max quantisation
    error, state headroom (the table ``lmh-deploy compile`` prints)."""
    calib = report.get("calibration", {}).get("layers", {})
    rows = []
    for layer in report["layers"]:
        if layer["kind"] == "dense":  # a synapse path: say which kind of layer it is
            rows.append(
                {
                    "layer": layer["name"],
                    "kind": "conv" if layer.get("conv") else "dense",
                    "exp / theta": str(layer["weight_exp"]),
                    "max quant. error": f"{layer['max_weight_error_rel']:.2%} of max|W|",
                    "state headroom (bits)": "",
                }
            )
        else:
            head = calib.get(layer["name"], {}).get("headroom_bits")
            rows.append(
                {
                    "layer": layer["name"],
                    "kind": "lmh",
                    "exp / theta": str(layer["theta"]),
                    "max quant. error": f"{layer['max_factor_error']:.1e} (factors)",
                    "state headroom (bits)": f"{head:.1f}" if head is not None else "",
                }
            )
    return rows


class Deployment:
    """A compiled network in memory: its float and integer graphs, the compile report and
    (when it came from one) the source model that ``verify`` compares against."""

    def __init__(self, artifact: Artifact, source: Any = None, files: dict[str, Path] | None = None) -> None:
        self.artifact = artifact
        self.source = source  # an nn.Module, a NIR graph, or None (verify then runs the float IR)
        self._files = dict(files or {})  # artifact name -> file copied in on save

    def __repr__(self) -> str:
        a = self.artifact
        return (
            f"Deployment({len(a.quant_graph.order())} nodes, input {a.input_shape}, T = {a.timesteps}, "
            f"profile {a.manifest.get('profile')}, target {a.manifest.get('target')})"
        )

    @property
    def timesteps(self) -> int:
        return self.artifact.timesteps

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.artifact.input_shape

    @property
    def report(self) -> dict[str, Any]:
        """The compile report (``compile_report.json``)."""
        return self.artifact.report

    def summary(self) -> CompileSummary:
        """The compile table, as rows and as text."""
        rows = compile_rows(self.artifact.report)
        cols = list(rows[0]) if rows else []
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
        lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
        lines += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
        return CompileSummary(rows, "\n".join(line.rstrip() for line in lines))

    @property
    def resources(self) -> dict[str, Any]:
        """The Loihi 2 mapping: cores, chips, per-layer placement."""
        if self.artifact.resources is None:
            from lmh_deploy.passes.loihi2_map import map_to_loihi2

            self.artifact.resources = map_to_loihi2(self.artifact.quant_graph)
        return self.artifact.resources

    def _inputs(self, inputs: Any, labels: Any, samples: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        from lmh_deploy.pipeline.inputs import accept_inputs, check_inputs, frames_for

        x, y = as_arrays(inputs, labels)
        art = self.artifact
        x, y = accept_inputs(
            x,
            y,
            input_shape=art.input_shape,
            num_classes=art.num_classes,
            sample_shape=art.sample_shape,
            samples=samples,
        )
        x = frames_for(x, art.timesteps, art.input_shape)
        check_inputs(x, art.input_shape, art.timesteps, spikes=art.spike_input)
        return x, y

    def run(
        self,
        inputs: Any,
        labels: Any = None,
        *,
        backend: Backend | str = "sim",
        record: tuple[str, ...] = ("spikes",),
        samples: int | None = None,
        batch_size: int | None = None,
        progress: bool = False,
        lava_conv: str = "auto",
    ) -> RunResult:
        """Run ``inputs`` on ``backend`` (``sim``: our bit-exact simulator; ``lava``: Lava's
        CPU fixed_pt models). ``record=()`` keeps spike counts only (sim, memory independent
        of T); ``("spikes",)`` also the (T, N, neurons) rasters. ``lava_conv``: which
        convolutions Lava runs on its own Conv (``auto``, ``always``, ``never``: the CLI's
        ``--lava-conv``)."""
        from lmh_deploy.options import LAVA_CONV
        from lmh_deploy.pipeline.inputs import num_samples, quantize
        from lmh_deploy.pipeline.run import execute

        backend = choice(Backend, backend, "backend")
        lava_conv = LAVA_CONV.check(lava_conv)
        if backend == Backend.LOIHI2:
            from lmh_deploy.pipeline.run import refuse_loihi2

            refuse_loihi2()
        unknown = set(record) - {"spikes"}
        if unknown:
            raise InputError(
                f"record: unknown {sorted(unknown)}; supported: 'spikes' (or () for counts only)"
            )
        if not record and backend != Backend.SIM:
            raise InputError("record=(): only the sim backend streams (Lava records every step)")
        x, y = self._inputs(inputs, labels, samples)
        q = self.artifact.quant_graph
        n = num_samples(x, self.input_shape)
        with progress_bar(n, f"{backend} run", progress) as advance:
            return execute(
                q,
                quantize(q, x),
                y,
                self.timesteps,
                backend.value,
                batch_size=batch_size,
                record_spikes=bool(record),
                on_batch=advance if progress else None,
                lava_conv=lava_conv,
            )

    def verify(
        self,
        inputs: Any,
        labels: Any = None,
        *,
        lava_samples: int | None = None,
        samples: int | None = None,
        batch_size: int | None = None,
        max_accuracy_drop: float | None = None,
        progress: bool = False,
        lava_conv: str = "auto",
    ) -> VerifyResult:
        """The source model vs the deployed fixed point (sim/) on every sample, Lava vs sim/
        on the first ``lava_samples`` (default: as many as fit 12M neuron-steps; 0: none).
        ``labels`` are optional (agreement needs none). ``lava_conv``: as :meth:`run`."""
        from lmh_deploy.options import LAVA_CONV, LAVA_SAMPLES
        from lmh_deploy.pipeline.verify import verify_artifact

        lava_samples = LAVA_SAMPLES.check(lava_samples)
        lava_conv = LAVA_CONV.check(lava_conv)
        x, y = as_arrays(inputs, labels)
        with progress_bar(1, "verify (source, sim, Lava)", progress) as advance:
            result = verify_artifact(
                self.artifact,
                samples,
                inputs=x,
                labels=y,
                lava_samples=lava_samples,
                source=self.source,
                batch_size=batch_size,
                max_accuracy_drop=max_accuracy_drop,
                lava_conv=lava_conv,
            )
            advance(1)
        return VerifyResult.from_dict(result)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the artifact folder (what ``lmh-deploy compile`` writes) atomically. An
        existing ``path`` is refused, unless ``overwrite`` and it is an lmh-deploy artifact
        (a folder this tool wrote); nothing else is ever replaced (nor written inside an
        artifact, nor over a source file: :func:`lmh_deploy.files.check_output`)."""
        from lmh_deploy.pipeline.artifact import check_artifact
        from lmh_deploy.pipeline.compile import save_artifact

        path = check_output(path, "path", kind="artifact", inputs=self._files.values())
        if path.exists():
            if not overwrite:
                raise ArtifactError(f"{path}: exists already; save elsewhere or pass overwrite=True")
            check_artifact(path)  # replaces only an artifact folder, never anything else
        if not self._files and hasattr(self.source, "state_dict"):  # a live module: keep its weights
            from lmh_deploy.pipeline.compile_torch import save_module_artifact

            save_module_artifact(self.artifact, self.source, path)
        else:  # the checkpoint or NIR file it was compiled from is copied in
            save_artifact(self.artifact, path, self._files)
        return path

    def export(self, format: ExportFormat | str, path: str | Path, *, dt: float = 1e-4) -> dict[str, Any]:
        """Write the network as ``nir`` (the float graph, for other tools, with Euler step
        ``dt``: LIF-compatible nets exactly; a general LM-H layer as its nearest LIF, its
        exact factors in metadata, with the measured difference in the report's ``error``)
        or ``netx`` (lava-dl HDF5 of the integer graph, profile loihi-lif). Returns the
        exporter's report."""
        format = choice(ExportFormat, format, "format")
        check_output(path, "path", inputs=self._files.values())
        if format == ExportFormat.NETX:
            from lmh_deploy.interop.netx_artifact import artifact_to_netx

            return dict(artifact_to_netx(self.artifact.quant_graph, Path(path)))
        from lmh_deploy.interop.nir_export import write_nir

        return dict(write_nir(self.artifact.float_graph, Path(path), dt=dt))

    def lava_process(self, precision: str = "fixed_pt", samples: int = 0, lava_conv: str = "auto") -> Any:
        """The network as a Lava hierarchical Process
        (:class:`~lmh_deploy.backends.lava.network.LMHNetwork`) with ``inp``/``out`` ports
        for your own Lava program; see :func:`lmh_deploy.pipeline.lava_block.lava_network`.
        ``lava_conv`` (``fixed_pt``): which convolutions run on Lava's own Conv (``auto``,
        ``always``, ``never``); ``floating_pt`` keeps every convolution on Sparse."""
        from lmh_deploy.pipeline.lava_block import lava_process

        return lava_process(self.artifact, precision=precision, samples=samples, lava_conv=lava_conv)


def load(path: str | Path) -> Deployment:
    """A saved artifact folder as a :class:`Deployment` (checksums verified). Its source
    model comes back when the folder has one (a checkpoint, ``--model FILE.py:FACTORY``, a
    NIR file); a live module compiled without a file leaves its weights only, and ``verify``
    then compares against the float IR."""
    from lmh_deploy.pipeline.compile import load_artifact
    from lmh_deploy.pipeline.compile_torch import load_source_module

    art = load_artifact(path)
    source = load_source_module(art)
    return Deployment(art, source if source is not None else art.load_model())
