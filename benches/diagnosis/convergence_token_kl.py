"""Reverse KL with the per-token KL to the base computed exactly: does it cut the drift?
(A diagnosis behind BENCHMARKS.md's "Convergence"; not a harness benchmark.)

    OMP_NUM_THREADS=1 python benches/diagnosis/convergence_token_kl.py EBM_DIR '{"learning_rate": 2e-4, "steps": 40}'

For ``P = a · exp(r)``, ``KL(pi ‖ p) = E_pi[sum_t KL(pi(.|x_<t) ‖ a(.|x_<t))] - E_pi[r] + log Z``.
Its gradient is ``E_pi[sum_t grad KL_t]`` (exact over the vocabulary at each visited prefix) plus
the score-function terms ``(sum_{s>t} KL_s - r(x) - b_t) grad log pi(x_t | x_<t)``, ``b_t`` a
leave-one-out mean over the batch. The KL part pulls every visited next-token distribution back
to the base with no sampling noise, where the sequence-level estimator only does so on average.
"""

import json
import sys
import time
from pathlib import Path

import torch

# The demo problem is shared with bench_convergence.py, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _demo_problem import evaluate, padded, start_diagnosis, token_batch, trainable
from disco.tuners.averaging import ParameterAverage

settings, problem = start_diagnosis(__doc__)
policy, base, lord, lam = problem.policy, problem.base, problem.feature, problem.lam
model, base_model = policy.model, base.model
parameters = trainable(model)
optimizer = torch.optim.Adam(parameters.values(), lr=settings["learning_rate"])
average = ParameterAverage(
    parameters, settings.get("decay", 0.98), power=settings.get("power", 0.0)
)
batch_size = settings.get("batch", 512)
kl_weight = settings.get("kl_weight", 1.0)


start = time.perf_counter()
for step in range(1, settings["steps"] + 1):
    with torch.no_grad():
        samples, _ = policy.sample("", batch_size)
        r = lam * lord.score(samples, "").double()
    optimizer.zero_grad()
    parts = []
    for i in range(0, batch_size, 64):
        ids, mask = token_batch(policy, samples[i : i + 64])
        with torch.no_grad():
            log_a = torch.log_softmax(
                base_model(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1
            )
        log_pi = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1)
        chosen = log_pi.gather(-1, ids[:, 1:, None]).squeeze(-1)
        kl = (log_pi.exp() * (log_pi - log_a)).sum(-1) * mask
        parts.append((kl, chosen * mask, mask))
    kl, chosen, mask = (padded([p[i] for p in parts]) for i in range(3))
    kl_d = kl.detach().double()
    later = kl_d.flip(1).cumsum(1).flip(1) - kl_d  # sum over s > t
    ret = kl_weight * later - r[:, None]
    loo = (ret.sum(0, keepdim=True) - ret) / (batch_size - 1)
    advantage = ((ret - loo) * mask).float()
    loss = (kl_weight * kl.sum() + (advantage * chosen).sum()) / batch_size
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(parameters.values()), settings.get("clip", 1.0))
    optimizer.step()
    average.update()
    if step % 10 == 0:
        print(
            step,
            round(float(kl_d.sum(1).mean()), 3),
            round(float((r > 0).double().mean()), 3),
            flush=True,
        )
    if step in settings.get("marks", [20, 40]):
        row = {"step": step, "seconds": time.perf_counter() - start}
        with average.swapped_in():
            print(
                json.dumps(row | evaluate(policy, base, lord, lam, settings.get("eval", 512))),
                flush=True,
            )
