"""The compiled artifact directory: written atomically, checked by a manifest of checksums."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from lmh_deploy import files
from lmh_deploy.errors import UserError, require_file
from lmh_deploy.files import ARTIFACT_FORMAT, MANIFEST

ARTIFACT_VERSION = 1
#: The files every artifact has and the loader reads (others, e.g. ``model.pt``, are optional).
REQUIRED_FILES = ("ir.json", "ir.npz", "quantized.json", "quantized.npz", "compile_report.json")
#: Largest manifest read (a real one is about 1 KB).
MAX_MANIFEST_BYTES = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(UserError, ValueError):
    """A missing, incomplete or modified artifact directory."""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_directory(
    target: str | Path, *, overwrite: bool = True, force: bool = False
) -> AbstractContextManager[Path]:
    """:func:`lmh_deploy.files.atomic_directory`; an existing ``target`` without ``overwrite``
    raises :class:`ArtifactError`."""
    return files.atomic_directory(target, overwrite=overwrite, force=force, exists_error=ArtifactError)


def write_manifest(directory: Path, meta: dict[str, Any]) -> None:
    """Record every file's checksum (call last, inside :func:`atomic_directory`)."""
    listed = {p.name: sha256(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
    doc = {"format": ARTIFACT_FORMAT, "format_version": ARTIFACT_VERSION, "files": listed, **meta}
    (directory / MANIFEST).write_text(json.dumps(doc, indent=1))


def _plain_name(name: str) -> bool:
    """A file name inside the folder itself: no path, no parent, not hidden, printable."""
    return (
        0 < len(name) <= 255
        and name not in (".", "..")
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and name.isprintable()
    )


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not os.path.lexists(path):
        raise ArtifactError(
            f"{directory}: no {MANIFEST}; not an lmh-deploy artifact (run lmh-deploy compile)"
        )
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ArtifactError(f"{path}: not a regular file (a link or special file); recompile")
    if info.st_size > MAX_MANIFEST_BYTES:
        raise ArtifactError(
            f"{path}: {info.st_size} bytes, larger than any manifest ({MAX_MANIFEST_BYTES}); recompile"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc}); recompile") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{path}: must be a JSON object, got {type(doc).__name__}; recompile")
    if doc.get("format") != ARTIFACT_FORMAT or doc.get("format_version") != ARTIFACT_VERSION:
        raise ArtifactError(f"{path}: not an lmh-deploy artifact of version {ARTIFACT_VERSION}")
    return doc


def check_artifact(directory: str | Path) -> dict[str, Any]:
    """Trust an artifact folder only when it is whole; return its manifest.

    Rules, each refused with one :class:`ArtifactError` line naming the file: the folder
    exists; ``manifest.json`` is a regular JSON object of this format; its ``files`` is an
    object of plain names (no path, ``..``, absolute or hidden name) to SHA-256 digests; it
    lists every file the loader reads (:data:`REQUIRED_FILES`); each listed file is a regular
    file inside the folder (no link, no special file) with its digest; and nothing else is
    in the folder. Cheap (hashlib and json only): it runs before anything heavy is imported.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such artifact directory (run lmh-deploy compile)")
    doc = _read_manifest(directory)
    path = directory / MANIFEST
    listed = doc.get("files")
    if not isinstance(listed, dict):
        raise ArtifactError(
            f"{path}: 'files' must be an object of file name -> sha256, "
            f"got {type(listed).__name__}; recompile"
        )
    for name, digest in listed.items():
        if not _plain_name(name) or name == MANIFEST:
            raise ArtifactError(
                f"{path}: entry {name!r} is not a plain file name inside the folder; recompile"
            )
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ArtifactError(f"{path}: entry {name!r} has no SHA-256 digest (got {digest!r}); recompile")
    for name in REQUIRED_FILES:
        if name not in listed:
            raise ArtifactError(f"{path}: does not list {name}, which every artifact has; recompile")
    present = set(os.listdir(directory)) - {MANIFEST}
    extra = sorted(present - set(listed))
    if extra:
        raise ArtifactError(
            f"{directory / extra[0]}: not listed in {MANIFEST} (added after compile); remove it or recompile"
        )
    for name, digest in listed.items():
        file = directory / name
        if name not in present:
            raise ArtifactError(f"{file}: listed in {MANIFEST} but missing; recompile")
        if not stat.S_ISREG(os.lstat(file).st_mode):
            raise ArtifactError(f"{file}: not a regular file (a link, folder or special file); recompile")
        if sha256(file) != digest:
            raise ArtifactError(
                f"{file}: modified after compile (checksum differs from {MANIFEST}); recompile"
            )
    return doc


def check_artifact_and_inputs(
    artifact: str | Path, inputs: str | Path | None = None, labels: str | Path | None = None
) -> None:
    """The artifact is whole (:func:`check_artifact`), its graphs' meta and nodes fit the
    schema, and the ``--inputs``/``--labels`` files exist: checked before torch and Lava are
    imported, so that a bad path or value is refused at once."""
    check_artifact(artifact)
    from lmh_deploy.ir.serialize import read_graph_document  # numpy, no torch: after the cheap checks

    for stem in ("ir", "quantized"):  # the meta and nodes against the schema, no arrays yet
        read_graph_document(Path(artifact) / f"{stem}.json")
    for path, option in ((inputs, "--inputs"), (labels, "--labels")):
        if path is not None:
            require_file(path, f"{option} file")
