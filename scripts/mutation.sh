#!/usr/bin/env bash
# Mutation testing of the fixed-point code with mutmut: each target's modules against a fast
# test subset, in a scratch copy of the tree (mutmut writes mutants/ there, never here).
# Prints every mutant that was not killed and one line per module: mutants, killed, survived,
# no test, score = killed / (killed + survived). docs/testing.md has the last result.
#   bash scripts/mutation.sh                     # every target below, one after the other
#   bash scripts/mutation.sh sim                 # one of them
#   MUTATION_KEEP=1 bash scripts/mutation.sh sim # keep the scratch copy (mutmut show/browse)
#   MUTATION_SAMPLE=400 bash scripts/mutation.sh sim  # every mutant of the target's core (CORE
#       below), plus a random sample (seed 0) of 400 of its other mutants
#   MUTATION_PART=core|sample ...               # only one of those two parts
#   MUTATION_CHILDREN=1 ...                      # mutants tested at once (default 2)
# Slow: see docs/testing.md for the duration of each target on 2 shared cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
declare -A TESTS=(
  [semantics]="lmh_deploy/semantics/*.py|tests/test_fixedpoint.py tests/test_golden_vectors.py tests/test_quantize.py tests/test_sim_reference.py tests/test_sim_conv.py tests/test_neuron.py tests/test_float_reference.py tests/test_sim_kernels.py"
  [sim]="lmh_deploy/sim/neuron.py lmh_deploy/sim/synapse.py lmh_deploy/sim/fused.py lmh_deploy/sim/conv.py|tests/test_sim_edges.py tests/test_sim_kernels.py tests/test_sim_fused.py tests/test_sim_reference.py tests/test_sim_conv.py tests/test_sim_paths.py --deselect tests/test_sim_paths.py::test_run_backend_in_mini_batches_equals_one_batch"
  [quantize]="lmh_deploy/passes/quantize.py|tests/test_quantize.py tests/test_bias_correction.py tests/test_passes.py tests/test_golden_vectors.py --deselect tests/test_bias_correction.py::test_compile_switches_bias_correction_off"
)
# The numeric core of a target: with MUTATION_SAMPLE, all of its mutants run (mutmut globs).
declare -A CORE=(
  [sim]="lmh_deploy.sim.neuron.* lmh_deploy.sim.fused.* lmh_deploy.sim.synapse.x_lava_current__* lmh_deploy.sim.synapse.x_summed_current__* lmh_deploy.sim.synapse.x_summed_bound__* lmh_deploy.sim.synapse.x__int_mm_fits__* lmh_deploy.sim.synapse.xǁSynapsePathǁint8_sums__*"
)
work=""
trap '[ -n "$work" ] && rm -rf "$work"' EXIT
for target in "${@:-semantics sim quantize}"; do
  for t in $target; do
    modules="${TESTS[$t]%%|*}"
    tests="${TESTS[$t]#*|}"
    work="$(mktemp -d)"
    git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$work"
    # The installed package maps lmh_deploy.sim and lmh_deploy.models onto the top-level sim/ and
    # models/ folders (an editable finder pointing at THIS tree). In the copy they move under
    # lmh_deploy/, so mutmut mutates them as lmh_deploy.sim.* and its mutants/ folder, first on
    # sys.path, shadows the installed mapping: the tests import the mutated files.
    mv "$work/sim" "$work/lmh_deploy/sim"
    mv "$work/models" "$work/lmh_deploy/models"
    (cd "$work" && "$PYTHON" - <<'PY'
import os, sys
sys.path.insert(0, os.getcwd())
import lmh_deploy.models, lmh_deploy.semantics.integer, lmh_deploy.sim.neuron
for module in (lmh_deploy.models, lmh_deploy.semantics.integer, lmh_deploy.sim.neuron):
    assert module.__file__.startswith(os.getcwd() + "/"), f"{module.__name__} imported from {module.__file__}"
PY
    )
    "$PYTHON" - "$work/pyproject.toml" "$modules" "$tests" <<'PY'
import json, re, sys
path, modules, tests = sys.argv[1:]
text = open(path).read()
for key, value in (
    ("source_paths", ["lmh_deploy"]),
    ("only_mutate", modules.split()),
    ("also_copy", ["tests", "pyproject.toml"]),
    ("pytest_add_cli_args_test_selection", tests.split()),
):
    text, n = re.subn(rf"^{key} = \[.*\]$", f"{key} = {json.dumps(value)}", text, flags=re.M)
    assert n == 1, key
open(path, "w").write(text)
PY
    start=$(date +%s)
    # One thread per process: mutmut forks a child per mutant, and a child forked from a parent
    # whose OpenMP pool (torch, numpy BLAS) has run can spin forever (it timed out as SIGXCPU).
    (cd "$work" && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
       NUMBA_CACHE_DIR="$work/.numba-cache" || exit 1
     names=()
     if [ -n "${MUTATION_SAMPLE:-}" ]; then  # the core's mutants and a random sample (seed 0) of the rest
       # a name that matches nothing: mutmut generates the mutants, collects stats, then stops
       "$PYTHON" -m mutmut run --max-children "${MUTATION_CHILDREN:-2}" no-such-mutant >mutmut.log 2>&1 || true
       mapfile -t names < <("$PYTHON" - "$MUTATION_SAMPLE" "${CORE[$t]:-}" <<'PY'
import fnmatch, glob, json, os, random, sys
names = sorted(k for f in glob.glob("mutants/**/*.py.meta", recursive=True) for k in json.load(open(f))["exit_code_by_key"])
core = [n for n in names if any(fnmatch.fnmatch(n, g) for g in sys.argv[2].split())]
rest = sorted(set(names) - set(core))
random.seed(0)
sample = random.sample(rest, min(int(sys.argv[1]), len(rest)))
open("sampled.txt", "w").write("\n".join(sample))
part = os.environ.get("MUTATION_PART", "")
print("\n".join(sorted((core if part != "sample" else []) + (sample if part != "core" else []))))
PY
)
     fi
     "$PYTHON" -m mutmut run --max-children "${MUTATION_CHILDREN:-2}" "${names[@]}" >>mutmut.log 2>&1 || { tail -30 mutmut.log; exit 1; }
     "$PYTHON" -m mutmut results --all true >results.txt 2>&1
     grep -v ': killed$\|: not checked$' results.txt || true
     for name in $(sed -n 's/^ *\([^ ]*\): survived$/\1/p' results.txt); do
       "$PYTHON" -m mutmut show "$name" 2>&1 | grep -E '^[-+][^-+]' | sed "s|^|$name |"
     done
     "$PYTHON" - results.txt <<'PY'
import collections, os, re, sys
sampled = set(open("sampled.txt").read().split()) if os.path.exists("sampled.txt") else set()
counts = collections.defaultdict(collections.Counter)
for line in open(sys.argv[1]):
    match = re.match(r"\s*(([\w.]+)\.x[_ǁ]\S*__mutmut_\d+): (.+)$", line.strip())
    if match:
        counts[match[2]][match[3]] += 1
        if sampled and match[3] != "not checked":  # the two parts of a MUTATION_SAMPLE run
            counts["(others, sampled)" if match[1] in sampled else "(core, every mutant)"][match[3]] += 1
for module, c in sorted(counts.items()):
    done = c["killed"] + c["survived"]
    score = f"{100 * c['killed'] / done:.1f} %" if done else "-"
    others = ", ".join(f"{n} {k}" for k, n in c.items() if k not in ("killed", "survived", "no tests"))
    print(f"{module}: {sum(c.values())} mutants, {c['killed']} killed, {c['survived']} survived, "
          f"{c['no tests']} with no test in the subset, score {score}" + (f" ({others})" if others else ""))
PY
    )
    echo "$t: $(( $(date +%s) - start )) s"
    if [ -n "${MUTATION_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
    work=""
  done
done
