"""sim/'s numba kernel cache follows every sim/ source (sim/kernel_cache.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from lmh_deploy.sim import chain, kernel_cache

CALLER = """
import numba
from pkg.b import g

@numba.njit(cache=True)
def f():
    return g()
"""
CALLEE = """
import numba

@numba.njit(cache=True)
def g():
    return {value}
"""
RUN = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from pkg.a import f
if {refresh}:
    from lmh_deploy.sim.kernel_cache import drop_stale_kernels, sources_digest
    pkg = Path({root!r}) / "pkg"
    drop_stale_kernels(Path(f._cache._cache_path), sources_digest(pkg), {{"a", "b"}})
print(f())
"""


def _call(root: Path, refresh: bool) -> str:
    code = textwrap.dedent(RUN.format(root=str(root), refresh=refresh))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_an_edit_to_an_inlined_kernel_reaches_its_cached_caller(tmp_path: Path) -> None:
    """numba checks only the caller's own file: after an edit to the callee's file alone, the
    cached caller still returns the old value; with the digest over both files it is rebuilt."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(CALLER)
    (pkg / "b.py").write_text(CALLEE.format(value=1))
    assert _call(tmp_path, refresh=True) == "1"  # compiles, caches, stamps
    (pkg / "b.py").write_text(CALLEE.format(value=2))
    assert _call(tmp_path, refresh=False) == "1"  # numba alone: stale
    assert _call(tmp_path, refresh=True) == "2"
    assert _call(tmp_path, refresh=True) == "2"  # stamp up to date: the new cache is kept


def test_drop_removes_only_the_listed_modules_kernels(tmp_path: Path) -> None:
    names = ["chain._run-122.py311.nbi", "chain._run-122.py311.1.nbc", "gather.g-60.py311.nbi",
             "other.k-1.py311.nbi", "chain.cpython-311.pyc"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_text("x")
    assert kernel_cache.drop_stale_kernels(tmp_path, "d1", {"chain", "gather"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chain.cpython-311.pyc", "other.k-1.py311.nbi", kernel_cache.STAMP_NAME
    ]  # fmt: skip
    (tmp_path / "chain._run-122.py311.nbi").write_text("new")
    assert not kernel_cache.drop_stale_kernels(tmp_path, "d1", {"chain"})
    assert (tmp_path / "chain._run-122.py311.nbi").exists()
    assert kernel_cache.drop_stale_kernels(tmp_path, "d2", {"chain"})
    assert not (tmp_path / "chain._run-122.py311.nbi").exists()


def test_digest_covers_every_sim_source(tmp_path: Path) -> None:
    for path in kernel_cache.SIM_DIR.glob("*.py"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    before = kernel_cache.sources_digest(tmp_path)
    assert before == kernel_cache.sources_digest()
    gather = tmp_path / "gather.py"
    gather.write_bytes(gather.read_bytes() + b"\n")
    assert kernel_cache.sources_digest(tmp_path) != before


def test_import_stamped_the_real_cache() -> None:
    stamp = Path(chain._run._cache._cache_path) / kernel_cache.STAMP_NAME
    assert stamp.read_text() == kernel_cache.sources_digest()
    assert not kernel_cache.refresh(chain._run)
