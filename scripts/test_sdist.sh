#!/usr/bin/env bash
# Installs the sdist with pip into a fresh virtualenv, which compiles the Rust core from it (so a
# Rust toolchain must be on PATH), then checks the installed package: `disco --version` and the
# core through disco.numerics against numpy. The packages of SITE_PACKAGES (torch and the rest)
# are reused through a .pth file, so only disco is built and installed.
#
#   scripts/test_sdist.sh SDIST PYTHON SITE_PACKAGES
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sdist="$(realpath "$1")"
python="$2"
reuse="$(realpath "$3")"
work="$(mktemp -d "${TMPDIR:-/tmp}/disco-sdist-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
# The venv holds nothing of its own (pip too comes from the reused packages), so no bundled
# package (an old setuptools) shadows a reused one.
"$python" -m venv --without-pip "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
echo "$reuse" >"$site/_disco_reused_packages.pth"
python -m pip install -q --no-deps --force-reinstall "$sdist"
python -m pip check
echo "test_sdist: built and installed from $(basename "$sdist") in $((SECONDS - start)) s"
cd "$work"
expected="disco-control $(python "$root/scripts/check_wheel.py" --cargo-version)"
[ "$(disco --version)" = "$expected" ] || { echo "test_sdist: disco --version is not '$expected'" >&2; exit 1; }
python - "$site" <<'PY'
import sys
from pathlib import Path

import numpy as np

import disco
from disco import numerics

assert Path(disco.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), disco.__file__
x = np.linspace(-30.0, 5.0, 1001)
assert abs(numerics.logsumexp(x) - np.log(np.exp(x).sum())) < 1e-12
PY
echo "test_sdist: passed"
