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
python scripts/soak_report.py "$work" "$runs"
