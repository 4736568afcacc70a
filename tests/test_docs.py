"""Every file, module, name, command and option that README.md and docs/*.md name exists.

Reads the Markdown and the source as text; the commands and options are the CLI's own
(click's view of the typer app), so a renamed option fails here before a reader meets it.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
#: installed names of the folders that live at the top of the repository
INSTALLED = {"lmh_deploy/models/": "models/", "lmh_deploy/sim/": "sim/"}
TOP = r"(?:lmh_deploy|models|sim|tests|bench|scripts|docs|\.ci)"
FILE_EXT = r"\.(?:py|md|json|sh|lock|toml|npz|txt)"


def _ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in paths]


def _on_disk(rel: str) -> Path:
    for installed, folder in INSTALLED.items():
        if rel.startswith(installed):
            rel = folder + rel[len(installed) :]
    return ROOT / rel


@cache
def _top_names(path: Path) -> dict[str, ast.AST]:
    """Names a module defines at top level (functions, classes, assignments, imports)."""
    names: dict[str, ast.AST] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update({t.id: node for t in targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update({(a.asname or a.name).split(".")[0]: node for a in node.names})
    return names


def _defines(module_file: Path, attrs: list[str]) -> bool:
    """``module.attrs[0]`` exists, and ``attrs[1]`` inside it when it is a class."""
    node = _top_names(module_file).get(attrs[0])
    if node is None:
        return False
    if len(attrs) > 1 and isinstance(node, ast.ClassDef):
        members = {getattr(n, "name", None) for n in node.body}
        members |= {
            n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
        }
        return attrs[1] in members
    return True


def _module_file(dotted: list[str]) -> tuple[Path | None, list[str]]:
    """The longest prefix of ``dotted`` that is a module of ours, and the rest."""
    for i in range(len(dotted), 0, -1):
        base = _on_disk("/".join(dotted[:i]) + "/")
        for candidate in (base.with_suffix(".py") if i > 1 else None, base / "__init__.py"):
            if candidate is not None and candidate.is_file():
                return candidate, dotted[i:]
    return None, dotted


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_named_file_exists(doc: Path) -> None:
    text = doc.read_text()
    missing = []
    for m in re.finditer(rf"(?<![\w/.-])({TOP}/[\w./-]*?(?:{FILE_EXT}|/(?=[`\s)])|\.ci/run))", text):
        if not _on_disk(m.group(1)).exists():
            missing.append(m.group(1))
    # ``folder/module.NAME``: the module defines NAME
    for m in re.finditer(rf"`({TOP}/[\w/]+)\.([A-Za-z_]\w*)", text):
        module = _on_disk(m.group(1) + ".py")
        if m.group(2) not in ("py", "md", "json", "sh", "lock", "toml", "npz", "txt") and not (
            module.is_file() and _defines(module, [m.group(2)])
        ):
            missing.append(f"{m.group(1)}.{m.group(2)}")
    assert not missing, f"{doc.name} names what does not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_named_module_and_name_exists(doc: Path) -> None:
    missing = []
    for dotted in sorted(set(re.findall(r"\blmh_deploy(?:\.\w+)+", doc.read_text()))):
        module, rest = _module_file(dotted.split("."))
        if module == ROOT / "lmh_deploy" / "__init__.py" and rest:
            module = ROOT / "lmh_deploy" / "api.py"  # lmh_deploy.compile(...) loads the API lazily
        if module is None or (rest and not _defines(module, rest)):
            missing.append(dotted)
    assert not missing, f"{doc.name} names modules or names that do not exist: {missing}"


@cache
def _cli_options() -> dict[str, set[str]]:
    from typer.main import get_command

    from lmh_deploy.cli import app

    group = get_command(app)
    return {
        name: {o for p in cmd.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        for name, cmd in group.commands.items()  # type: ignore[attr-defined]
    }


def _code(text: str) -> list[str]:
    """Lines of fenced blocks and inline code spans, split at ``&&``, pipes and comments."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    spans = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
    pieces = []
    for chunk in [*fenced, *spans]:
        for line in chunk.replace("\\\n", " ").splitlines():
            pieces += re.split(r"&&|\|(?!\w)|;|\s#\s", line.split("  #")[0])
    return pieces


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_command_and_option_shown_exists(doc: Path) -> None:
    options = _cli_options()
    wrong = []
    for piece in _code(doc.read_text()):
        words = piece.split()
        invoked = re.match(r"\s*(?:lmh-deploy|.*\$\(which lmh-deploy\))\s+([a-z][\w-]*)(.*)", piece)
        if invoked:
            command, rest = invoked.group(1), invoked.group(2).split()
        elif words and words[0] in options and any(w.startswith("--") for w in words):
            command, rest = words[0], words[1:]  # `train --neuron lif` in prose
        else:
            continue
        if command not in options:
            wrong.append(f"no command {command!r}: {piece.strip()}")
            continue
        for opt in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", " ".join(rest)):
            if opt not in options[command] and opt != "--help":
                wrong.append(f"{command} has no {opt}: {piece.strip()}")
    assert not wrong, f"{doc.name}:\n" + "\n".join(wrong)


def test_no_merge_conflict_markers_in_the_tree() -> None:
    """A conflict resolved by `git stash pop` once left `<<<<<<< Updated upstream` in README.md
    for a day: no text file of the project may hold a line that git's conflict markers start."""
    folders = ["lmh_deploy", "models", "sim", "tests", "bench", "scripts", "docs", "examples", ".ci"]
    files = [p for p in ROOT.glob("*") if p.is_file()]
    files += [p for d in folders if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*") if p.is_file()]
    text = {".md", ".py", ".sh", ".toml", ".ipynb", ".lock", ".txt", ".cfg", ".yml", ".yaml", ""}
    marker = re.compile(r"^(?:<{7}|>{7})(?: |$)|^={7}$", re.M)
    bad = [
        p.relative_to(ROOT).as_posix()
        for p in files
        if p.suffix in text and "__pycache__" not in p.parts and marker.search(p.read_text(errors="replace"))
    ]
    assert not bad, f"merge conflict markers in {bad}"
