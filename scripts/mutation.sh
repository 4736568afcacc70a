#!/usr/bin/env bash
# Mutation testing of the fixed-point code with mutmut: each target's modules against a fast
# test subset, in a scratch copy of the tree (mutmut writes mutants/ there, never here).
# Prints every mutant that was not killed and one line per module: mutants, killed, survived,
# no test, score = killed / (killed + survived). docs/testing.md has the last result.
#   bash scripts/mutation.sh                     # every target below, one after the other
#   bash scripts/mutation.sh sim                 # one of them
#   MUTATION_KEEP=1 bash scripts/mutation.sh sim # keep the scratch copy (mutmut show/browse)
#   MUTATION_SAMPLE=400 bash scripts/mutation.sh sim  # a random sample (seed 0) of 400 mutants
#   MUTATION_CORE=1 MUTATION_SAMPLE=400 ...     # and every mutant of the target's core (CORE below)
#   MUTATION_ONLY='lmh_deploy.sim.chain.*' bash scripts/mutation.sh sim  # only these mutants (globs)
#   MUTATION_CHILDREN=1 ...                      # mutants tested at once (default 2)
#   MUTATION_TESTS='tests/test_sim_fused.py' ... # a narrower test subset (quicker; what it
#                                                # kills the target's subset kills too)
# Slow: see docs/testing.md for the duration of each target on 2 shared cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
declare -A TESTS=(
  [semantics]="lmh_deploy/semantics/*.py|tests/test_fixedpoint.py tests/test_golden_vectors.py tests/test_quantize.py tests/test_sim_reference.py tests/test_sim_conv.py tests/test_neuron.py tests/test_float_reference.py tests/test_sim_kernels.py tests/test_max_pool_currents_lava_free.py tests/test_graded_spikes_lava_free.py tests/test_signed_inputs_lava_free.py tests/test_readout.py"
  [sim]="lmh_deploy/sim/neuron.py lmh_deploy/sim/synapse.py lmh_deploy/sim/fused.py lmh_deploy/sim/conv.py lmh_deploy/sim/chain.py|tests/test_sim_edges.py tests/test_sim_kernels.py tests/test_sim_fused.py tests/test_sim_reference.py tests/test_sim_conv.py tests/test_sim_paths.py tests/test_sim_chain.py tests/test_max_pool_currents_lava_free.py --deselect tests/test_sim_paths.py::test_run_backend_in_mini_batches_equals_one_batch"
  [quantize]="lmh_deploy/passes/quantize.py|tests/test_quantize.py tests/test_bias_correction.py tests/test_passes.py tests/test_golden_vectors.py --deselect tests/test_bias_correction.py::test_compile_switches_bias_correction_off"
)
# The numeric core of a target (mutmut globs): with MUTATION_CORE=1, all of its mutants run.
declare -A CORE=(
  [sim]="lmh_deploy.sim.neuron.* lmh_deploy.sim.fused.* lmh_deploy.sim.chain.* lmh_deploy.sim.synapse.x_lava_current__* lmh_deploy.sim.synapse.x_summed_current__* lmh_deploy.sim.synapse.x_summed_bound__* lmh_deploy.sim.synapse.x__int_mm_fits__* lmh_deploy.sim.synapse.xǁSynapsePathǁint8_sums__*"
)
work=""
trap 'if [ -n "$work" ] && [ -z "${MUTATION_KEEP:-}" ]; then rm -rf "$work"; fi' EXIT  # kept if asked, even when interrupted
for target in "${@:-semantics sim quantize}"; do
  for t in $target; do
    modules="${TESTS[$t]%%|*}"
    tests="${MUTATION_TESTS:-${TESTS[$t]#*|}}"
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
     if [ -n "${MUTATION_ONLY:-}" ]; then  # mutmut matches these globs itself
       read -ra names <<<"$MUTATION_ONLY"
     elif [ -n "${MUTATION_SAMPLE:-}${MUTATION_CORE:-}" ]; then  # a random sample (seed 0), the core
       # a name that matches nothing: mutmut generates the mutants, collects stats, then stops
       "$PYTHON" -m mutmut run --max-children "${MUTATION_CHILDREN:-2}" no-such-mutant >mutmut.log 2>&1 || true
       core="${CORE[$t]:-}"
       [ -n "${MUTATION_CORE:-}" ] || core=""
       mapfile -t names < <("$PYTHON" - "${MUTATION_SAMPLE:-0}" "$core" <<'PY'
import fnmatch, glob, json, random, sys
names = sorted(k for f in glob.glob("mutants/**/*.py.meta", recursive=True) for k in json.load(open(f))["exit_code_by_key"])
random.seed(0)
sample = random.sample(names, min(int(sys.argv[1]), len(names)))
open("sampled.txt", "w").write("\n".join(sample))
core = [n for n in names if any(fnmatch.fnmatch(n, g) for g in sys.argv[2].split())]
print("\n".join(sorted(set(core + sample))))
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
        if match[1] in sampled:  # the random sample, alone (the core may add to the modules' lines)
            counts["(the random sample)"][match[3]] += 1
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
