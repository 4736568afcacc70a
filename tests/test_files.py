"""lmh_deploy.files: the one atomic-write helper (checkpoints, JSON, HTML, plots, artifacts)."""

from __future__ import annotations

import json

import pytest

from lmh_deploy.files import atomic_directory, atomic_write, write_json_atomic, write_text_atomic


def test_atomic_write_replaces_only_when_complete(tmp_path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(target, text=True) as fh:
        fh.write('{"a": 2')  # half written, then the writer fails
        raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"a": 1}  # the old content, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]  # no temporary left
    write_text_atomic(target, "é")
    assert target.read_text(encoding="utf-8") == "é"
    with atomic_write(tmp_path / "b.bin") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_atomic_directory(tmp_path) -> None:
    target = tmp_path / "art"
    with atomic_directory(target) as d:
        (d / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    with pytest.raises(KeyError), atomic_directory(target) as d:
        (d / "x").write_text("2")
        raise KeyError("interrupted")
    assert (target / "x").read_text() == "1"
    with pytest.raises(FileExistsError, match="exists already"), atomic_directory(target, overwrite=False):
        pass
    with atomic_directory(target) as d:
        (d / "y").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
