"""Interleaved A/B timing of the Rust kernels against another build; prints JSON.

Written to check that reorganising the core's divergence, error and solver code cost no speed
(BENCHMARKS.md, "Consolidation"): run it alternately against two builds, e.g. an older
checkout with its built ``_core`` and this one, a few rounds each, and compare the medians:

    PYTHONPATH=OLD/python python benches/diagnosis/ab_kernels.py > old.json
    PYTHONPATH=python python benches/diagnosis/ab_kernels.py > new.json

Each value is the median seconds per call over interleaved batches (``benches/_timing.py``).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# The timing helper of the benchmarks, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _timing
from disco import numerics as nm

argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
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
phi6 = rng.normal(size=(N, 6))


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
    "tv_distance N=1e5": lambda: nm.tv_distance(lp, lpi, lq, 0.5),
    "weighted_moments N=1e5 K=3": lambda: nm.weighted_moments(lr, phi),
    "weighted_moments N=1e5 K=6": lambda: nm.weighted_moments(lr, phi6),
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
timings = _timing.measure(cases, repeats=5, batch_s=0.05)
print(json.dumps({name: t.median for name, t in timings.items()}))
