#!/usr/bin/env bash
# The main job, the way a user gets it: builds the wheel from this checkout and installs it with pip
# into ./.venv-user (a plain virtualenv; torch and the rest come from PyPI), then runs `disco demo`
# on the embedded model, offline. Arguments go to `disco demo` (e.g. --quick, --out DIR).
# Once disco-control is on PyPI, `pip install disco-control` replaces the build.
# Needs python3 (>= 3.10) and a Rust toolchain (cargo) on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
venv="${DISCO_USER_VENV:-.venv-user}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# pip builds the wheel with maturin (the release profile) and installs it.
"$venv/bin/python" -m pip install -q .
echo "demo.sh: set up in $((SECONDS - start)) s ($("$venv/bin/disco" --version) in $venv)"
"$venv/bin/disco" demo "$@"
