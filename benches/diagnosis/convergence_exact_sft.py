"""Forward KL from exact samples of the target: is the tuner's plateau its estimator's or the
optimisation's? (A diagnosis behind BENCHMARKS.md's "Convergence"; not a harness benchmark.)

    OMP_NUM_THREADS=1 python benches/diagnosis/convergence_exact_sft.py EBM_DIR '{"learning_rate": 2e-4, "steps": 20, "batch": 256}'

Exact samples of ``p = a * exp(lambda * phi) / Z`` come from the base by rejection (accept with
probability ``exp(lambda * (phi - 1))``, about one base sample in four), and the policy is tuned by
maximum likelihood on them with Adam and the tuner's gradient clipping: the same gradient as
DPG's in expectation, with no importance weights and no feedback from the policy into the
samples. Every ``every`` steps: ``_demo_problem.evaluate`` on ``eval`` fresh samples (512) of the
last iterate, or of the parameters' exponential average when ``decay`` is given (the tuner's
``averaging="ema"``, so the run compares with the demo's settings).
"""

import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

# The demo problem is shared with bench_convergence.py, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _demo_problem import evaluate, start_diagnosis, trainable
from disco.tuners.averaging import ParameterAverage

settings, problem = start_diagnosis(__doc__)
rng = np.random.default_rng(settings.get("seed", 0))
policy, base, lord, lam = problem.policy, problem.base, problem.feature, problem.lam
parameters = [p for p in policy.model.parameters() if p.requires_grad]
optimizer = torch.optim.Adam(parameters, lr=settings["learning_rate"])
decay = settings.get("decay")
average = ParameterAverage(trainable(policy.model), decay) if decay is not None else None


def exact_samples(n: int) -> list:
    kept: list = []
    while len(kept) < n:
        samples, _ = base.sample("", 512)
        phi = lord.score(samples, "").double().numpy()
        accept = rng.random(len(samples)) < np.exp(lam * (phi - 1.0))
        kept += [s for s, a in zip(samples, accept, strict=True) if a]
    return kept[:n]


start = time.perf_counter()
for step in range(1, settings["steps"] + 1):
    batch = exact_samples(settings["batch"])
    optimizer.zero_grad()
    for i in range(0, len(batch), 64):
        log_pi = policy.log_score(batch[i : i + 64], "", grad=True)
        (-log_pi.sum() / len(batch)).backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    if average is not None:
        average.update()
    if step % settings.get("every", 10) == 0:
        row = {"step": step, "seconds": time.perf_counter() - start}
        with average.swapped_in() if average is not None else contextlib.nullcontext():
            result = evaluate(policy, base, lord, lam, settings.get("eval", 512))
        print(json.dumps(row | result), flush=True)
