"""Make lava-nc 0.10 / lava-dl 0.6 importable on Python >= 3.11.

Why: ``lava/magma/compiler/var_model.py`` declares dataclass fields whose
default is a mutable dataclass *instance* (``x: ByteEncoder = ByteEncoder()``).
Python 3.11 rejects that with ``ValueError: mutable default``, and 78 of
Lava's 139 modules fail to import through it. ``lava.lib.dl.slayer`` also
imports its ``object_detection`` submodule eagerly, which needs torchvision
and OpenCV; lmh-deploy never uses it.

Instead of patching site-packages (undone by any reinstall), we install a
``sys.meta_path`` finder that rewrites that one module's source while it is
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
OBJECT_DETECTION = "lava.lib.dl.slayer.object_detection"
#: ``name: ByteEncoder = ByteEncoder()`` -> ``field(default_factory=...)``.
_MUTABLE_DEFAULT = re.compile(r"^([ \t]+\w+: ByteEncoder) = ByteEncoder\(\)[ \t]*$", re.M)
_DATACLASS_IMPORT = re.compile(r"^(from dataclasses import [\w, ]+)$", re.M)
#: Number of such fields in lava-nc 0.10.0 (CoreEncoder 3, ChipEncoder 3, AxonEncoder 2).
EXPECTED_REWRITES = 8


class LavaCompatError(UserError, ImportError):
    """The installed Lava does not look like the release this fix was written for."""


def patch_var_model_source(source: str) -> str:
    """Return ``var_model.py`` source with mutable dataclass defaults replaced."""
    patched, count = _MUTABLE_DEFAULT.subn(r"\1 = field(default_factory=ByteEncoder)", source)
    if count != EXPECTED_REWRITES:
        raise LavaCompatError(
            f"lmh-deploy's Python 3.11 fix for {VAR_MODEL} expected {EXPECTED_REWRITES} "
            f"'ByteEncoder()' defaults but found {count}; install lava-nc==0.10.0 "
            "(bash scripts/install.sh)"
        )
    # Import ``field`` on the existing dataclasses import line, so that a
    # leading ``from __future__`` import stays first in the file.
    patched, imports = _DATACLASS_IMPORT.subn(r"\1, field", patched, count=1)
    if imports != 1:
        raise LavaCompatError(f"{VAR_MODEL}: no 'from dataclasses import ...' line to extend")
    return patched


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    """Loads one module from its file with :func:`patch_var_model_source` applied."""

    def get_data(self, path: str) -> bytes:
        data = super().get_data(path)
        if path.endswith(".py"):
            return patch_var_model_source(data.decode("utf-8")).encode("utf-8")
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
    """Meta-path finder applying the two fixes above, and nothing else."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target=None):
        if fullname == OBJECT_DETECTION:
            return importlib.util.spec_from_loader(fullname, _EmptyModuleLoader())
        if fullname != VAR_MODEL:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None:
            return None
        loader = _PatchedSourceLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def needs_fix() -> bool:
    """True on the Python versions where stock lava-nc 0.10 cannot import."""
    return sys.version_info >= (3, 11)


def install() -> bool:
    """Install the finder once (idempotent). Returns True if it is active."""
    if not needs_fix():
        return False
    if any(isinstance(f, LavaCompatFinder) for f in sys.meta_path):
        return True
    if VAR_MODEL in sys.modules:
        raise LavaCompatError(f"{VAR_MODEL} was imported before lmh_deploy; import lmh_deploy before lava")
    sys.meta_path.insert(0, LavaCompatFinder())
    return True
