"""The tree matches docs/architecture.md: every module is listed with its layer, and no module
imports from a layer below its own in the table (a later stage). Reads the source as text (AST),
imports nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
#: source folders and the package they install as
PACKAGES = {"lmh_deploy": "lmh_deploy", "models": "lmh_deploy.models", "sim": "lmh_deploy.sim"}


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _layers() -> list[tuple[str, list[str]]]:
    """(layer, member paths) lowest first, from the layers table."""
    rows = re.findall(r"^\| (\d+) \| (\w+) \| (.+) \|$", _section("Layers"), re.M)
    return [(name, re.findall(r"`([^`]+)`", members)) for _, name, members in rows]


def _allowed_upward() -> set[tuple[str, str]]:
    return set(re.findall(r"allowed edge: `([^`]+) -> ([^`]+)`", _section("Layers")))


def _listed() -> dict[str, str]:
    """module path -> layer, from the module table."""
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \| (.+) \|$", _section("Every package and module"), re.M)
    assert all(text.strip() for _, _, text in rows), "every module needs its one line"
    return {path: layer for path, layer, _ in rows}


def _source_files() -> list[Path]:
    return sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py"))


def _doc_path(path: Path) -> str:
    """A package is listed as its folder (``sim/``), a module as its file."""
    rel = path.relative_to(ROOT).as_posix()
    return (
        rel.removesuffix("__init__.py")
        if path.name == "__init__.py" and rel != "lmh_deploy/__init__.py"
        else rel
    )


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts[1:] if p != "__init__"]
    return ".".join([PACKAGES[rel.parts[0]], *parts])


def _layer_of(path: str, layers: list[tuple[str, list[str]]]) -> tuple[int, str]:
    """The layer of the most specific member that contains ``path``."""
    best: tuple[int, int, str] | None = None
    for rank, (name, members) in enumerate(layers):
        for m in members:
            contains = path == m or (m.endswith("/") and path.startswith(m))
            if contains and (best is None or len(m) > best[0]):
                best = (len(m), rank, name)
    assert best is not None, f"{path} is in no layer of docs/architecture.md"
    return best[1], best[2]


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every absolute import, module level or not."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return found


def test_every_module_is_listed_once_with_its_layer() -> None:
    listed, layers = _listed(), _layers()
    on_disk = {_doc_path(p) for p in _source_files()}
    assert not on_disk - set(listed), f"add these to docs/architecture.md: {sorted(on_disk - set(listed))}"
    assert not set(listed) - on_disk, f"listed but absent: {sorted(set(listed) - on_disk)}"
    wrong = {
        p: (layer, _layer_of(p, layers)[1]) for p, layer in listed.items() if layer != _layer_of(p, layers)[1]
    }
    assert not wrong, f"module table's layer differs from the layers table: {wrong}"


def test_no_module_imports_from_a_later_layer() -> None:
    layers, allowed = _layers(), _allowed_upward()
    files = {_module_name(p): p for p in _source_files()}
    rank = {name: _layer_of(_doc_path(p), layers)[0] for name, p in files.items()}
    paths = {name: _doc_path(p) for name, p in files.items()}
    broken = []
    for name, path in files.items():
        for line, module, names in _imports(path):
            # ``from pkg import mod`` imports the module pkg.mod; otherwise the module itself
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in rank] or [module]
            for target in targets:
                if (
                    target in rank
                    and rank[target] > rank[name]
                    and (paths[name], paths[target]) not in allowed
                ):
                    broken.append(f"{paths[name]}:{line} imports {target}")
    assert not broken, "imports from a later layer (docs/architecture.md, Layers):\n" + "\n".join(broken)


def test_no_private_name_is_imported_across_modules() -> None:
    """``from a import _name`` couples two modules through what ``a`` meant to keep to itself;
    a package may import its own private submodule (``lmh_deploy._lava_compat``)."""
    found = []
    for path in _source_files():
        for line, module, names in _imports(path):
            for n in names:
                if (
                    module.startswith("lmh_deploy")
                    and n.startswith("_")
                    and not n.startswith("__")
                    and not (ROOT / module.replace(".", "/") / f"{n}.py").exists()
                ):
                    found.append(f"{_doc_path(path)}:{line} imports {module}.{n}")
    assert not found, "\n".join(found)
