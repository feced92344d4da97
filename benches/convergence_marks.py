"""Tune the demo's problem with given settings; evaluate the returned policy at step marks.

The issue-15 diagnosis runs behind BENCHMARKS.md's "Convergence" (not a harness benchmark):

    python benches/convergence_marks.py EBM_DIR '{"samples_per_context": 512, "_marks": [20, 40]}' OUT.json

Settings are TunerConfig names (defaults: the old demo's 128 samples, learning rate 2e-4, EMA
0.98) plus ``_marks`` (steps at which to evaluate), ``_proposal_base`` (offline, the proposal
fixed at the base model) and ``_adam`` (keyword arguments for torch's Adam, e.g. ``eps``) and ``_trainable`` (a regular expression:
only the policy's parameters whose names match are tuned). At each
mark: the rate of "LORD" on 512 fresh samples of the returned (averaged) policy, KL(p ‖ pi) by
importance sampling from them (log Z from the fitted λ: Z = 2 e^λ/(1 + e^λ)) and KL(pi ‖ a);
every tenth step prints the tuner's own estimates. One thread, so runs side by side compare.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from disco.distributions import LMDistribution
from disco.features import feature
from disco.io import load_ebm
from disco.tuners import KLLoss, Tuner

ebm_dir, settings, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
torch.manual_seed(0)
target = load_ebm(ebm_dir)
base = LMDistribution(length=20, temperature=1.0)
policy = LMDistribution(length=20, temperature=1.0, freeze=False)
lord = feature({"type": "word", "word": "LORD"})
lam = float([f for f in target.factors][1].coefficients[0])
log_z = math.log(2.0) + lam - math.log1p(math.exp(lam))
marks = settings.pop("_marks", [50, 100, 150])
fixed_base = settings.pop("_proposal_base", False)
adam = settings.pop("_adam", None)
trainable = settings.pop("_trainable", None)
if trainable is not None:  # a regular expression: only parameters whose names match are tuned
    import re

    for name, parameter in policy.model.named_parameters():
        parameter.requires_grad_(re.search(trainable, name) is not None)
cfg = dict(
    n_steps=max(marks),
    samples_per_context=128,
    learning_rate=2e-4,
    sampling_batch_size=64,
    scoring_batch_size=64,
    averaging="ema",
    averaging_decay=0.98,
)
cfg.update(settings)
kw = {}
if fixed_base:
    cfg.update(proposal="offline", proposal_update_interval=10**9)
    kw["proposal_distribution"] = base


class EveryTenthStep:
    def start(self, c):
        pass

    def close(self):
        pass

    def log(self, step, m):
        if step % 10 == 0:
            print(
                step,
                {
                    k: round(m[k], 3)
                    for k in (
                        "moment/word:LORD",
                        "kl_target_policy",
                        "kl_policy_base",
                        "iterate/moment/word:LORD",
                        "time/step",
                    )
                    if k in m
                },
                flush=True,
            )


tuner = Tuner(
    policy,
    target,
    KLLoss(),
    base=base,
    loggers=[EveryTenthStep()],
    features=(lord,),
    kl_from_base=True,
    **cfg,
    **kw,
)
if adam:
    tuner.optimizer = torch.optim.Adam(
        list(tuner.parameters.values()), lr=cfg["learning_rate"], **adam
    )
    tuner.scheduler = torch.optim.lr_scheduler.LambdaLR(tuner.optimizer, tuner._lr_factor)


def evaluate(n=512):
    with torch.no_grad():
        xs, lq = policy.sample("", n)
        phi = lord.score(xs, "").double().numpy()
        la = base.log_score(xs, "").double().numpy()
    lq = lq.double().numpy()
    log_p = la + lam * phi - log_z
    w = np.exp(log_p - lq)
    counts = np.array([x.text.lower().count("lord") for x in xs])
    return dict(
        rate=float(phi.mean()),
        multiples=float((counts >= 2).sum() / max(1, (counts >= 1).sum())),
        mean_length=float(np.mean([len(x.token_ids) for x in xs])),
        kl_p_pi=float(np.mean(w * (log_p - lq))),
        kl_pi_a=float(np.mean(lq - la)),
        w_mean=float(w.mean()),
    )


rows = []
t0 = time.perf_counter()
done = 0
for m in marks:
    tuner.tune(m - done)
    done = m
    el = time.perf_counter() - t0
    r = evaluate()
    r.update(step=m, tune_s=el)
    rows.append(r)
    print(json.dumps(r), flush=True)
    t0 += time.perf_counter() - t0 - el  # exclude eval time
hist = tuner.history
Path(out).write_text(
    json.dumps(
        dict(
            settings=sys.argv[2],
            rows=rows,
            curve=[
                {
                    k: h.get(k)
                    for k in (
                        "moment/word:LORD",
                        "kl_target_policy",
                        "kl_policy_base",
                        "iterate/moment/word:LORD",
                        "ess",
                        "time/step",
                    )
                }
                for h in hist
            ],
        )
    )
)
