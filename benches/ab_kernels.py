"""Interleaved A/B timing of the kernels issue 11 reorganised; prints JSON (seconds per call).

Run it alternately against two builds, e.g. the old checkout with its built ``_core`` and this one:
``PYTHONPATH=OLD/python python benches/ab_kernels.py > old.json`` then
``PYTHONPATH=python python benches/ab_kernels.py > new.json``, a few rounds each, and compare
medians (BENCHMARKS.md, "Consolidation").
"""

import json
import time

import numpy as np

from disco import numerics as nm

rng = np.random.default_rng(0)


def arrays(n):
    q = rng.normal(-3, 1, n)
    return q + rng.normal(1, 1, n), q + rng.normal(0, 0.5, n), q


N = 100_000
lp, lpi, lq = arrays(N)
sp, spi, sq = arrays(256)
phi_s = rng.normal(size=(256, 3))
la_s = sq + rng.normal(0, 0.3, 256)
phi = rng.normal(size=(N, 3))
targets = phi[:, :].mean(0) + 0.05
lr = rng.normal(size=N)
betas = np.exp(np.linspace(-2, 2, 100))


def per_metric():
    z = 0.3
    nm.kl_divergence(sp, spi, sq, z)
    nm.kl_divergence(sp, sq, sq, z)
    nm.tv_distance(sp, sq, sq, z)
    nm.js_divergence(sp, sq, sq, z)
    nm.tv_distance(sp, spi, sq, z)
    nm.js_divergence(sp, spi, sq, z)
    nm.effective_sample_size(sp - sq)
    nm.f_divergence("kl", spi, sp, sq, z)
    nm.weighted_moments(spi - sq, phi_s)
    nm.reverse_kl_divergence(la_s, spi, sq, 0.0)


cases = {
    "kl_divergence N=1e5": lambda: nm.kl_divergence(lp, lpi, lq),
    "js_divergence N=1e5": lambda: nm.js_divergence(lp, lpi, lq, 0.5),
    "f_divergence kl N=1e5": lambda: nm.f_divergence("kl", lpi, lp, lq, 0.5),
    "f_pseudo_rewards N=1e5": lambda: nm.f_pseudo_rewards("reverse_kl", lpi, lp, lq, 0.5),
    "tuner metrics, per-metric calls N=256": per_metric,
    "fit_coefficients N=1e5 K=3": lambda: nm.fit_coefficients(phi, targets),
    "QRSIndex build + curve(100) N=1e5": lambda: nm.QRSIndex(lr).curve(betas),
}
if hasattr(nm, "tuner_metrics"):
    cases["tuner metrics, one call N=256"] = lambda: nm.tuner_metrics(
        "kl", sp, spi, sq, 0.3, phi_s, la_s
    )
out = {}
for name, f in cases.items():
    f()
    loops = 1
    while True:
        t = time.perf_counter()
        for _ in range(loops):
            f()
        dt = time.perf_counter() - t
        if dt > 0.05:
            break
        loops *= 2
    best = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(loops):
            f()
        best.append((time.perf_counter() - t) / loops)
    out[name] = sorted(best)[2]
print(json.dumps(out))
