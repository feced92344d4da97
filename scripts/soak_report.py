"""The soak's report (scripts/soak.sh): passes, failures with seeds, and the bounds' use.

python scripts/soak_report.py WORK_FOLDER RUNS
"""

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
