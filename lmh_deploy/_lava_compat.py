"""Make lava-nc 0.10 / lava-dl 0.6 work on Python 3.11-3.13 and numpy 2.

Why, one rewrite per incompatibility:

* ``lava/magma/compiler/var_model.py`` declares dataclass fields whose default
  is a mutable dataclass *instance* (``x: ByteEncoder = ByteEncoder()``).
  Python >= 3.11 rejects that with ``ValueError: mutable default``, and 78 of
  Lava's 139 modules fail to import through it.
* ``lava/magma/core/process/ports/ports.py`` reshapes virtual ports with
  ``ft.partial(np.reshape, newshape=...)`` (twice). numpy 2.4 removed the
  ``newshape`` keyword: the call raises ``TypeError`` inside a Lava worker.
  The rewrite calls a module-level helper appended to the file, which passes
  the shape positionally (right on numpy 1 and 2, and picklable).
* ``lava/proc/conv/models.py`` hands its geometry Vars, numpy int8 (``kernel_size``,
  ``stride``, ``padding``, ``dilation``, ``groups``), to ``utils.conv``, which computes with
  them and the input's Python-int shape. numpy 2 (NEP 50) keeps such sums in int8: 128 or
  more input channels raise ``OverflowError: Python integer 128 out of bounds for int8``
  inside a Lava worker (``input_.shape[-1] % groups``), and spatial sizes near 128 would wrap.
  The rewrite hands them over as Python ints (``.tolist()``, ``int(...)``), which is what
  numpy 1's value-based casting computed; the same line count.
* ``lava.lib.dl.slayer`` imports its ``object_detection`` submodule eagerly,
  which needs torchvision and OpenCV; lmh-deploy never uses it.

Instead of patching site-packages (undone by any reinstall), we install a
``sys.meta_path`` finder that rewrites each of those modules' source while it is
loaded, and fails loudly if the expected text is not there (so a changed Lava
release is noticed, not silently mis-patched). Lava forks its workers, so the
hook is inherited by them. Call :func:`install` before importing lava;
``import lmh_deploy`` does it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import types
from collections.abc import Sequence
from lmh_deploy.errors import UserError

VAR_MODEL = "lava.magma.compiler.var_model"
PORTS = "lava.magma.core.process.ports.ports"
OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"
#: ``name: ByteEncoder = ByteEncoder()`` -> ``field(default_factory=...)``.
_MUTABLE_DEFAULT = re.compile(r"^([ \t]+\w+: ByteEncoder) = ByteEncoder\(\)[ \t]*$", re.M)
_DATACLASS_IMPORT = re.compile(r"^(from dataclasses import [\w, ]+)$", re.M)
#: Number of such fields in lava-nc 0.10.0 (CoreEncoder 3, ChipEncoder 3, AxonEncoder 2).
EXPECTED_REWRITES = 8


class LavaCompatError(UserError, ImportError):
    """The installed Lava does not look like the release this fix was written for."""


def _rewrite(
    source: str, pattern: re.Pattern[str], replacement: str, expected: int, fix: str, what: str
) -> str:
    """``source`` with every match of ``pattern`` replaced; exactly ``expected`` of them, or
    the installed Lava is not the release the fix was written for."""
    patched, count = pattern.subn(replacement, source)
    if count != expected:
        raise LavaCompatError(
            f"lmh-deploy's {fix} expected {expected} {what} but found {count}; "
            "install lava-nc==0.10.0 (bash scripts/install.sh)"
        )
    return patched


def patch_var_model_source(source: str) -> str:
    """Return ``var_model.py`` source with mutable dataclass defaults replaced."""
    patched = _rewrite(
        source, _MUTABLE_DEFAULT, r"\1 = field(default_factory=ByteEncoder)", EXPECTED_REWRITES,
        f"Python 3.11 fix for {VAR_MODEL}", "'ByteEncoder()' defaults",
    )  # fmt: skip
    # Import ``field`` on the existing dataclasses import line, so that a
    # leading ``from __future__`` import stays first in the file.
    patched, imports = _DATACLASS_IMPORT.subn(r"\1, field", patched, count=1)
    if imports != 1:
        raise LavaCompatError(f"{VAR_MODEL}: no 'from dataclasses import ...' line to extend")
    return patched


#: ``ft.partial(np.reshape, newshape=X)`` -> ``ft.partial(_lmh_reshape, X)``.
_RESHAPE_NEWSHAPE = re.compile(r"ft\.partial\(np\.reshape, newshape=(self\.\w+)\)")
#: ReshapePort.get_transform_func_fwd and _bwd in lava-nc 0.10.0.
EXPECTED_RESHAPES = 2
_RESHAPE_HELPER = """

def _lmh_reshape(shape, data):  # added by lmh_deploy._lava_compat (numpy 2: no newshape=)
    return np.reshape(data, shape)
"""


def patch_ports_source(source: str) -> str:
    """Return ``ports.py`` source whose reshape transforms work on numpy 1 and 2.

    The helper is appended at the end, so every line keeps its number (tracebacks
    inside Lava still point at the right lines of the installed file).
    """
    patched = _rewrite(
        source, _RESHAPE_NEWSHAPE, r"ft.partial(_lmh_reshape, \1)", EXPECTED_RESHAPES,
        f"numpy 2 fix for {PORTS}", "'ft.partial(np.reshape, newshape=...)' calls",
    )  # fmt: skip
    if not re.search(r"^import numpy as np$", source, re.M):
        raise LavaCompatError(f"{PORTS}: no 'import numpy as np' line; the reshape fix needs it")
    return patched.rstrip("\n") + "\n" + _RESHAPE_HELPER


CONV_MODELS = "lava.proc.conv.models"
#: ``utils.conv``'s geometry arguments in ``AbstractPyConvModel.run_spk`` (lava-nc 0.10.0).
_CONV_GEOMETRY = re.compile(
    r"^([ \t]+)self\.kernel_size, self\.stride, self\.padding, self\.dilation,\n"
    r"[ \t]+self\.groups\[0\]\n",
    re.M,
)
_CONV_GEOMETRY_INTS = (
    r"\1self.kernel_size.tolist(), self.stride.tolist(), self.padding.tolist(), "
    r"self.dilation.tolist(),\n\1int(self.groups[0])\n"
)


def patch_conv_models_source(source: str) -> str:
    """Return ``conv/models.py`` source that gives ``utils.conv`` its geometry as Python ints."""
    return _rewrite(
        source, _CONV_GEOMETRY, _CONV_GEOMETRY_INTS, 1,
        f"numpy 2 fix for {CONV_MODELS}", "'utils.conv(...)' geometry arguments",
    )  # fmt: skip


#: Module name -> the function that rewrites its source.
SOURCE_PATCHES = {
    VAR_MODEL: patch_var_model_source,
    PORTS: patch_ports_source,
    CONV_MODELS: patch_conv_models_source,
}


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    """Loads one module from its file with its entry of :data:`SOURCE_PATCHES` applied."""

    def get_data(self, path: str) -> bytes:
        data = super().get_data(path)
        if path.endswith(".py"):
            return SOURCE_PATCHES[self.name](data.decode("utf-8")).encode("utf-8")
        return data

    def get_code(self, fullname: str) -> types.CodeType:  # bypass stale .pyc of the unpatched file
        source = self.get_data(self.get_filename(fullname))
        return compile(source, self.get_filename(fullname), "exec", dont_inherit=True)


class _EmptyModuleLoader(importlib.abc.Loader):
    """Provides an empty stand-in module (slayer's unused object_detection)."""

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        module.__doc__ = "Stand-in by lmh-deploy: needs torchvision/OpenCV, unused here."


class LavaCompatFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder applying the fixes above, and nothing else."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target=None):
        if fullname == OBJECT_DETECTION:
            return importlib.util.spec_from_loader(fullname, _EmptyModuleLoader())
        if fullname not in SOURCE_PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        loader = _PatchedSourceLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def needs_fix() -> bool:
    """True on every Python lmh-deploy supports (3.11-3.13): stock lava-nc 0.10 cannot import there."""
    return sys.version_info >= (3, 11)


def install() -> bool:
    """Install the finder once (idempotent). Returns True if it is active."""
    if not needs_fix():
        return False
    if any(isinstance(f, LavaCompatFinder) for f in sys.meta_path):
        return True
    for module in SOURCE_PATCHES:
        if module in sys.modules:
            raise LavaCompatError(f"{module} was imported before lmh_deploy; import lmh_deploy before lava")
    sys.meta_path.insert(0, LavaCompatFinder())
    return True
