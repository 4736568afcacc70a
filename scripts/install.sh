#!/usr/bin/env bash
# Install lmh-deploy and everything it needs into the active Python environment.
# Python 3.11, 3.12 or 3.13. Idempotent; exact pins (one lock for all three); fails loudly.
# A virtual environment is recommended:
#   python3 -m venv .venv && . .venv/bin/activate && bash scripts/install.sh
# LMH_TORCH_INDEX=URL installs torch from that index instead (e.g. PyTorch's CPU-only
# index https://download.pytorch.org/whl/cpu, where PyPI has only the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
PIP=("$PYTHON" -m pip install --disable-pip-version-check --quiet)
TORCH="torch==2.13.0"

"$PYTHON" - <<'PY'
import sys
if not (3, 11) <= sys.version_info[:2] <= (3, 13):
    sys.exit(f"lmh-deploy needs Python 3.11, 3.12 or 3.13, this is {sys.version.split()[0]}")
PY

# 1. torch first and explicitly, so that pip never resolves a torch range itself.
#    Say what it will download before it does: a CPU build (local wheel or an index given in
#    LMH_TORCH_INDEX), or PyPI's CUDA build with its nvidia packages (about 4.5 GB).
if [[ -n "${LMH_TORCH_INDEX:-}" ]]; then
    echo "install.sh: $TORCH from $LMH_TORCH_INDEX"
    "${PIP[@]}" "$TORCH" --index-url "$LMH_TORCH_INDEX"
elif ! "$PYTHON" -c "import importlib.metadata as m, sys; sys.exit(m.version('torch') != '2.13.0')" 2>/dev/null; then
    if "$PYTHON" -m pip install --disable-pip-version-check --quiet --dry-run --ignore-installed \
        --no-deps --no-index "$TORCH" >/dev/null 2>&1; then
        echo "install.sh: $TORCH (CPU build) from this machine's disk"
    elif "$PYTHON" -c "import platform, sys; sys.exit(platform.system() != 'Linux' or platform.machine() != 'x86_64')"; then
        echo "install.sh: PyPI's $TORCH for Linux x86_64 is the CUDA build: it downloads about 4.5 GB"
        echo "  with its nvidia packages (it runs on the CPU too). For the CPU-only build (~200 MB)"
        echo "  stop now (Ctrl-C) and rerun: LMH_TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/install.sh"
    else
        echo "install.sh: $TORCH from PyPI"
    fi
    "${PIP[@]}" "$TORCH"
fi
# 2. Lava's dependencies, normally resolved (no --ignore-requires-python here:
#    with it pip picks source releases that do not build).
"${PIP[@]}" -r scripts/requirements.lock
# 3. The two Lava wheels alone: they declare Python <3.11, numpy <2 and lava-dl pins an old
#    torch. lmh_deploy/_lava_compat.py makes them import and run on 3.11-3.13 with numpy 2.
"${PIP[@]}" --no-deps --ignore-requires-python lava-nc==0.10.0 lava-dl==0.6.0
# 4. SNN libraries whose networks the tests deploy, without their declared dependencies:
#    norse 1.1.0 declares torchvision/torchaudio, whose default wheels do not load against
#    this CPU build of torch (norse imports and trains without them).
#    spikingjelly 2.0.0 likewise (torchvision, torchaudio); it needs loguru (pinned in the lock).
#    sinabs 3.1.3 and rockpool 3.1.0 pin nir <= 1.0.4 (for their NIR export only; their modules
#    import and run with the lock's nir 1.0.8); sinabs reads its version with pbr (in the lock).
#    rockpool's LinearTorch/LIFTorch nets are deployed by tests/test_foreign_rockpool.py.
"${PIP[@]}" --no-deps norse==1.1.0 spikingjelly==2.0.0 sinabs==3.1.3 rockpool==3.1.0
# 5. The project itself, editable, with its dev extras (deps already satisfied).
"${PIP[@]}" --no-build-isolation --no-deps -e ".[dev]"

"$PYTHON" -c "import lmh_deploy.lava_check as c; c.main()"
