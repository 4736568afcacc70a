"""lmh_deploy.files: which outputs may be written (one test per rule), atomic writes, and
what concurrent writers and SIGKILL at several moments leave behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmh_deploy.errors import OutputError
from lmh_deploy.files import (
    ARTIFACT_FORMAT,
    MANIFEST,
    atomic_directory,
    atomic_write,
    check_output,
    check_outputs,
    write_json_atomic,
    write_text_atomic,
)


def _artifact(path: Path, content: str = "1") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "x").write_text(content)
    (path / MANIFEST).write_text(json.dumps({"format": ARTIFACT_FORMAT, "files": {"x": ""}}))
    return path


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_replaces_only_when_complete(tmp_path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(target, text=True) as fh:
        fh.write('{"a": 2')  # half written, then the writer fails
        raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"a": 1}  # the old content, whole
    assert _names(target.parent) == ["out.json"]  # no temporary left
    write_text_atomic(target, "é")
    assert target.read_text(encoding="utf-8") == "é"
    with atomic_write(tmp_path / "b.bin") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_atomic_directory_replaces_an_artifact_and_keeps_it_on_failure(tmp_path) -> None:
    target = tmp_path / "art"
    with atomic_directory(target) as d:
        _artifact(d, "1")
    assert (target / "x").read_text() == "1"
    with pytest.raises(KeyError), atomic_directory(target) as d:
        (d / "x").write_text("2")
        raise KeyError("interrupted")
    assert (target / "x").read_text() == "1"
    with pytest.raises(FileExistsError, match="exists already"), atomic_directory(target, overwrite=False):
        pass
    with atomic_directory(target) as d:
        _artifact(d, "3")
    assert (target / "x").read_text() == "3"
    assert _names(tmp_path) == ["art"]
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)  # umask permissions, not mkdtemp's


def test_atomic_directory_never_replaces_a_users_folder_without_force(tmp_path) -> None:
    # the same rule is re-checked at the moment of the swap (the folder may change meanwhile)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(OutputError, match="is not an lmh-deploy artifact"), atomic_directory(notes) as d:
        _artifact(d)
    assert _names(notes) == ["todo.txt"] and _names(tmp_path) == ["notes"]
    with atomic_directory(notes, force=True) as d:
        _artifact(d)
    assert _names(notes) == ["manifest.json", "x"] and _names(tmp_path) == ["notes"]


# --- check_output: one test per rule -------------------------------------------------------


def test_rule_absent_or_empty_output_folder_is_fine(tmp_path) -> None:
    assert check_output(tmp_path / "new", "-o", kind="artifact") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "-o", kind="artifact")
    check_output(_artifact(tmp_path / "old"), "-o", kind="artifact")


def test_rule_users_folder_is_replaced_only_with_force(tmp_path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"-o .*notes: folder holds 1 entry .*todo.txt.*--force"):
        check_output(tmp_path / "notes", "-o", kind="artifact")
    check_output(tmp_path / "notes", "-o", kind="artifact", force=True)


def test_rule_a_file_is_never_replaced_by_a_folder_even_with_force(tmp_path) -> None:
    (tmp_path / "existing.txt").write_text("hi")
    with pytest.raises(OutputError, match="is a file, not a folder.*not even with --force"):
        check_output(tmp_path / "existing.txt", "-o", kind="artifact", force=True)


def test_rule_an_input_is_never_an_output(tmp_path) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    for kind in ("file", "artifact", "folder"):
        with pytest.raises(OutputError, match="is an input of this command"):
            check_output(model, "-o", kind=kind, inputs=[model], force=True)  # type: ignore[arg-type]
    with pytest.raises(OutputError, match="holds .*m.pt, an input of this command"):
        check_output(tmp_path, "-o", kind="artifact", inputs=[model], force=True)


def test_rule_nothing_is_written_inside_an_artifact(tmp_path) -> None:
    build = _artifact(tmp_path / "build")
    for name, kind in (("x", "file"), ("r.json", "file"), ("sub", "artifact"), ("plots", "folder")):
        with pytest.raises(OutputError, match="is inside the lmh-deploy artifact"):
            check_output(build / name, "--json", kind=kind)  # type: ignore[arg-type]
    with pytest.raises(OutputError, match="is an lmh-deploy artifact"):
        check_output(build, "--plots", kind="folder")


def test_rule_the_place_must_be_a_writable_folder(tmp_path) -> None:
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"--json .*m.pt/r.json: .*m.pt is a file, not a folder"):
        check_output(tmp_path / "m.pt" / "r.json", "--json")
    with pytest.raises(OutputError, match=r"--html /proc/x/r.html: cannot write into /proc"):
        check_output("/proc/x/r.html", "--html")


def test_rule_a_file_output_must_be_a_regular_file(tmp_path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="is a folder; name a file"):
        check_output(tmp_path / "d", "--json")
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(OutputError, match="is a symbolic link"):
        check_output(tmp_path / "link.json", "--json")
    with pytest.raises(OutputError, match="not a regular file"):
        check_output("/dev/null", "--json")
    (tmp_path / "old.json").write_text("{}")
    check_output(tmp_path / "old.json", "--json")  # a report of an earlier run: replaced


def test_rule_never_the_working_folder_or_above(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("x")
    for path in (".", "..", "/"):
        with pytest.raises(OutputError):
            check_output(path, "-o", kind="artifact", force=True)


def test_rule_two_outputs_of_one_command_never_overlap(tmp_path) -> None:
    with pytest.raises(OutputError, match="--html .*r.json: overlaps --json"):
        check_outputs({"--json": (tmp_path / "r.json", "file"), "--html": (tmp_path / "r.json", "file")})
    with pytest.raises(OutputError, match="overlaps --plots"):
        check_outputs({"--plots": (tmp_path / "p", "folder"), "--html": (tmp_path / "p" / "r.html", "file")})
    check_outputs({"--json": (tmp_path / "r.json", "file"), "--html": (None, "file")})


# --- faults: concurrent writers, SIGKILL --------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path
    import lmh_deploy.files as F

    target, content, moment = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if moment == "before-swap":
        F._replace_folder = die
    elif moment == "after-swap":  # the old content sits in the temporary, not yet removed
        F.shutil.rmtree = die
    elif moment == "before-replace":
        F.os.replace = die
    if target.suffix == ".json":
        with F.atomic_write(target, text=True) as fh:
            fh.write('{"content": "' + content)
            if moment == "mid-write":
                die()
            fh.write('"}')
        sys.exit(0)
    with F.atomic_directory(target) as tmp:
        for i in range(20):
            (tmp / f"part{i}").write_text(content)
            if moment == "mid-write" and i == 10:
                die()
        (tmp / "manifest.json").write_text(json.dumps({"format": F.ARTIFACT_FORMAT}))
        if moment == "concurrent":
            time.sleep(0.2)
    """
)


def _writer(target: Path, content: str, moment: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(target), content, moment])


def _whole_artifact(target: Path) -> str:
    parts = {(target / f"part{i}").read_text() for i in range(20)}
    assert len(parts) == 1 and (target / "manifest.json").is_file()
    return parts.pop()


@pytest.mark.parametrize("moment", ["mid-write", "before-swap", "after-swap"])
def test_sigkill_while_writing_a_folder_leaves_the_old_one_whole(tmp_path, moment) -> None:
    target = tmp_path / "build"
    assert _writer(target, "old", "none").wait() == 0
    proc = _writer(target, "new", moment)
    assert proc.wait() == -signal.SIGKILL
    expected = "new" if moment == "after-swap" else "old"  # the swap itself is one atomic step
    assert _whole_artifact(target) == expected
    assert _writer(target, "newer", "none").wait() == 0  # the next write removes the orphan
    assert _whole_artifact(target) == "newer" and _names(tmp_path) == ["build"]


@pytest.mark.parametrize("moment", ["mid-write", "before-replace"])
def test_sigkill_while_writing_a_report_leaves_the_old_one_whole(tmp_path, moment) -> None:
    target = tmp_path / "run.json"
    assert _writer(target, "old", "none").wait() == 0
    assert _writer(target, "new", moment).wait() == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"content": "old"}
    assert _writer(target, "newer", "none").wait() == 0
    assert json.loads(target.read_text()) == {"content": "newer"} and _names(tmp_path) == ["run.json"]


def test_concurrent_writers_of_one_folder_both_finish_with_a_whole_artifact(tmp_path) -> None:
    target = tmp_path / "build"
    for existing in (False, True):  # into nothing, then over an artifact
        procs = [_writer(target, f"w{i}", "concurrent") for i in range(3)]
        assert [p.wait() for p in procs] == [0, 0, 0]
        assert _whole_artifact(target) in {"w0", "w1", "w2"}
        assert _names(tmp_path) == ["build"], existing


def test_orphans_of_live_processes_stay(tmp_path) -> None:
    live = tmp_path / f".r.json.{os.getpid()}.0123abcd.tmp"
    live.write_text("being written")
    dead = tmp_path / ".r.json.999999999.0123abcd.tmp"
    dead.write_text("orphan")
    write_text_atomic(tmp_path / "r.json", "{}")
    assert _names(tmp_path) == [live.name, "r.json"]
