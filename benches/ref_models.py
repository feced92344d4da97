"""The original disco (1.1.1) on model-level work, for bench_constrain and bench_tuner.

Run with the reference venv's python: ``ref_models.py MODE MODEL_PATH JSON_PARAMS``; prints one
JSON object. Never imported by disco or its tests. Features are whole-word tests, the same
predicates as ``disco.features.word_present`` (case-insensitive).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ref_runner import install_disco_shims


def _word(word: str):  # type: ignore[no-untyped-def]
    pattern = re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)", re.IGNORECASE)
    return lambda sample, context: pattern.search(sample.text) is not None


def constrain(model: str, params: dict) -> dict:
    import torch
    from tqdm import trange as real_trange

    from disco.distributions import LMDistribution, base_distribution
    from disco.scorers import BooleanScorer

    torch.manual_seed(0)
    base = LMDistribution(model, length=params["length"])
    features = [BooleanScorer(_word(w)) for w in params["words"]]
    seen: dict[str, float] = {"iterations": 0, "error": float("nan")}

    class Counting:
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.inner = real_trange(*args, disable=True, **kwargs)

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            return False

        def __iter__(self):  # type: ignore[no-untyped-def]
            for i in self.inner:
                seen["iterations"] = i + 1
                yield i

        def set_postfix(self, err=None, **kwargs):  # type: ignore[no-untyped-def]
            seen["error"] = float(err)

        def refresh(self):  # type: ignore[no-untyped-def]
            pass

    base_distribution.trange = Counting
    base.sample(sampling_size=params["sampling_size"])  # warm-up, as on our side
    start = time.perf_counter()
    base.constrain(
        features,
        params["moments"],
        n_samples=params["n_samples"],
        sampling_size=params["sampling_size"],
    )
    return {"seconds": time.perf_counter() - start, **seen}


def tuner(model: str, params: dict) -> dict:
    import torch

    from disco.distributions import LMDistribution
    from disco.scorers import BooleanScorer, ExponentialScorer
    from disco.tuners import DPGTuner

    torch.manual_seed(0)
    base = LMDistribution(model, length=params["length"])
    target = base * ExponentialScorer([BooleanScorer(_word(params["word"]))], torch.tensor([1.0]))
    policy = LMDistribution(model, length=params["length"], freeze=False)
    times = []
    for steps in (1, 1 + params["steps"]):
        t = DPGTuner(
            policy,
            target,
            n_gradient_steps=steps,
            n_samples_per_step=params["samples"],
            scoring_size=params["scoring_size"],
            sampling_size=params["sampling_size"],
            divergence_evaluation_interval=10**6,
            learning_rate=1e-4,
        )
        start = time.perf_counter()
        t.tune()
        times.append(time.perf_counter() - start)
    return {"seconds_per_step": (times[1] - times[0]) / params["steps"]}


def _legacy_copy(model_path: str, workdir: Path) -> str:
    """A copy whose tokenizer.json the older tokenizers (0.19) can read: merges as "a b"."""
    import shutil

    target = workdir / "model"
    shutil.copytree(model_path, target)
    spec = json.loads((target / "tokenizer.json").read_text())
    merges = spec["model"].get("merges", [])
    spec["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (target / "tokenizer.json").write_text(json.dumps(spec))
    return str(target)


if __name__ == "__main__":
    mode, model_path, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    workdir = Path(tempfile.mkdtemp())
    install_disco_shims(workdir)
    model_path = _legacy_copy(model_path, workdir)
    result = {"constrain": constrain, "tuner": tuner}[mode](model_path, json.loads(raw))
    import importlib.metadata

    import torch

    result["versions"] = {
        "disco-generation": importlib.metadata.version("disco-generation"),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
    }
    print(json.dumps(result))
