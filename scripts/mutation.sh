#!/usr/bin/env bash
# Mutation testing of the fixed-point code with mutmut: each target module against a fast test
# subset, in a scratch copy of the tree (mutmut writes mutants/ there, never here). Prints
# mutmut's per-mutant results and one line per target: killed / survived / no test.
# Slow: about 15 minutes per target on 2 shared cores. docs/testing.md has the last result.
#   bash scripts/mutation.sh                     # every target below
#   bash scripts/mutation.sh semantics           # one of them
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
declare -A TESTS=(
  [semantics]="lmh_deploy/semantics/integer.py|tests/test_fixedpoint.py tests/test_golden_vectors.py tests/test_quantize.py"
  [quantize]="lmh_deploy/passes/quantize.py|tests/test_quantize.py tests/test_passes.py tests/test_bias_correction.py"
)
for target in "${@:-${!TESTS[@]}}"; do
  module="${TESTS[$target]%%|*}"
  tests="${TESTS[$target]#*|}"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  git ls-files -z | xargs -0 -I{} cp --parents {} "$work"
  selection="$(printf '"%s", ' $tests)"
  "$PYTHON" - "$work/pyproject.toml" "$module" "[${selection%, }]" <<'PY'
import re, sys
path, module, selection = sys.argv[1:]
text = open(path).read()
text = re.sub(r'only_mutate = \[.*\]', f'only_mutate = ["{module}"]', text)
text = re.sub(r'pytest_add_cli_args_test_selection = \[.*\]', f"pytest_add_cli_args_test_selection = {selection}", text)
open(path, "w").write(text)
PY
  (cd "$work" && "$PYTHON" -m mutmut run --max-children 2 >/dev/null 2>&1 || true
   "$PYTHON" -m mutmut results --all true > results.txt 2>&1 || true
   killed=$(grep -c ': killed' results.txt || true); survived=$(grep -c ': survived' results.txt || true)
   untested=$(grep -c ': no tests' results.txt || true)
   grep -v ': killed' results.txt
   echo "$module: $killed killed, $survived survived, $untested with no test in the subset")
  rm -rf "$work"
done
