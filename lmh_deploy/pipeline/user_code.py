"""Running the user's own model code: their exceptions are their bugs, reported as such.

``compile --model FILE.py:FACTORY`` imports FILE.py, calls FACTORY and later (``verify``)
runs the module's ``forward``. An exception raised there is neither bad input we could
judge nor a bug in lmh-deploy: it becomes one :class:`~lmh_deploy.errors.UserCodeError`
line naming the user's file, line and exception (``lmh-deploy --debug`` keeps the
traceback). An exception raised in our code or torch's, with no frame of the user's file,
stays what it is.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import lmh_deploy
from lmh_deploy.errors import UserCodeError, UserError


def defining_file(obj: Any) -> Path | None:
    """The file of a function, or of a class's ``__init__`` (a FACTORY may be either)."""
    code = getattr(obj, "__code__", None) or getattr(getattr(obj, "__init__", None), "__code__", None)
    return Path(code.co_filename) if code is not None else None


def model_files(module: object) -> list[Path]:
    """The files defining the classes of ``module`` and its submodules, except torch's and
    ours: where the user's model code lives."""
    ours = [Path(p).resolve().parent for p in (torch.__file__, lmh_deploy.__file__)]
    files = set()
    for m in module.modules() if hasattr(module, "modules") else [module]:
        try:
            found = inspect.getsourcefile(type(m))
        except TypeError:  # built-in classes
            continue
        if found and not any(Path(found).resolve().is_relative_to(d) for d in ours):
            files.add(Path(found).resolve())
    return sorted(files)


@contextmanager
def users_code(action: str, files: Sequence[Path | None], *, always: bool = False) -> Iterator[None]:
    """Turn an exception raised in ``files`` (the user's model code) into one line.

    ``always``: the whole block is the user's code (importing their file, calling their
    factory), so any exception is theirs even without a frame in ``files`` (a SyntaxError,
    a wrong keyword argument).
    """
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        mine = {f.resolve() for f in files if f is not None}
        frames = [fr for fr in traceback.extract_tb(exc.__traceback__) if Path(fr.filename).resolve() in mine]
        if frames:
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}: "
        elif isinstance(exc, SyntaxError) and exc.filename:
            where = f"{Path(exc.filename).name}:{exc.lineno}: "
        elif always:
            where = ""
        else:
            raise
        raise UserCodeError(
            f"{action}: {where}{type(exc).__name__}: {exc} (raised by your model "
            "code; `lmh-deploy --debug ...` shows the traceback)"
        ) from exc
