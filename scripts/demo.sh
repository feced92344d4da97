#!/usr/bin/env bash
# The main job: sets up ./.venv (see setup.sh), then runs `disco demo` on the embedded model,
# offline. Arguments go to `disco demo` (e.g. --quick, --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
disco demo "$@"
