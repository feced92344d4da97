#!/usr/bin/env bash
# Installs a built wheel into a fresh virtualenv that has no Rust toolchain on its PATH and uses it
# as a user would: `disco --version`, `disco demo --quick` (report and plots), and the README's
# quick start with `python -c`. .ci/run and the release workflow both run it.
#
#   scripts/test_wheel.sh WHEEL PYTHON [--reuse SITE_PACKAGES] [--suite [--without-extras]]
#
# Without --reuse, pip resolves the dependencies fresh: the newest releases pyproject.toml's bounds
# allow on that Python (torch is downloaded each time, without pip's cache).
# --reuse SITE_PACKAGES: the fresh venv sees those already installed packages (torch and the rest)
#   through a .pth file and installs the wheel alone; `pip check` then checks the dependencies.
# --suite: also install the `test` extra and run the test suite against the installed wheel, but
#   for the tests that start several processes (the test command runs those, on the pinned set).
# --without-extras: with --suite, install the `test-core` extra only (the test tools, none of
#   the optional extras): every test of an optional feature must then skip, naming its extra.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
wheel="$(realpath "$1")"
python="$2"
shift 2
reuse=""
suite=0
tests_extra=test
while [ $# -gt 0 ]; do
    case "$1" in
        --reuse) reuse="$(realpath "$2")"; shift 2 ;;
        --suite) suite=1; shift ;;
        --without-extras) tests_extra=test-core; shift ;;
        *) echo "test_wheel: unknown argument $1" >&2; exit 2 ;;
    esac
done

# A user's machine: no cargo or rustc anywhere on PATH, so nothing can quietly compile the core.
path=""
IFS=: read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
    if [ -n "$dir" ] && [ ! -e "$dir/cargo" ] && [ ! -e "$dir/rustc" ]; then
        path="${path:+$path:}$dir"
    fi
done
export PATH="$path"
if command -v cargo >/dev/null || command -v rustc >/dev/null; then
    echo "test_wheel: a Rust toolchain is still on PATH" >&2
    exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/disco-wheel-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
# With --reuse the venv holds nothing of its own (pip too comes from the reused packages), so no
# bundled package (an old setuptools) shadows a reused one.
"$python" -m venv ${reuse:+--without-pip} "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# A fresh resolve brings torch with its CUDA libraries (several GB); caching them as well would
# double what each fresh venv takes on disk, and CI runs two of them on a machine with no set size.
[ -n "$reuse" ] || export PIP_NO_CACHE_DIR=1
site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
if [ -n "$reuse" ]; then
    echo "$reuse" >"$site/_disco_reused_packages.pth"
    # The reused environment may hold an editable install of the same version: replace it here.
    python -m pip install -q --no-deps --force-reinstall "$wheel"
    python -m pip check
elif [ "$suite" = 1 ]; then
    python -m pip install -q "$wheel[$tests_extra]"
else
    python -m pip install -q "$wheel"
fi
echo "test_wheel: $(python -V) venv ready in $((SECONDS - start)) s with $(python -c '
import importlib.metadata as m
print(", ".join(f"{d} {m.version(d)}" for d in ("torch", "transformers", "numpy", "matplotlib")))
')"

cd "$work"  # away from the checkout: `disco` must come from the wheel
python - "$site" <<'EOF'
import sys
from pathlib import Path

import disco
from disco import _core

site = Path(sys.argv[1]).resolve()
for module in (disco, _core):
    assert Path(module.__file__).resolve().is_relative_to(site), f"{module.__name__} from {module.__file__}"
EOF
version="$(disco --version)"
expected="disco-control $(python "$root/scripts/check_wheel.py" --cargo-version)"
if [ "$version" != "$expected" ]; then
    echo "test_wheel: disco --version says '$version', expected '$expected'" >&2
    exit 1
fi
echo "test_wheel: disco --version: $version"

start=$SECONDS
disco demo --quick --out "$work/demo" >"$work/demo.log" 2>&1 || { cat "$work/demo.log"; exit 1; }
for file in report.json config.json samples.jsonl tuning.png qrs.png; do
    [ -s "$work/demo/$file" ] || { cat "$work/demo.log"; echo "test_wheel: demo wrote no $file" >&2; exit 1; }
done
if grep -q "skipped" "$work/demo.log"; then
    cat "$work/demo.log"
    echo "test_wheel: the demo skipped something in a plain install" >&2
    exit 1
fi
echo "test_wheel: disco demo --quick: report and plots written in $((SECONDS - start)) s"

python -c "$(python "$root/scripts/readme_quick_start.py" "$root/README.md")"
echo "test_wheel: README quick start ran"

if [ "$suite" = 1 ]; then
    cd "$root"
    # `tests` only: the doctests of python/disco/numerics/ would import the checkout's copy.
    python -m pytest tests -q -p no:cacheprovider -m "not multiprocess" --durations=5
    if [ "$tests_extra" = test-core ]; then
        # The run above skipped the optional features' tests (pytest's summary names each
        # reason); that holds only if none of the extras came in as a dependency.
        python - <<'PY'
import importlib.util
extras = ("accelerate", "deepspeed", "peft", "datasets", "tensorboard", "wandb", "mlflow", "neptune")
present = [name for name in extras if importlib.util.find_spec(name) is not None]
assert not present, f"--without-extras, yet installed: {present}"
print("test_wheel: no optional extra installed; their tests skipped")
PY
    fi
fi
echo "test_wheel: $(python -V): passed"
