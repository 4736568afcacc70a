"""Tests of the Python 3.11 Lava import hook (lmh_deploy/_lava_compat.py).

Import behaviour is checked in fresh interpreters (subprocesses), because this test
process has long since imported lava.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from lmh_deploy import _lava_compat as compat

REPO = Path(__file__).resolve().parents[1]


def _var_model_path() -> Path:
    (root,) = importlib.util.find_spec("lava").submodule_search_locations
    path = Path(root) / "magma" / "compiler" / "var_model.py"
    assert path.is_file(), path
    return path


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- source rewrite


def test_patch_rewrites_exactly_eight_defaults_and_compiles() -> None:
    source = _var_model_path().read_text()
    patched = compat.patch_var_model_source(source)
    assert source.count("= ByteEncoder()") == compat.EXPECTED_REWRITES == 8
    assert patched.count("= ByteEncoder()") == 0
    assert patched.count("= field(default_factory=ByteEncoder)") == 8
    # Ignoring blank lines (see the next test), only the 8 fields and the import line change.
    src_lines = [line for line in source.splitlines() if line.strip()]
    new_lines = [line for line in patched.splitlines() if line.strip()]
    assert len(src_lines) == len(new_lines)
    changed = [(a, b) for a, b in zip(src_lines, new_lines) if a != b]
    assert len(changed) == 8 + 1
    imports = [b for a, b in changed if a.startswith("from dataclasses import")]
    assert len(imports) == 1 and imports[0].endswith(", field")
    fields = [(a, b) for a, b in changed if a not in imports and b not in imports]
    assert all(
        a.endswith(" = ByteEncoder()")
        and b == a.replace("ByteEncoder()", "field(default_factory=ByteEncoder)")
        for a, b in fields
    )
    compile(patched, str(_var_model_path()), "exec", dont_inherit=True)


def test_patch_keeps_line_numbers() -> None:
    source = _var_model_path().read_text()
    patched = compat.patch_var_model_source(source)
    assert len(patched.splitlines()) == len(source.splitlines())


def test_patch_fails_loudly_on_unexpected_text() -> None:
    source = _var_model_path().read_text()
    one_less = source.replace("= ByteEncoder()", "= None", 1)
    with pytest.raises(compat.LavaCompatError, match="expected 8 'ByteEncoder\\(\\)' defaults but found 7"):
        compat.patch_var_model_source(one_less)
    with pytest.raises(compat.LavaCompatError, match="found 0"):
        compat.patch_var_model_source("x = 1\n")
    no_import = "\n".join(
        line for line in source.splitlines() if not line.startswith("from dataclasses import")
    )
    with pytest.raises(compat.LavaCompatError, match="no 'from dataclasses import"):
        compat.patch_var_model_source(no_import)
    assert issubclass(compat.LavaCompatError, ImportError)


def test_install_is_idempotent() -> None:
    assert compat.install() is compat.needs_fix()
    before = [f for f in sys.meta_path if isinstance(f, compat.LavaCompatFinder)]
    compat.install()
    after = [f for f in sys.meta_path if isinstance(f, compat.LavaCompatFinder)]
    assert len(before) == len(after) == (1 if compat.needs_fix() else 0)


# --------------------------------------------------------------------------- fresh interpreters


def test_import_hook_gives_each_instance_its_own_encoder() -> None:
    result = _python(
        "import lmh_deploy; import lava.magma.compiler.var_model as v; "
        "print(v.CoreEncoder().x is not v.CoreEncoder().x)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_stock_lava_needs_the_hook() -> None:
    """Control: without ``import lmh_deploy`` first, lava-nc 0.10 does not import on 3.11."""
    result = _python("import lava.magma.compiler.var_model")
    if compat.needs_fix():
        assert result.returncode != 0
        assert "mutable default" in result.stderr
    else:
        assert result.returncode == 0, result.stderr


def test_lava_imported_first_is_reported() -> None:
    result = _python(
        "import sys, types; "
        "sys.modules['lava.magma.compiler.var_model'] = types.ModuleType('v'); "
        "import lmh_deploy"
    )
    if compat.needs_fix():
        assert result.returncode != 0
        assert "LavaCompatError" in result.stderr
        assert "import lmh_deploy before lava" in result.stderr
    else:
        assert result.returncode == 0, result.stderr


def test_slayer_object_detection_stand_in() -> None:
    result = _python(
        "import lmh_deploy; import lava.lib.dl.slayer as s; "
        "import lava.lib.dl.slayer.object_detection as od; "
        "print(od.__doc__); print(hasattr(s, 'neuron'), hasattr(s, 'block'))"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Stand-in by lmh-deploy")
    assert lines[-1] == "True True"


# --------------------------------------------------------------------------- numpy 2: ports.py


def _ports_path() -> Path:
    (root,) = importlib.util.find_spec("lava").submodule_search_locations
    path = Path(root) / "magma" / "core" / "process" / "ports" / "ports.py"
    assert path.is_file(), path
    return path


def test_ports_patch_rewrites_both_reshapes_and_keeps_line_numbers() -> None:
    source = _ports_path().read_text()
    patched = compat.patch_ports_source(source)
    assert source.count("newshape=") == compat.EXPECTED_RESHAPES == 2
    assert "newshape=self" not in patched
    assert patched.count("ft.partial(_lmh_reshape, self.shape)") == 1
    assert patched.count("ft.partial(_lmh_reshape, self.old_shape)") == 1
    # Only the two lines change; the helper is appended after the last line.
    src_lines, new_lines = source.splitlines(), patched.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(src_lines, new_lines)) if a != b]
    assert len(changed) == 2 and all("np.reshape, newshape=" in src_lines[i] for i in changed)
    assert patched.endswith(compat._RESHAPE_HELPER)
    assert len(patched[: -len(compat._RESHAPE_HELPER)].splitlines()) == len(src_lines)
    compile(patched, str(_ports_path()), "exec", dont_inherit=True)


def test_ports_patch_fails_loudly_on_unexpected_text() -> None:
    source = _ports_path().read_text()
    with pytest.raises(compat.LavaCompatError, match="expected 2 .* but found 1"):
        compat.patch_ports_source(source.replace("newshape=self.shape", "self.shape", 1))
    with pytest.raises(compat.LavaCompatError, match="no 'import numpy as np' line"):
        compat.patch_ports_source(source.replace("import numpy as np\n", "import numpy\n"))


def test_conv_models_patch_hands_utils_conv_python_ints_and_keeps_line_numbers() -> None:
    (root,) = importlib.util.find_spec("lava").submodule_search_locations
    path = Path(root) / "proc" / "conv" / "models.py"
    source = path.read_text()
    patched = compat.patch_conv_models_source(source)
    src_lines, new_lines = source.splitlines(), patched.splitlines()
    assert len(src_lines) == len(new_lines)
    changed = [new_lines[i].strip() for i, (a, b) in enumerate(zip(src_lines, new_lines)) if a != b]
    assert changed == [
        "self.kernel_size.tolist(), self.stride.tolist(), self.padding.tolist(), self.dilation.tolist(),",
        "int(self.groups[0])",
    ]
    compile(patched, str(path), "exec", dont_inherit=True)
    with pytest.raises(compat.LavaCompatError, match="expected 1 .* but found 0"):
        compat.patch_conv_models_source(source.replace("self.groups[0]\n", "groups\n"))


def test_reshape_port_runs_in_a_lava_worker() -> None:
    """Lava's reshape ports work on this numpy (2.x: ``np.reshape`` has no ``newshape=``).

    A RingBuffer (2, 3) -> reshape (6,) -> Dense -> sink, run by Lava's own runtime in
    its worker processes, against numpy's product. Before the fix the worker raised
    ``TypeError`` on numpy 2.4 and the run hung; the subprocess timeout keeps this test
    from hanging if it comes back.
    """
    code = """
import lmh_deploy, numpy as np
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.process import Dense
from lava.proc.io.sink import RingBuffer as Sink
from lava.proc.io.source import RingBuffer as Source
rng = np.random.default_rng(0)
data = rng.integers(0, 2, size=(2, 3, 4))
weights = 2 * rng.integers(-5, 6, size=(2, 6))  # even: Dense keeps 7 bits of mixed-sign weights
src, dense, sink = Source(data=data), Dense(weights=weights), Sink(shape=(2,), buffer=4)
src.s_out.reshape((6,)).connect(dense.s_in)
dense.a_out.connect(sink.a_in)
src.run(condition=RunSteps(num_steps=4), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
got = sink.data.get()
src.stop()
expected = np.stack([weights @ data[:, :, t].reshape(6) for t in range(3)], axis=1)
assert np.array_equal(got[:, 1:], expected), (got, expected)
print("ok", np.__version__)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")
