"""DPG whose target coefficient tracks the requested rate (dual ascent on the moment constraint).
(A diagnosis behind BENCHMARKS.md's "Convergence"; not a harness benchmark.)

    OMP_NUM_THREADS=1 python benches/diagnosis/convergence_dual.py EBM_DIR '{"learning_rate": 2e-4, "eta": 0.5}'

Each step tunes towards ``a exp(lambda_t phi)`` (self-normalised importance weights from the
policy's own 512 samples, DPG's gradient with baseline 1, Adam, the tuner's clipping and the
parameters' exponential average, decay 0.98), then moves ``lambda_t += eta (0.5 - rate)`` by the
step's sample rate, starting from the EBM's fitted ``lambda``. The evaluation (every ``marks``
step, the averaged policy on ``eval`` = 1,024 fresh samples) measures KL against the fitted
target ``a exp(lambda phi)``, not ``lambda_t``'s.
"""

import json
import sys
import time
from pathlib import Path

import torch

# The demo problem is shared with bench_convergence.py, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _demo_problem import evaluate, start_diagnosis, trainable
from disco.tuners.averaging import ParameterAverage

settings, problem = start_diagnosis(__doc__)
policy, base, word, lam = problem.policy, problem.base, problem.feature, problem.lam
parameters = trainable(policy.model)
optimizer = torch.optim.Adam(parameters.values(), lr=settings["learning_rate"])
average = ParameterAverage(parameters, settings.get("decay", 0.98))
batch_size = settings.get("batch", 512)
eta = settings.get("eta", 0.5)
lam_t = lam
start = time.perf_counter()
for step in range(1, settings.get("steps", 40) + 1):
    with torch.no_grad():
        samples, log_pi = policy.sample("", batch_size)
        phi = word.score(samples, "").double()
        log_a = base.log_score(samples, "").double()
    log_w = log_a + lam_t * phi - log_pi.double()
    w = torch.exp(log_w - log_w.max())
    w = w / w.mean()
    optimizer.zero_grad()
    for i in range(0, batch_size, 64):
        scores = policy.log_score(samples[i : i + 64], "", grad=True)
        (-((w[i : i + 64] - 1.0).float() * scores).sum() / batch_size).backward()
    torch.nn.utils.clip_grad_norm_(list(parameters.values()), settings.get("clip", 1.0))
    optimizer.step()
    average.update()
    lam_t += eta * (0.5 - float(phi.mean()))
    if step % 5 == 0:
        kl_policy_base = float((log_pi.double() - log_a).mean())
        print(step, {"lambda": round(lam_t, 3), "rate": round(float(phi.mean()), 3),
                     "kl_policy_base": round(kl_policy_base, 3)}, flush=True)  # fmt: skip
    if step in settings.get("marks", [20, 40]):
        row = {"step": step, "seconds": time.perf_counter() - start, "lambda": lam_t}
        with average.swapped_in():
            result = evaluate(policy, base, word, lam, settings.get("eval", 1024))
        print(json.dumps(row | result), flush=True)
