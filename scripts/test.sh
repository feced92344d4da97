#!/usr/bin/env bash
# The test command: creates or reuses ./.venv, installs the pinned test requirements (torch
# included), builds the Rust extension once in release mode, then runs the Rust unit tests and
# the whole Python suite. Needs python3 (>= 3.10) and a Rust toolchain (cargo) on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DISCO_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -r requirements-test.txt
log="$(mktemp)"
if ! maturin develop --release -q >"$log" 2>&1; then
    cat "$log"
    exit 1
fi
rm -f "$log"
cargo test --release --no-default-features -q
python -m pytest "$@"
