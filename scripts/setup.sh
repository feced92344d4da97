# Sourced by test.sh: creates or reuses ./.venv, installs the pinned requirements (torch included)
# and builds the Rust extension in place (`maturin develop`, the `release` profile), then prints
# how long that took.
setup_start=$SECONDS
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
echo "setup.sh: $venv ready in $((SECONDS - setup_start)) s"
