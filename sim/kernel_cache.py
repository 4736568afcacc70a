"""numba's on-disk kernel cache, kept in step with every sim/ source file.

numba keys a cached kernel on its own file's timestamp and size only, while ``chain._run``
compiles gather's and fused's kernels into itself. An edit to gather.py alone (a ``git pull``
in an editable install) would leave a compiled ``chain._run`` that no longer matches the
sources, and sim/ would run old integer code without a word. One digest over all sim/ sources
guards the cache folder: when it changes, sim/'s cached kernels are removed before any loads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

SIM_DIR = Path(__file__).resolve().parent
STAMP_NAME = "sim-sources.sha256"  # in the kernel cache folder, beside numba's files


def sources_digest(sim_dir: Path = SIM_DIR) -> str:
    """SHA-256 over the names and bytes of every ``*.py`` in ``sim_dir``."""
    h = hashlib.sha256()
    for path in sorted(sim_dir.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def drop_stale_kernels(cache_dir: Path, digest: str, modules: set[str]) -> bool:
    """Remove the cached kernels of ``modules`` (numba's ``MODULE.*.nbi``/``.nbc`` files) from
    ``cache_dir`` unless its stamp holds ``digest``, then write the stamp; True when it removed.

    A folder that cannot be written is left as it is: numba then caches elsewhere or not at
    all, and never in a folder this cannot clean."""
    stamp = cache_dir / STAMP_NAME
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:  # no stamp yet (or unreadable): treat as changed
        pass
    if not cache_dir.is_dir():
        return False
    try:
        for path in cache_dir.iterdir():
            if path.suffix in (".nbi", ".nbc") and path.name.split(".", 1)[0] in modules:
                path.unlink(missing_ok=True)  # another process may have removed it first
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".stamp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(digest)
        os.replace(tmp, stamp)  # atomic: a concurrent reader sees the old or the new stamp
    except OSError:  # read-only: numba cannot have cached here either
        return False
    return True


def refresh(dispatcher: object) -> bool:
    """Run :func:`drop_stale_kernels` on the cache folder numba picked for ``dispatcher`` (a
    cached ``numba.njit`` function of sim/; every sim/ kernel shares that folder)."""
    cache_dir = Path(dispatcher._cache._cache_path)  # type: ignore[attr-defined]
    modules = {path.stem for path in SIM_DIR.glob("*.py")}
    return drop_stale_kernels(cache_dir, sources_digest(), modules)
