#!/usr/bin/env bash
# Reruns chosen tests N times, each run in a fresh pytest process, and reports how often each
# passed, every failure with its run's seed and message, and how much of each rounding bound the
# comparisons used (tests/conftest.py writes that to $DISCO_BOUND_LOG). A bound that a test uses
# to more than a third is too tight, or hides a real difference.
#
#   bash scripts/soak.sh N TEST... [-- PYTEST_OPTIONS...]
#
# TEST: a file or node id; options for pytest (-k, -m) after --. With DISCO_SOAK_VARY_SEED=1
# each run seeds the tests' generators differently (their seed is crc32(node id) + run number).
# The log of every run stays in the folder printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,10p' "$0"; exit 2; }
runs="$1"
shift
args=()
for arg in "$@"; do
    [ "$arg" = "--" ] || args+=("$arg")  # the options after -- go to pytest as they are
done
[ -x .venv/bin/python ] && . .venv/bin/activate
work="$(mktemp -d "${TMPDIR:-/tmp}/disco-soak.XXXXXX")"
: >"$work/outcomes.tsv"
for run in $(seq 1 "$runs"); do
    start=$SECONDS
    DISCO_BOUND_LOG="$work/bounds.jsonl" DISCO_SOAK_RUN="$run" \
        python -m pytest "${args[@]}" -q -rA -p no:cacheprovider >"$work/run-$run.log" 2>&1
    status=$?
    grep -E '^(PASSED|FAILED|ERROR) ' "$work/run-$run.log" | sed "s/^/$run\t/" >>"$work/outcomes.tsv"
    echo "soak: run $run of $runs: exit $status in $((SECONDS - start)) s"
done
python - "$work" "$runs" <<'PY'
import collections
import json
import os
import sys
import zlib
from pathlib import Path

work, runs = Path(sys.argv[1]), int(sys.argv[2])
vary = os.environ.get("DISCO_SOAK_VARY_SEED") == "1"
passed = collections.Counter()
failures = collections.defaultdict(list)
for line in (work / "outcomes.tsv").read_text().splitlines():
    run, outcome = line.split("\t", 1)
    kind, _, rest = outcome.partition(" ")
    test, _, message = rest.partition(" - ")
    if kind == "PASSED":
        passed[test] += 1
    else:
        failures[test].append((int(run), message))
print(f"\n{'test':<90} passed")
for test in sorted(set(passed) | set(failures)):
    print(f"{test:<90} {passed[test]}/{runs}")
for test, seen in sorted(failures.items()):
    for run, message in seen:
        seed = zlib.crc32(test.encode()) + (run if vary else 0)
        print(f"FAILED {test} (run {run}, seed {seed}): {message}")
used = collections.defaultdict(float)
bounds = work / "bounds.jsonl"
if bounds.exists():
    for line in bounds.read_text().splitlines():
        entry = json.loads(line)
        what = entry["what"].split(":")[0]
        key = (entry["test"], what)
        used[key] = max(used[key], entry["used"])
if used:
    print(f"\n{'largest use of a rounding bound (test, comparison)':<100} used")
    for (test, what), fraction in sorted(used.items()):
        flag = "  <- over a third" if fraction > 1 / 3 else ""
        print(f"{test + ' :: ' + what:<100} {fraction:.3f}{flag}")
print(f"\nlogs: {work}")
sys.exit(1 if failures else 0)
PY
