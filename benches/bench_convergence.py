"""Convergence on the demo's problem: what a policy reaches against tuning wall time.

Three contestants tune the embedded KJV GPT-2 towards ``P = a * exp(lambda * has_word('LORD'))``
(lambda fitted for a 0.5 rate, as `disco demo` does), in the same run, one after the other:

- a constant step size with the last iterate returned (what DPG does without averaging: the
  baseline that the demo's settings have to beat);
- the demo's settings (`disco.cli.demo_config`: averaged iterates);
- disco 1.1.1's ``DPGTuner`` with the constant-step settings, for as long as the demo's
  settings took.

Each is paused at four time marks and its policy evaluated on fresh samples with the same code
(the clock stops meanwhile): the rate of the word, ``KL(p ‖ pi)`` and ``KL(pi ‖ a)`` by
importance sampling from the policy, with ``log Z`` from the fit (for one binary feature whose
fitted moment is exact on the fit's samples, ``Z = 2 e^λ / (1 + e^λ)``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _demo_problem import evaluate, exact_log_z
from _models import default_model, reference_script
from disco.cli import demo_config
from disco.distributions import LMDistribution
from disco.features import word_present
from disco.tuners import KLLoss, Tuner

#: A constant step and the last iterate, at the demo's sample budget (full and --quick): the
#: plain-DPG baseline that averaging is measured against.
CONSTANT_STEP = {
    "full": {"n_steps": 150, "samples_per_context": 128},
    "quick": {"n_steps": 30, "samples_per_context": 64},
    "common": {
        "learning_rate": 2e-4,
        "sampling_batch_size": 64,
        "scoring_batch_size": 64,
        "scheduler": "constant",
        "averaging": "none",
    },
}
MARKS = 4


def ours(
    name: str,
    settings: dict[str, Any],
    target: Any,
    base: LMDistribution,
    feature: Any,
    lam: float,
    n_eval: int,
) -> dict[str, Any]:
    torch.manual_seed(0)
    policy = LMDistribution(length=20, temperature=1.0, freeze=False)
    tuner = Tuner(policy, target, KLLoss(), seed=0, **settings)
    n_steps = settings["n_steps"]
    marks, elapsed = [], 0.0
    for i in range(1, MARKS + 1):
        start = time.perf_counter()
        tuner.tune(n_steps=n_steps * i // MARKS - tuner.step_count)
        elapsed += time.perf_counter() - start
        marks.append(
            {"seconds": elapsed, "steps": tuner.step_count}
            | evaluate(policy, base, feature, lam, n_eval)
        )
    return {"name": name, "marks": marks}


def reference(
    ctx: Any,
    budget: float,
    settings: dict[str, Any],
    lam: float,
    base: Any,
    feature: Any,
    n_eval: int,
) -> dict[str, Any] | None:
    if ctx.ref_python is None:
        return None
    params = {
        "seed": 0,
        "length": 20,
        "word": "LORD",
        "coefficient": lam,
        "samples": settings["samples_per_context"],
        "scoring_size": settings["scoring_batch_size"],
        "sampling_size": settings["sampling_batch_size"],
        "learning_rate": settings["learning_rate"],
        "marks": [budget * i / MARKS for i in range(1, MARKS + 1)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        args = [default_model(), json.dumps(params), tmp]
        result = reference_script(ctx, "ref_convergence.py", args, what="DPGTuner", timeout=3600)
        policy = LMDistribution(length=20, temperature=1.0)
        marks = []
        for i, mark in enumerate(result["marks"]):
            state = torch.load(Path(tmp) / f"mark-{i}.pt", weights_only=True)
            policy.model.load_state_dict(state)
            marks.append(mark | evaluate(policy, base, feature, lam, n_eval))
    return {"name": "disco 1.1.1 DPGTuner (constant step)", "marks": marks}


def run(ctx: Any) -> str:
    mode = "quick" if ctx.quick else "full"
    cfg = demo_config(quick=ctx.quick)
    n_eval = cfg["output"]["eval_samples"]
    torch.manual_seed(0)
    base = LMDistribution(length=20, temperature=1.0)
    feature = word_present("LORD")
    target = base.constrain(
        [feature], [0.5], n_samples=cfg["fit"]["n_samples"], sampling_size=256, progress=False
    )
    lam = float(target.factors[1].coefficients[0])
    constant = CONSTANT_STEP[mode] | CONSTANT_STEP["common"]
    new = dict(cfg["tuner"])
    new.pop("loss", None)
    new.pop("seed", None)  # the tuner gets the run's seed below, as the other contestants do
    at_start = evaluate(base, base, feature, lam, n_eval)
    runs = [
        ours("ours, constant step, last iterate", constant, target, base, feature, lam, n_eval),
        ours("ours, the demo's settings", new, target, base, feature, lam, n_eval),
    ]
    budget = runs[1]["marks"][-1]["seconds"]
    ref = reference(ctx, budget, constant, lam, base, feature, n_eval)
    if ref is not None:
        runs.append(ref)
    kl_target_base = 0.5 * lam - exact_log_z(lam)
    lines = [
        "| contestant | tuning s | steps | rate | KL(p ‖ π) | KL(π ‖ a) |",
        "| :--- | ---: | ---: | ---: | ---: | ---: |",
        f"| base model (start) | 0 | 0 | {at_start['rate']:.3f} | "
        f"{at_start['kl_target_policy']:.3f} | 0 |",
    ]
    for r in runs:
        for m in r["marks"]:
            lines.append(
                f"| {r['name']} | {m['seconds']:.0f} | {m['steps']} | {m['rate']:.3f} | "
                f"{m['kl_target_policy']:.3f} | {m['kl_policy_base']:.3f} |"
            )
    settings_text = ", ".join(f"{k}={v}" for k, v in new.items())
    note = "" if ctx.ref_python else f"\n\n_{ctx.ref_note}_"
    return (
        "## Convergence\n\n"
        'The demo\'s problem (embedded KJV GPT-2, 20-token samples, the word "LORD" at a 0.5 '
        f"rate; base rate about 0.12; fitted λ = {lam:.4f}, so KL(p ‖ a) = {kl_target_base:.3f} "
        f"nats and the bar is KL(π ‖ a) ≤ {1.2 * kl_target_base:.3f}), mode `{mode}`. Each "
        "contestant is paused at four marks of its tuning time and its policy evaluated on "
        f"{n_eval} fresh samples (rate of the word; KL by importance sampling from the policy; "
        "the clock stops while evaluating). Constant step: "
        + ", ".join(f"{k}={v}" for k, v in constant.items())
        + f". The demo's settings: {settings_text}. disco 1.1.1 runs its `DPGTuner` with the "
        "constant-step settings (and its own 12-step warm-up) for as long as the demo's settings "
        "took, its "
        "weights evaluated by our code.\n\n" + "\n".join(lines) + note + "\n"
    )
