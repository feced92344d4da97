"""Online DPG with a per-token baseline from a linear critic: does it cut the gradient's noise?
(A diagnosis behind BENCHMARKS.md's "Convergence"; not a harness benchmark.)

    OMP_NUM_THREADS=1 python benches/diagnosis/convergence_token_baseline.py EBM_DIR '{"learning_rate": 2e-4, "steps": 20, "critic": true}'

The forward-KL gradient ``sum_t E_pi[w(x) grad log pi(x_t | x_<t)]`` is unchanged by subtracting
any ``c_t(x_<t)`` from ``w`` at token ``t``, since ``E_pi[grad log pi(x_t | x_<t) | x_<t] = 0``.
Here ``c_t`` is a ridge regression of ``w`` on the policy's last hidden state at ``t - 1``, fitted
on the previous step's batch (so it is independent of the current samples); ``critic: false``
uses the tuner's scalar moving-average baseline instead. Prints the critic's R² on its own batch
and ``_demo_problem.evaluate`` of the averaged policy (EMA 0.98, averaging_power 3).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

# The demo problem is shared with bench_convergence.py, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _demo_problem import evaluate, start_diagnosis, token_batch, trainable
from disco.tuners.averaging import ParameterAverage

settings, problem = start_diagnosis(__doc__)
policy, base, lord, lam = problem.policy, problem.base, problem.feature, problem.lam
model = policy.model
parameters = trainable(model)
optimizer = torch.optim.Adam(parameters.values(), lr=settings["learning_rate"])
average = ParameterAverage(parameters, 0.98, power=3.0)
batch_size = settings.get("batch", 512)


def token_log_probs(samples):
    """Per-token log pi (0 past each sample's end), the mask, and the hidden states at t - 1."""
    ids, mask = token_batch(policy, samples)
    out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    log_probs = torch.log_softmax(out.logits[:, :-1].float(), -1)
    chosen = log_probs.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return torch.where(mask, chosen, 0.0), mask, out.hidden_states[-1][:, :-1]


critic = None
recent_means: list[float] = []
start = time.perf_counter()
for step in range(1, settings["steps"] + 1):
    with torch.no_grad():
        samples, log_q = policy.sample("", batch_size)
        phi = lord.score(samples, "").double().numpy()
        log_a = base.log_score(samples, "").double().numpy()
    w = np.exp(log_a + lam * phi - problem.log_z - log_q.double().numpy())
    optimizer.zero_grad()
    states, targets = [], []
    for i in range(0, batch_size, 64):
        log_pi, mask, hidden = token_log_probs(samples[i : i + 64])
        hidden = hidden.detach().double()
        w_chunk = torch.tensor(w[i : i + 64])
        if settings.get("critic") and critic is not None:
            baseline = hidden @ critic[:-1] + critic[-1]
        else:
            scalar = float(np.mean(recent_means[-32:])) if recent_means else 0.0
            baseline = torch.full(mask.shape, scalar, dtype=torch.float64)
        coefficient = (w_chunk[:, None] - baseline) * mask
        (-(coefficient.float() * log_pi).sum() / batch_size).backward()
        states.append(hidden[mask])
        targets.append(w_chunk[:, None].expand_as(mask)[mask])
    recent_means.append(float(w.mean()))
    if settings.get("critic"):
        x = torch.cat([torch.cat(states), torch.ones(sum(len(s) for s in states), 1).double()], 1)
        y = torch.cat(targets)
        gram = x.T @ x + settings.get("ridge", 1.0) * torch.eye(x.shape[1], dtype=torch.float64)
        critic = torch.linalg.solve(gram, x.T @ y)
        r2 = float(1 - ((y - x @ critic) ** 2).mean() / y.var())
    torch.nn.utils.clip_grad_norm_(list(parameters.values()), 1.0)
    optimizer.step()
    average.update()
    if step % settings.get("every", 10) == 0:
        row = {"step": step, "seconds": time.perf_counter() - start}
        if settings.get("critic"):
            row["critic_r2"] = r2
        with average.swapped_in():
            print(json.dumps(row | evaluate(policy, base, lord, lam, 512)), flush=True)
