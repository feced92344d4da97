#!/usr/bin/env bash
# Builds the virtual environment that holds the original disco (PyPI `disco-generation` 1.1.1),
# which the benchmarks compare against. It is a benchmark-only dependency: the package and its
# tests never import it; only benches/_ref_runner.py and benches/ref_*.py run under it.
#
#   VENV=/tmp/discoref-venv bash benches/setup_reference_env.sh     # about 2.5 min, 2 GB
#   python benches/run.py --ref-python /tmp/discoref-venv/bin/python
#
# Why not a plain `pip install disco-generation==1.1.1`:
#  * 1.1.1 declares Requires-Python <3.11, so pip finds no release for Python 3.11; ignoring
#    that for the whole install lets pip pick dependency releases that need a newer Python.
#    So its dependencies are installed first, and the package itself alone, with
#    --no-deps --ignore-requires-python.
#  * Its LMDistribution.log_score calls GenerationMixin._get_logits_warper with one argument,
#    whose signature changed in transformers 4.42 and which 4.45 removed: 4.41.2 is the newest
#    that works. That pins tokenizers 0.19, hence huggingface-hub <1.0 and datasets <5.
#    reference-env-lock.txt is a set of versions known to install and run together.
#  * The wheel lacks disco/tuners/losses/misc/ema_baseline.py, so `import disco.tuners` fails
#    on a bare install; benches/_ref_runner.py registers a small module of ours under that
#    name before importing anything from disco (nothing to do here).
#  * Any recent torch works; pip takes a local CPU build where it has one.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${VENV:-/tmp/discoref-venv}"
PYTHON="${PYTHON:-python3.11}"

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
    echo "setup_reference_env.sh: needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 2
}
"$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pip install -q --upgrade pip
pip install -q "torch>=2.4"
pip install -q -c "$HERE/reference-env-lock.txt" \
    "transformers==4.41.2" "huggingface-hub<1.0" "datasets<5" \
    numpy scipy spacy notebook neptune-client wandb
pip install -q --no-deps --ignore-requires-python disco-generation==1.1.1
pip check
python - <<'PY'
import disco, numpy, torch, transformers
print("reference venv ready: disco", disco.__version__, "| transformers", transformers.__version__,
      "| torch", torch.__version__, "| numpy", numpy.__version__)
PY
