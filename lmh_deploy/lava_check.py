"""Post-install check: Lava imports (with the fixes of lmh_deploy._lava_compat)."""

from __future__ import annotations

import sys


def main() -> None:
    """Import every Lava module lmh-deploy uses; exit non-zero naming the one that fails."""
    import lmh_deploy  # noqa: F401  - installs the import hook first

    modules = [
        "lava.magma.core.run_configs",
        "lava.proc.dense.process",
        "lava.proc.io.source",
        "lava.proc.io.sink",
        "lava.lib.dl.netx",
        "lava.lib.dl.slayer",
    ]
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # one clear line, the module and the cause
            sys.exit(f"lmh-deploy install check: cannot import {name}: {exc}")
    import lava  # noqa: F401

    print(
        f"lmh-deploy install check: Lava imports on Python {sys.version.split()[0]} ({len(modules)} modules)"
    )


if __name__ == "__main__":
    main()
