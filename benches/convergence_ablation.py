"""One tuning run of the demo's problem with given settings, evaluated on fresh samples.

The ablation behind BENCHMARKS.md's "Convergence" table (not a harness benchmark):

    OMP_NUM_THREADS=1 python benches/convergence_ablation.py EBM_DIR '{"averaging": "none"}' OUT.json

``EBM_DIR`` is a fitted demo EBM (``disco demo`` writes one to ``disco-demo/ebm``). Tunes the
embedded model with the demo's sizes (150 steps of 128 samples, learning rate 2e-4) updated by
the JSON settings, then reports the rate of "LORD" on 1,024 fresh samples of the tuned policy,
KL(p ‖ pi) by importance sampling from them (log Z from the fit: Z = 2 e^λ/(1 + e^λ) for one
binary feature fitted exactly to 0.5) and KL(pi ‖ a).
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from disco import numerics
from disco.distributions import LMDistribution
from disco.features import feature
from disco.io import load_ebm
from disco.tuners import KLLoss, Tuner

ebm_dir, settings, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
target = load_ebm(ebm_dir)
base = LMDistribution(length=20, temperature=1.0)
policy = LMDistribution(length=20, temperature=1.0, freeze=False)
lord = feature({"type": "word", "word": "LORD"})
lam = float([f for f in target.factors][1].coefficients[0])
cfg = dict(
    n_steps=150,
    samples_per_context=128,
    learning_rate=2e-4,
    sampling_batch_size=64,
    scoring_batch_size=64,
)
cfg.update(settings)
t0 = time.perf_counter()
tuner = Tuner(policy, target, KLLoss(), base=base, features=(lord,), kl_from_base=True, **cfg)
hist = tuner.tune()
tune_s = time.perf_counter() - t0
# fresh evaluation
with torch.no_grad():
    xs, lq = policy.sample("", 1024)
    phi = lord.score(xs, "").double().numpy()
    la = base.log_score(xs, "").double().numpy()
lq = lq.double().numpy()
rate = float(phi.mean())
log_p_unnorm = la + lam * phi
# log Z exactly-ish: Z = E_a[exp(lam phi)] with the base rate from many base samples in the fit
ess_lz = numerics.logmeanexp(log_p_unnorm - lq)
# the fit meets moment 0.5 exactly on its samples: e^lam = (1-m_a)/m_a, so Z = 2 e^lam/(1+e^lam)
log_z = math.log(2.0) + lam - math.log1p(math.exp(lam))
log_p = log_p_unnorm - log_z
w = np.exp(log_p - lq)
kl_p_pi = float(np.mean(w * (log_p - lq)))
res = dict(
    settings=settings,
    tune_s=tune_s,
    rate=rate,
    kl_p_pi_fresh=kl_p_pi,
    kl_p_a=0.5 * lam - log_z,
    w_mean=float(w.mean()),
    kl_pi_a=float(np.mean(lq - la)),
    log_z_is=float(ess_lz),
    log_z_tuner=tuner.log_z(""),
    last={
        k: hist[-1].get(k)
        for k in (
            "moment/" + lord.name,
            "kl_target_policy",
            "kl_policy_base",
            "iterate/moment/" + lord.name,
            "iterate/kl_target_policy",
            "iterate/kl_policy_base",
        )
    },
    curve=[
        {
            k: h.get(k)
            for k in (
                "time/step",
                "moment/" + lord.name,
                "kl_target_policy",
                "kl_policy_base",
                "iterate/moment/" + lord.name,
                "iterate/kl_policy_base",
                "lr",
            )
        }
        for h in hist
    ],
)
Path(out).write_text(json.dumps(res))
print(json.dumps({k: v for k, v in res.items() if k != "curve"}))
