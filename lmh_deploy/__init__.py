"""lmh-deploy: compile LM-H spiking networks from PyTorch to Lava and Loihi 2.

The pipeline (docs/architecture.md)::

    frontends (PyTorch, NIR) -> ir -> passes (quantise, Loihi 2 map) -> backends (Lava | sim)
    -> reports; pipeline/ runs the stages, api.py is the Python API, cli.py the command line

The API is importable from here (``lmh_deploy.compile(...)``, ``.run``, ``.verify``,
``.train``, ``.export``, ``.report``); it loads lazily, so ``import lmh_deploy`` stays light.
"""

from typing import Any

from lmh_deploy import _lava_compat

_lava_compat.install()

__version__ = "0.1.0"
_API = ("compare", "compile", "export", "load", "report", "run", "train", "verify")


def __getattr__(name: str) -> Any:
    if name in _API:
        from lmh_deploy import api

        return getattr(api, name)
    raise AttributeError(f"module 'lmh_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
