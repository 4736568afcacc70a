"""Safe outputs: what lmh-deploy may write, and atomic writes of it.

:func:`check_output` decides, before any work, whether an output path may be written: a
command never destroys what it did not create (a folder of the user's own files, an input
of the same command, a file inside an artifact). :func:`atomic_write` and
:func:`atomic_directory` then write: to a fresh temporary sibling (same folder, so the
final rename stays on one file system, named after the process so it is unique), which
replaces the target only once it is complete; on any error the temporary vanishes and the
target is untouched. A folder replaces an old one by an atomic exchange
(``renameat2(RENAME_EXCHANGE)``), so even SIGKILL at any moment leaves the old folder or
the new one in place; a temporary orphaned by SIGKILL is removed by the next write to the
same target once its process is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

from lmh_deploy.errors import OutputError

#: The file that makes a folder an lmh-deploy artifact, and the format it names.
MANIFEST = "manifest.json"
ARTIFACT_FORMAT = "lmh-deploy/artifact"

#: ``file``: one file, replaced whole (reports, checkpoints, exports). ``folder``: files are
#: written into it (plots). ``artifact``: the folder is replaced whole (``compile -o``).
OutputKind = Literal["file", "folder", "artifact"]

PathLike = str | os.PathLike[str]


def is_artifact(directory: PathLike) -> bool:
    """Whether ``directory`` is a folder whose manifest says lmh-deploy wrote it."""
    manifest = Path(directory) / MANIFEST
    try:
        if not manifest.is_file() or manifest.stat().st_size > 1 << 24:
            return False
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == ARTIFACT_FORMAT


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(path))


def _enclosing_artifact(real: Path) -> Path | None:
    """The artifact folder ``real`` lies inside (not counting ``real`` itself), if any."""
    for parent in real.parents:
        if is_artifact(parent):
            return parent
    return None


def _nearest_existing(real: Path) -> Path:
    for candidate in (real, *real.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path("/")


def _refuse_unwritable_place(option: str, path: Path, real: Path) -> None:
    """The folder that will hold ``path`` must be (or become) a writable folder."""
    anchor = _nearest_existing(real.parent)
    if not anchor.is_dir():
        raise OutputError(f"{option} {path}: {anchor} is a file, not a folder; choose another path")
    try:  # a nameless probe (O_TMPFILE where supported): nothing visible is ever created
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError as exc:
        raise OutputError(
            f"{option} {path}: cannot write into {anchor} ({exc.strerror or exc}); choose another path"
        ) from None


def _refuse_replacing_folder(option: str, path: Path, *, force: bool) -> None:
    """An existing folder may be replaced whole only when empty, an artifact, or ``force``."""
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise OutputError(
            f"{option} {path}: cannot read the folder ({exc.strerror}); choose another path"
        ) from None
    if not entries or is_artifact(path) or force:
        return
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise OutputError(
        f"{option} {path}: folder holds {len(entries)} {'entry' if len(entries) == 1 else 'entries'} "
        f"and is not an lmh-deploy artifact "
        f"({shown}); lmh-deploy replaces the whole folder: choose another path, or pass --force "
        f"to replace it"
    )


def check_output(
    path: PathLike,
    option: str = "output",
    *,
    kind: OutputKind = "file",
    inputs: Iterable[PathLike | None] = (),
    force: bool = False,
) -> Path:
    """``path`` as a Path if lmh-deploy may write it as ``kind``, else :class:`OutputError`
    (one line naming ``option``, the path and the rule).

    Every kind: not an input of the same command (nor, for folders, holding one), not inside
    an lmh-deploy artifact, in a place that is (or can become) a writable folder.
    ``file``: an existing target must be a regular file (never a folder, link or device).
    ``folder``: an existing target must be a folder that is not an artifact.
    ``artifact``: an existing target must be a folder that is empty or an artifact; with
    ``force`` any folder (never a file, nor the working folder or one above it).
    Cheap (no heavy imports): run it before any work.
    """
    path = Path(path)
    real = _real(path)
    if str(path) == "" or real == Path("/"):
        raise OutputError(f"{option} {str(path)!r}: not a place lmh-deploy writes to; name a file or folder")
    for source in [p for p in inputs if p is not None and str(p)]:
        source_real = _real(source)
        if source_real == real:
            raise OutputError(f"{option} {path}: is an input of this command; writing it would destroy it")
        if kind != "file" and real in source_real.parents:
            raise OutputError(
                f"{option} {path}: holds {source}, an input of this command; choose another path"
            )
    artifact = _enclosing_artifact(real)
    if artifact is not None:
        raise OutputError(
            f"{option} {path}: is inside the lmh-deploy artifact {artifact}, whose files are checked "
            f"against its manifest; write outputs elsewhere"
        )
    _refuse_unwritable_place(option, path, real)
    if not os.path.lexists(path):
        return path
    mode = os.lstat(path).st_mode
    if kind == "file":
        if stat.S_ISDIR(mode):
            raise OutputError(f"{option} {path}: is a folder; name a file")
        if not stat.S_ISREG(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise OutputError(f"{option} {path}: is {what}; lmh-deploy would replace it: name a regular file")
        return path
    if not stat.S_ISDIR(mode):
        what = "a symbolic link" if stat.S_ISLNK(mode) else "a file, not a folder"
        raise OutputError(
            f"{option} {path}: is {what}; lmh-deploy never replaces it (not even with --force): "
            f"choose another path"
        )
    if kind == "folder":
        if is_artifact(path):
            raise OutputError(
                f"{option} {path}: is an lmh-deploy artifact, whose files are checked against its "
                f"manifest; write outputs elsewhere"
            )
        return path
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise OutputError(f"{option} {path}: is the working folder or one above it; choose a new folder")
    _refuse_replacing_folder(option, path, force=force)
    return path


def check_outputs(
    outputs: Mapping[str, tuple[PathLike | None, OutputKind]],
    inputs: Iterable[PathLike | None] = (),
    *,
    force: bool = False,
) -> None:
    """:func:`check_output` for each ``option: (path, kind)`` of one command (``None``: not
    asked for), also refusing two options naming the same path."""
    sources = [p for p in inputs if p is not None]
    seen: dict[Path, str] = {}
    for option, (path, kind) in outputs.items():
        if path is None:
            continue
        check_output(path, option, kind=kind, inputs=sources, force=force)
        real = _real(path)
        for other_real, other in seen.items():
            if other_real == real or other_real in real.parents or real in other_real.parents:
                raise OutputError(f"{option} {path}: overlaps {other} of the same command; name another path")
        seen[real] = option


# --- atomic writes ----------------------------------------------------------------------

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphaned_temporaries(target: PathLike) -> None:
    """Remove temporaries of ``target`` left by an lmh-deploy process that no longer exists
    (killed by SIGKILL mid-write); those of live processes stay."""
    target = Path(target)
    try:
        siblings = os.listdir(target.parent)
    except OSError:
        return
    for entry in siblings:
        match = _TEMP.match(entry)
        if not match or match["name"] != target.name or _alive(int(match["pid"])):
            continue
        orphan = target.parent / entry
        if os.path.isdir(orphan) and not os.path.islink(orphan):
            shutil.rmtree(orphan, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                orphan.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path to write (for writers that take a path, e.g. h5py); on
    success it replaces ``path``, on any error it vanishes. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(path)
    tmp = _temporary_name(path)
    try:
        yield tmp
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            raise OutputError(f"{path}: the writer made a folder, not a file")
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: PathLike, *, text: bool = False) -> Iterator[IO[Any]]:
    """Yield a fresh file to write (binary, or UTF-8 text); on success it replaces ``path``.

    Creates the parent folder. The file is created new (mode ``x``) with the usual umask
    permissions.
    """
    with atomic_path(path) as tmp, open(tmp, "x", encoding="utf-8") if text else open(tmp, "xb") as fh:
        yield fh


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path, text=True) as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(data, indent=1))


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace_folder(tmp: Path, target: Path, *, force: bool) -> None:
    """Put the finished folder ``tmp`` at ``target``; afterwards ``tmp`` holds the old content
    (or nothing). Safe against a concurrent writer of the same target: both finish."""
    for _ in range(8):
        try:
            os.rename(tmp, target)  # absent or an empty folder: replaced atomically
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        # the target holds files: still ours to replace? (it may have changed since the check)
        _refuse_replacing_folder("output", target, force=force)
        try:
            if _exchange(tmp, target):
                return
        except FileNotFoundError:  # another writer moved it away meanwhile: try again
            continue
        old = _temporary_name(target)
        try:  # no atomic exchange here: two renames (a short window without the folder)
            os.rename(target, old)
        except FileNotFoundError:
            continue
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        os.rename(old, tmp)
        return
    raise OutputError(f"{target}: other processes kept replacing it while lmh-deploy wrote; nothing written")


@contextmanager
def atomic_directory(
    target: PathLike,
    *,
    overwrite: bool = True,
    force: bool = False,
    exists_error: type[Exception] = FileExistsError,
) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``target``, else vanishes.

    An existing ``target`` is replaced only when it is empty or an lmh-deploy artifact, or
    with ``force`` (check it first with :func:`check_output`, ``kind="artifact"``); with
    ``overwrite=False`` an existing ``target`` raises ``exists_error``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(target)
    tmp = _temporary_name(target)
    tmp.mkdir(mode=0o777 & ~_umask())
    try:
        yield tmp
        if os.path.lexists(target) and not overwrite:
            raise exists_error(f"{target}: exists already")
        if os.path.lexists(target) and not (os.path.isdir(target) and not os.path.islink(target)):
            raise OutputError(f"{target}: is not a folder; lmh-deploy never replaces it")
        _replace_folder(tmp, target, force=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
