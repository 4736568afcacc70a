"""The project's error types: what a user did wrong versus what lmh-deploy did wrong.

Only a :class:`UserError` is raised where an input (a file, an option, a model, the
environment the user asked for) is judged; the CLI prints it as ONE line and exits 2.
Anything else escaping a command is a bug in lmh-deploy: the CLI shows the traceback and
asks for a report (exit 1). :class:`CommandFailed` is neither: a check the user asked for
(``verify``) ran and failed, or hardware is absent (exit 1, one line).

The subclasses also derive from the builtin type their callers would expect
(``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path


class UserError(Exception):
    """An input lmh-deploy cannot accept; the message names the file, layer or value."""


class InputError(UserError, ValueError):
    """An option or argument value that is out of range or malformed."""


class DataError(UserError, ValueError):
    """A dataset file or folder whose content is malformed."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a dataset needs) does not exist."""


class OutputError(UserError, ValueError):
    """An output path lmh-deploy will not write: writing it would destroy data the user
    (or another command) owns, or the place cannot hold it."""


class UnavailableError(UserError, RuntimeError):
    """Something the user asked for is not available here (a CUDA device, lava-loihi)."""


class UserCodeError(UserError):
    """An exception raised inside the user's own code (the ``--model FILE.py`` they wrote):
    their bug, not ours; the message names their file, line and the exception."""


class InteropError(UserError, ValueError):
    """A graph that cannot be converted faithfully to or from an exchange format (NIR, netx);
    the message names the layer and the cause."""


class CommandFailed(Exception):
    """The command could not do what was asked, and no input is to blame: a check the user
    asked for ran and failed (Lava and sim/ disagree), or hardware is absent (Loihi 2)."""


def require_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` as a Path if it is an existing file, else :class:`MissingFileError`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a {what}")
    if not path.is_file():
        raise MissingFileError(f"{path}: no such {what}")
    return path


def require_dir(path: str | os.PathLike[str], what: str = "directory") -> Path:
    """``path`` as a Path if it is an existing directory, else :class:`MissingFileError`."""
    path = Path(path)
    if not path.is_dir():
        raise MissingFileError(f"{path}: no such {what}")
    return path
