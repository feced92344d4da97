#!/usr/bin/env bash
# The test command: sets up ./.venv (see setup.sh), then runs the Rust unit tests and the whole
# Python suite. Needs python3 (>= 3.10) and a Rust toolchain (cargo) on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
cargo test --release --no-default-features -q
python -m pytest "$@"
