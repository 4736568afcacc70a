#!/usr/bin/env bash
# Install lmh-deploy and everything it needs into the active Python environment.
# Idempotent; exact pins; fails loudly. A virtual environment is recommended:
#   python3.11 -m venv .venv && . .venv/bin/activate && bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
PIP=("$PYTHON" -m pip install --disable-pip-version-check --quiet)

"$PYTHON" - <<'PY'
import sys
if sys.version_info[:2] not in ((3, 10), (3, 11)):
    sys.exit(f"lmh-deploy needs Python 3.10 or 3.11, this is {sys.version.split()[0]}")
PY

# 1. torch first and explicitly, so that pip never resolves a torch range itself
#    (this version is a local CPU wheel; any other downloads gigabytes).
"${PIP[@]}" torch==2.13.0
# 2. Lava's dependencies, normally resolved (no --ignore-requires-python here:
#    with it pip picks source releases that do not build on 3.11).
"${PIP[@]}" -r scripts/requirements.lock
# 3. The two Lava wheels alone: they declare Python <3.11 and lava-dl pins an old
#    torch. lmh_deploy/_lava_compat.py makes them import on 3.11 at run time.
"${PIP[@]}" --no-deps --ignore-requires-python lava-nc==0.10.0 lava-dl==0.6.0
# 4. The project itself, editable, with its dev extras (deps already satisfied).
"${PIP[@]}" --no-build-isolation --no-deps -e ".[dev]"

"$PYTHON" -c "import lmh_deploy.lava_check as c; c.main()"
