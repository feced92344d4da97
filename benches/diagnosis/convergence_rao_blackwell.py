"""Three forward-KL estimators that take part of DPG's gradient out of the sampling noise.
(A diagnosis behind BENCHMARKS.md's "Convergence"; not a harness benchmark.)

    OMP_NUM_THREADS=1 python benches/diagnosis/convergence_rao_blackwell.py EBM_DIR '{"mode": "decided", "learning_rate": 2e-4}'

Each estimates ``grad KL(p ‖ pi) = -E_p[sum_t grad log pi(x_t | x_<t)]`` for ``p = a exp(lambda phi) / Z``
from the policy's own samples (the first two unbiased), with Adam, the tuner's clipping and the parameters'
exponential average (decay 0.98), 512 samples a step:

- ``decided``: once the prefix ``x_<t`` decides the feature (here: its text already holds the
  whole word "LORD", followed by a character that ends it), every continuation has the same
  ``exp(lambda phi)``, so ``p(. | x_<t) = a(. | x_<t)`` and the token's sampled score is replaced by
  its exact expectation ``sum_v a(v | x_<t) grad log pi(v | x_<t)`` (weighted by the sequence's
  importance weight ``w = p/pi``). The undecided tokens keep DPG's ``(w - mean w)``.
- ``base_split``: ``exp(lambda phi) = c + (exp(lambda phi) - c)``; the ``c`` part is
  ``c E_a[grad log pi]``, computed token by token as the cross-entropy from the base's next-token
  distribution at every visited prefix (weighted by the prefix's ``a/pi``, self-normalised per
  position); only the rest, ``(a/pi)(exp(lambda phi) - c)``, weighs the sampled score. With
  ``c = 1`` only samples with the word carry sampling noise.
- ``value``: each token's score is weighted by its own advantage,
  ``(a/pi)(x_<t) [(a/pi)(x_t | x_<t) V(x_<=t) - V(x_<t)] / Z`` with ``V(h) = E_a[exp(lambda phi) | h]``
  (the exact per-token split of DPG's weight), ``V`` approximated by a critic that knows the
  feature's structure: ``e^lambda`` once the prefix decides it, ``exp(lambda phi)`` for a whole
  sample, else ``1 + (e^lambda - 1) r(t)`` with ``r(t)`` the base's rate of samples that get the word
  after an undecided prefix of ``t`` tokens (from ``critic_samples``, 4,096, base samples). Biased
  wherever the context moves ``V`` beyond the position; almost none of DPG's sampling noise.

Every ``marks`` step: ``_demo_problem.evaluate`` of the averaged policy on ``eval`` (1,024) fresh
samples.
"""

import json
import math
import re
import sys
import time
from pathlib import Path

import torch

# The demo problem is shared with bench_convergence.py, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _demo_problem import (
    WORD,
    evaluate,
    exact_log_z,
    padded,
    start_diagnosis,
    token_batch,
    trainable,
)
from disco.tuners.averaging import ParameterAverage

settings, problem = start_diagnosis(__doc__)
mode = settings["mode"]
if mode not in ("decided", "base_split", "value"):
    raise ValueError(f"mode must be 'decided', 'base_split' or 'value', got {mode!r}")
policy, base, word, lam = problem.policy, problem.base, problem.feature, problem.lam
log_z = exact_log_z(lam)
model, base_model = policy.model, base.model
parameters = trainable(model)
optimizer = torch.optim.Adam(parameters.values(), lr=settings["learning_rate"])
average = ParameterAverage(parameters, settings.get("decay", 0.98))
batch_size = settings.get("batch", 512)
c = settings.get("c", 1.0)
# The feature's own test (a whole word, any case), and "decided": a character follows the match.
pattern = re.compile(r"(?<!\w)" + re.escape(WORD) + r"(?!\w)", re.IGNORECASE)


def decided_from(token_ids: list[int]) -> int:
    """The length of the shortest prefix that decides the feature (past the end if none does)."""
    for k in range(1, len(token_ids) + 1):
        text = policy.tokenizer.decode(token_ids[:k])
        match = pattern.search(text)
        if match is not None and match.end() < len(text):
            return k
    return len(token_ids) + 1


def prefix_values(token_ids: list[int], phi: float) -> list[float]:
    """The critic's ``V`` after each prefix length ``0 .. len(token_ids)`` of one sample."""
    decided = decided_from(token_ids)
    values = [
        e_lambda if decided <= t else 1.0 + (e_lambda - 1.0) * float(undecided_rate[t])
        for t in range(len(token_ids))
    ]
    return [*values, e_lambda if phi > 0 else 1.0]  # the whole sample: exp(lambda phi) exactly


e_lambda = float(torch.exp(torch.tensor(lam)))
if mode == "value":
    with torch.no_grad():
        reference, _ = base.sample("", settings.get("critic_samples", 4096))
        reference_phi = word.score(reference, "").double()
    reference_decided = torch.tensor([decided_from(list(s.token_ids)) for s in reference])
    undecided_rate = torch.zeros(max(len(s.token_ids) for s in reference) + 2, dtype=torch.float64)
    for t in range(len(undecided_rate)):
        alive = reference_decided > t
        undecided_rate[t] = reference_phi[alive].mean() if alive.any() else 0.0

start = time.perf_counter()
for step in range(1, settings.get("steps", 40) + 1):
    with torch.no_grad():
        samples, _ = policy.sample("", batch_size)
        phi = word.score(samples, "").double()
    optimizer.zero_grad()
    keys = ("pi", "a", "expected", "mask", "dec", "value")
    columns: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for i in range(0, batch_size, 64):
        chunk = samples[i : i + 64]
        ids, mask = token_batch(policy, chunk)
        decided = torch.zeros_like(mask)
        if mode == "decided":
            for j, s in enumerate(chunk):
                decided[j, decided_from(list(s.token_ids)) : len(s.token_ids)] = True
        with torch.no_grad():
            log_a = torch.log_softmax(
                base_model(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1
            )
        log_pi = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1)
        columns["pi"].append(log_pi.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask)
        columns["a"].append(log_a.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask)
        columns["expected"].append((log_a.exp() * log_pi).sum(-1) * mask)
        columns["mask"].append(mask)
        columns["dec"].append(decided)
        if mode == "value":
            values = torch.zeros(len(chunk), ids.shape[1], dtype=torch.float64)
            for j, s in enumerate(chunk):
                row = prefix_values(list(s.token_ids), float(phi[i + j]))
                values[j, : len(row)] = torch.tensor(row, dtype=torch.float64)
            columns["value"].append(values)
    chosen, chosen_a, expected = (padded(columns[k]) for k in ("pi", "a", "expected"))
    mask, decided = padded(columns["mask"]), padded(columns["dec"])
    token_log_ratio = (chosen_a - chosen).detach().double()  # log a/pi per token
    log_a_over_pi = token_log_ratio.sum(1)
    # a/pi of each token's prefix x_<t, self-normalised per position (base_split and value)
    prefix = torch.exp(token_log_ratio.cumsum(1) - token_log_ratio) * mask
    prefix = prefix / (prefix.sum(0) / mask.sum(0).clamp(min=1))
    if mode == "decided":
        w = torch.exp(log_a_over_pi + lam * phi - log_z)
        undecided = (mask & ~decided).float()
        loss = -(
            ((w - w.mean()).float() * (chosen * undecided).sum(1)).sum()
            + (w.float() * (expected * decided.float()).sum(1)).sum()
        )
    elif mode == "value":
        values = padded(columns["value"])  # one column more than the tokens: V after each prefix
        advantage = prefix * (torch.exp(token_log_ratio) * values[:, 1:] - values[:, :-1]) * mask
        loss = -((advantage / math.exp(log_z)).float() * chosen).sum()
    else:
        rest = torch.exp(log_a_over_pi) * (torch.exp(lam * phi) - c)
        loss = -(c * (prefix.float() * expected).sum() + (rest.float() * chosen.sum(1)).sum())
    (loss / batch_size).backward()
    torch.nn.utils.clip_grad_norm_(list(parameters.values()), settings.get("clip", 1.0))
    optimizer.step()
    average.update()
    if step % 10 == 0:
        print(step, {"kl_policy_base": round(float(-log_a_over_pi.mean()), 3),
                     "rate": round(float(phi.mean()), 3)}, flush=True)  # fmt: skip
    if step in settings.get("marks", [20, 40]):
        row = {"step": step, "seconds": time.perf_counter() - start}
        with average.swapped_in():
            result = evaluate(policy, base, word, lam, settings.get("eval", 1024))
        print(json.dumps(row | result), flush=True)
