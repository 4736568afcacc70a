"""The compiled artifact directory: written atomically, checked by a manifest of checksums."""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from lmh_deploy import files
from lmh_deploy.errors import UserError

MANIFEST = "manifest.json"
ARTIFACT_FORMAT = "lmh-deploy/artifact"
ARTIFACT_VERSION = 1


class ArtifactError(UserError, ValueError):
    """A missing, incomplete or modified artifact directory."""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_directory(target: str | Path, *, overwrite: bool = True) -> AbstractContextManager[Path]:
    """:func:`lmh_deploy.files.atomic_directory`; an existing ``target`` without ``overwrite``
    raises :class:`ArtifactError`."""
    return files.atomic_directory(target, overwrite=overwrite, exists_error=ArtifactError)


def write_manifest(directory: Path, meta: dict[str, Any]) -> None:
    """Record every file's checksum (call last, inside :func:`atomic_directory`)."""
    files = {p.name: sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    doc = {"format": ARTIFACT_FORMAT, "format_version": ARTIFACT_VERSION, "files": files, **meta}
    (directory / MANIFEST).write_text(json.dumps(doc, indent=1))


def check_artifact(directory: str | Path) -> dict[str, Any]:
    """Verify the manifest; return it. Raises :class:`ArtifactError` naming the bad file."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such artifact directory (run lmh-deploy compile)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: missing or unreadable manifest ({exc})") from None
    if doc.get("format") != ARTIFACT_FORMAT or doc.get("format_version") != ARTIFACT_VERSION:
        raise ArtifactError(f"{path}: not an lmh-deploy artifact of version {ARTIFACT_VERSION}")
    for name, digest in doc["files"].items():
        file = directory / name
        if not file.is_file():
            raise ArtifactError(f"{file}: listed in the manifest but missing")
        if sha256(file) != digest:
            raise ArtifactError(
                f"{file}: modified after compile (checksum differs from {MANIFEST}); recompile"
            )
    return doc
