"""The original disco (1.1.1) DPGTuner on the demo's problem for a wall-time budget.

Run with the reference venv's python: ``ref_convergence.py MODEL_PATH JSON_PARAMS OUT_DIR``.
It builds ``P = a * exp(lambda * has_word)`` with the coefficient given (the one our fit
found), tunes a policy with 1.1.1's ``DPGTuner`` step by step (its own ``_step``, the body of
its ``tune`` loop, so that the clock can be read between steps), and at each time mark
writes the policy's weights (``mark-I.pt``, a torch state dict) for the caller to evaluate
with the same code as our contestants. Prints one JSON object: steps and seconds per mark.
Never imported by disco or its tests.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ref_runner import install_disco_shims
from ref_models import _legacy_copy, _word


def run(model: str, params: dict, out: Path) -> dict:
    import torch

    from disco.distributions import LMDistribution
    from disco.scorers import BooleanScorer, ExponentialScorer
    from disco.tuners import DPGTuner

    torch.manual_seed(params["seed"])
    settings = {"length": params["length"], "temperature": 1.0}
    base = LMDistribution(model, **settings)
    feature = BooleanScorer(_word(params["word"]))
    target = base * ExponentialScorer([feature], torch.tensor([params["coefficient"]]))
    policy = LMDistribution(model, freeze=False, **settings)
    tuner = DPGTuner(
        policy,
        target,
        n_gradient_steps=10**6,
        n_samples_per_step=params["samples"],
        scoring_size=params["scoring_size"],
        sampling_size=params["sampling_size"],
        learning_rate=params["learning_rate"],
        divergence_evaluation_interval=10**6,
    )
    marks = []
    steps = 0
    start = time.perf_counter()
    for i, mark in enumerate(params["marks"]):
        while time.perf_counter() - start < mark:
            tuner._step()
            steps += 1
        marks.append({"seconds": time.perf_counter() - start, "steps": steps})
        paused = time.perf_counter()
        torch.save(policy.network.state_dict(), out / f"mark-{i}.pt")
        start += time.perf_counter() - paused  # saving is not tuning time
    return {"marks": marks}


if __name__ == "__main__":
    model_path, raw, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    workdir = Path(tempfile.mkdtemp())
    install_disco_shims(workdir)
    result = run(_legacy_copy(model_path, workdir), json.loads(raw), out_dir)
    import importlib.metadata

    import torch

    result["versions"] = {
        "disco-generation": importlib.metadata.version("disco-generation"),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
    }
    print(json.dumps(result))
