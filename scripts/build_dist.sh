#!/usr/bin/env bash
# Builds what a release uploads, into DIR (default dist/): the abi3 wheel for this platform with
# the release profile (fat LTO, one codegen unit), and the sdist. On Linux the wheel targets
# manylinux2014 (glibc 2.17) through zig, and maturin's auditwheel check fails the build if the
# library needs anything newer or outside the manylinux policy. Then scripts/check_wheel.py checks
# the wheel's file list. The release workflow runs this same script for Linux x86-64.
# Needs maturin and ziglang (both in requirements-test.txt) and a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
mkdir -p "$out"
rm -f "$out"/disco_control-*.whl "$out"/disco_control-*.tar.gz
start=$SECONDS
if [ "$(uname -s)" = Linux ]; then
    maturin build --release --locked --zig --compatibility manylinux2014 \
        --auditwheel check --out "$out"
else
    maturin build --release --locked --out "$out"
fi
echo "build_dist: wheel built in $((SECONDS - start)) s"
maturin sdist --out "$out"
python scripts/check_wheel.py "$out"/disco_control-*.whl
