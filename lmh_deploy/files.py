"""Atomic file and folder writes: readers see the old content or the new, never half of it.

A write goes to a fresh temporary sibling (same folder, so the final rename stays on one
file system) and replaces the target only once it is complete; on any error the temporary
vanishes and the target is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_write(path: str | Path, *, text: bool = False) -> Iterator[IO[Any]]:
    """Yield a fresh file to write (binary, or UTF-8 text); on success it replaces ``path``.

    Creates the parent folder. The file is created new (mode ``x``) with the usual umask
    permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        with open(tmp, "x", encoding="utf-8") if text else open(tmp, "xb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path, text=True) as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(data, indent=1))


@contextmanager
def atomic_directory(
    target: str | Path, *, overwrite: bool = True, exists_error: type[Exception] = FileExistsError
) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target``, else vanishes.

    With ``overwrite=False`` an existing ``target`` raises ``exists_error``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        if target.exists():
            if not overwrite:
                raise exists_error(f"{target}: exists already")
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
