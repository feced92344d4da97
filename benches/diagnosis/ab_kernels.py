"""Interleaved A/B timing of the Rust kernels against another build; prints JSON.

Written to check that reorganising the core's divergence, error and solver code cost no speed
(BENCHMARKS.md, "Consolidation"): run it alternately against two builds, e.g. an older
checkout with its built ``_core`` and this one, a few rounds each, and compare the medians:

    PYTHONPATH=OLD/python python benches/diagnosis/ab_kernels.py > old.json
    PYTHONPATH=python python benches/diagnosis/ab_kernels.py > new.json

Each value is the median seconds per call over interleaved batches (``benches/_timing.py``).
On a busy machine the load swings between processes more than the builds differ; with
``--against OLD/python/disco/_core.abi3.so`` both builds' kernels run in this one process,
their batches interleaved (the same Python wrappers call one core or the other), and each case
prints its two medians and their ratio, before / after.
"""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

# The timing helper of the benchmarks, one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _timing
from disco import numerics as nm

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--against", metavar="CORE", help="the `_core` extension of the other build")
parser.add_argument("--repeats", type=int, default=5, help="interleaved batches per case")
args = parser.parse_args()
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
if args.against is None:
    timings = _timing.measure(cases, repeats=args.repeats, batch_s=0.05)
    print(json.dumps({name: t.median for name, t in timings.items()}))
else:
    spec = importlib.util.spec_from_file_location("_core", args.against)
    assert spec is not None and spec.loader is not None, args.against
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    # The numerics modules call the core through their module-level `_core`.
    holders = [m for n, m in sys.modules.items() if n.startswith("disco.numerics.")]
    holders = [m for m in holders if hasattr(m, "_core")]
    this = holders[0]._core

    def on(core, fn):
        def call():
            for module in holders:
                module._core = core
            return fn()

        return call

    both = {
        f"{side} {name}": on(core, fn)
        for name, fn in cases.items()
        for side, core in (("before", other), ("after", this))
    }
    timings = _timing.measure(both, repeats=args.repeats, batch_s=0.05)
    out = {}
    for name in cases:
        before, after = timings[f"before {name}"].median, timings[f"after {name}"].median
        out[name] = {"before": before, "after": after, "ratio": before / after}
    print(json.dumps(out))
