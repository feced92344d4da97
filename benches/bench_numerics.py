"""The log-space kernels of ``disco.numerics`` against numpy, scipy, torch and disco 1.1.1.

For each N and each kernel, every contestant computes the same quantity on the same float64
inputs; its result is checked against an extended-precision (``np.longdouble``) evaluation of
the formula before it is timed. Ours is called through the public ``disco.numerics`` functions
(conversion checks included); torch runs on CPU in float64 with its default intra-op threads;
the reference disco runs in its own venv (``ref_numerics.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy
import scipy.special as sp
import torch

from _harness import (
    TIMES,
    CheckError,
    Context,
    RefResult,
    RefTask,
    fmt_n,
    fmt_ratio,
    fmt_time,
    table,
)
from _timing import Timing
from disco import _core
from disco import numerics as dn

SIZES_FULL = (100, 10_000, 100_000, 1_000_000, 10_000_000)
SIZES_QUICK = (100, 10_000, 1_000_000)
K = 4
SEED = 20_241
KERNELS = (
    "logsumexp",
    "logmeanexp",
    "normalized_weights",
    "effective_sample_size",
    "weighted_moments",
    "kl_divergence",
    "tv_distance",
    "js_divergence",
)
CONTESTANTS = ("ours", "numpy", "scipy", "torch", "disco 1.1.1")
#: Tolerance for float64 contestants against the long-double value.
RTOL = 1e-9
#: disco 1.1.1 divides by a separately exponentiated Z (KL: -log Z + mean(...)/Z) and casts
#: the JS mixture to float32, so it is held to looser tolerances.
REF_RTOL = {"js_divergence": 2e-3}
REF_RTOL_DEFAULT = 1e-8
REF_FN = {
    "logmeanexp": "logmeanexp",
    "normalized_weights": "normalized_weights",
    "weighted_moments": "weighted_moments",
    "kl_divergence": "kl",
    "tv_distance": "tv",
    "js_divergence": "js",
}


HOW = """
How ours gets there (rust/src/vexp.rs, logspace.rs, divergence.rs): the exponential is a
branch-free polynomial evaluated with fused multiply-adds, compiled for AVX-512, AVX2+FMA and
baseline x86-64 and picked at run time, so eight (AVX-512) samples are exponentiated per
instruction instead of one libm call each; each estimate is one or two fused passes over its
inputs (a scan for the maxima and the validity of every input, then one pass that sums all
terms), reading each array once per pass and allocating nothing, where the numpy formulas
build four to eight temporary arrays; sums run in eight lanes inside blocks of 512 and are
compensated across blocks, so the error does not grow with N; from 262 144 samples on, the passes are split into fixed
chunks over the cores (rayon), with a deterministic reduction. That threshold is where two
threads start to win here: the pool's workers sleep between calls and waking them costs
30-100 µs on these machines, whereas torch timed in a tight loop keeps its OpenMP workers
spinning and pays nothing, which is why torch (and disco 1.1.1, whose estimators are one or two
torch passes without the max-shift that log-space safety needs) can win at N = 1e5 to 1e6. What numpy, scipy and torch pay
on top is allocation and extra passes (scipy's `logsumexp` also goes through its array-API
layer and its handling of weights, signs and edge cases; torch adds dispatch overhead and, with two threads on a
busy machine, waits on its OpenMP team). What we pay is the conversion and argument checks of
`disco.numerics` (see the call overhead below), and a thread that the operating system
deschedules stalls a parallel pass until it returns: on a loaded machine (see the load
averages) the 2-thread rows at N >= 1e5 are the noisiest. torch, and disco 1.1.1 which runs
on torch, suffer most from that: their times at small N come in multiples of a scheduler
time slice (their OpenMP workers wait for a core), far above what they take on an idle machine.
"""


# -- inputs --------------------------------------------------------------------------------


def make_inputs(n: int) -> dict[str, Any]:
    """Log-scores shaped like a sequence model's: proposal log-probs around -30 (sd 3), a
    policy near the proposal, an unnormalised target 5 nats up; K features (two binary, two
    real)."""
    rng = np.random.default_rng(SEED + n)
    x = rng.normal(-25.0, 3.0, n)  # log importance weights
    features = np.empty((n, K))
    features[:, 0] = rng.random(n) < 0.3
    features[:, 1] = rng.random(n) < 0.05
    features[:, 2] = rng.normal(0.0, 1.0, n)
    features[:, 3] = rng.random(n) * 10.0
    proposal = rng.normal(-30.0, 3.0, n)
    model = proposal + rng.normal(0.0, 0.5, n)
    target = proposal + rng.normal(0.0, 1.0, n) + 5.0
    ld = np.longdouble
    lr = target.astype(ld) - proposal.astype(ld)
    m = lr.max()
    log_z = float(m + np.log(np.mean(np.exp(lr - m))))
    return {
        "x": x,
        "features": features,
        "target": target,
        "model": model,
        "proposal": proposal,
        "log_z": log_z,
        "tx": torch.from_numpy(x),
        "tfeatures": torch.from_numpy(features),
        "ttarget": torch.from_numpy(target),
        "tmodel": torch.from_numpy(model),
        "tproposal": torch.from_numpy(proposal),
    }


# -- extended-precision values the results are checked against ----------------------------


def _ld_weights(x: np.ndarray) -> tuple[np.ndarray, Any]:
    xl = x.astype(np.longdouble)
    m = xl.max()
    e = np.exp(xl - m)
    s = e.sum()
    return e / s, m + np.log(s)


def expected(kernel: str, d: dict[str, Any]) -> Any:
    """The value of ``kernel`` on ``d``, in long double."""
    n = d["x"].size
    if kernel in ("logsumexp", "logmeanexp"):
        _, lse = _ld_weights(d["x"])
        return float(lse if kernel == "logsumexp" else lse - np.log(np.longdouble(n)))
    if kernel == "normalized_weights":
        return _ld_weights(d["x"])[0].astype(np.float64)
    if kernel == "effective_sample_size":
        w = _ld_weights(d["x"])[0]
        return float(1 / np.sum(w * w))
    if kernel == "weighted_moments":
        w = _ld_weights(d["x"])[0]
        return (w[:, None] * d["features"].astype(np.longdouble)).sum(axis=0).astype(np.float64)
    ld = np.longdouble
    t, pi, q = (d[k].astype(ld) for k in ("target", "model", "proposal"))
    log_z = ld(d["log_z"])
    a = np.exp(t - q - log_z)
    b = np.exp(pi - q)
    if kernel == "kl_divergence":
        return float(np.mean(a * (t - log_z - pi)))
    if kernel == "tv_distance":
        return float(0.5 * np.mean(np.abs(a - b)))
    if kernel == "js_divergence":
        m = (a + b) / 2
        return float(0.5 * np.mean(a * np.log(a / m) + b * np.log(b / m)))
    raise KeyError(kernel)


# -- the contestants -----------------------------------------------------------------------


def _np_lse(x: np.ndarray) -> float:
    m = np.max(x)
    return float(m + np.log(np.sum(np.exp(x - m))))


def contestants(kernel: str, d: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """Zero-argument callables for ours, numpy, scipy and torch (where one applies)."""
    x, tx, f, tf = d["x"], d["tx"], d["features"], d["tfeatures"]
    t, pi, q, log_z = d["target"], d["model"], d["proposal"], d["log_z"]
    tt, tpi, tq = d["ttarget"], d["tmodel"], d["tproposal"]
    log_n = math.log(x.size)
    if kernel == "logsumexp":
        return {
            "ours": lambda: dn.logsumexp(x),
            "numpy": lambda: _np_lse(x),
            "scipy": lambda: sp.logsumexp(x),
            "torch": lambda: torch.logsumexp(tx, 0),
        }
    if kernel == "logmeanexp":
        return {
            "ours": lambda: dn.logmeanexp(x),
            "numpy": lambda: _np_lse(x) - log_n,
            "scipy": lambda: sp.logsumexp(x) - log_n,
            "torch": lambda: torch.logsumexp(tx, 0) - log_n,
        }
    if kernel == "normalized_weights":
        return {
            "ours": lambda: dn.normalized_weights(x),
            "numpy": lambda: np.exp(x - _np_lse(x)),
            "scipy": lambda: sp.softmax(x),
            "torch": lambda: torch.softmax(tx, 0),
        }
    if kernel == "effective_sample_size":

        def np_ess() -> float:
            w = np.exp(x - _np_lse(x))
            return 1.0 / np.dot(w, w)

        def sp_ess() -> float:
            w = sp.softmax(x)
            return 1.0 / np.dot(w, w)

        def torch_ess() -> Any:
            w = torch.softmax(tx, 0)
            return 1.0 / torch.dot(w, w)

        return {
            "ours": lambda: dn.effective_sample_size(x),
            "numpy": np_ess,
            "scipy": sp_ess,
            "torch": torch_ess,
        }
    if kernel == "weighted_moments":
        return {
            "ours": lambda: dn.weighted_moments(x, f),
            "numpy": lambda: np.exp(x - _np_lse(x)) @ f,
            "scipy": lambda: sp.softmax(x) @ f,
            "torch": lambda: torch.softmax(tx, 0) @ tf,
        }
    if kernel == "kl_divergence":
        return {
            "ours": lambda: dn.kl_divergence(t, pi, q, log_z),
            "numpy": lambda: np.mean(np.exp(t - q - log_z) * (t - log_z - pi)),
            "torch": lambda: torch.mean(torch.exp(tt - tq - log_z) * (tt - log_z - tpi)),
        }
    if kernel == "tv_distance":
        return {
            "ours": lambda: dn.tv_distance(t, pi, q, log_z),
            "numpy": lambda: 0.5 * np.mean(np.abs(np.exp(t - q - log_z) - np.exp(pi - q))),
            "torch": lambda: (
                0.5 * torch.mean(torch.abs(torch.exp(tt - tq - log_z) - torch.exp(tpi - tq)))
            ),
        }
    if kernel == "js_divergence":

        def np_js() -> float:
            a, b = np.exp(t - q - log_z), np.exp(pi - q)
            m = 0.5 * (a + b)
            return 0.5 * np.mean(a * np.log(a / m) + b * np.log(b / m))

        def torch_js() -> Any:
            a, b = torch.exp(tt - tq - log_z), torch.exp(tpi - tq)
            m = 0.5 * (a + b)
            return 0.5 * torch.mean(a * torch.log(a / m) + b * torch.log(b / m))

        return {
            "ours": lambda: dn.js_divergence(t, pi, q, log_z),
            "numpy": np_js,
            "torch": torch_js,
        }
    raise KeyError(kernel)


def repeats_for(ctx: Context, n: int) -> int:
    """Fewer repeats for the largest inputs, where one call of a reference takes ~0.5 s."""
    return min(ctx.repeats, 5) if n >= 10_000_000 else ctx.repeats


def ref_task(kernel: str, n: int, d: dict[str, Any], want: Any, repeats: int) -> RefTask | None:
    if kernel not in REF_FN:
        return None
    if kernel in ("kl_divergence", "tv_distance", "js_divergence"):
        inputs = {"target": d["target"], "model": d["model"], "proposal": d["proposal"]}
    elif kernel == "weighted_moments":
        inputs = {
            "x": d["x"],
            "features_kn": d.setdefault("features_kn", np.ascontiguousarray(d["features"].T)),
        }
    else:
        inputs = {"x": d["x"]}
    return RefTask(
        id=f"{kernel}/{n}",
        fn=REF_FN[kernel],
        inputs=inputs,
        expect=want,
        rtol=REF_RTOL.get(kernel, REF_RTOL_DEFAULT),
        atol=1e-300,
        params={"log_z": d["log_z"]},
        repeats=repeats,
    )


# -- the measurement -----------------------------------------------------------------------


def measure_sizes(ctx: Context, sizes: tuple[int, ...]) -> tuple[dict, dict, list[RefTask]]:
    """Times ours, numpy, scipy and torch; returns timings, check failures and the tasks for
    the reference venv."""
    timings: dict[tuple[str, int], dict[str, Timing]] = {}
    failures: dict[tuple[str, int], dict[str, str]] = {}
    tasks: list[RefTask] = []
    for n in sizes:
        d = make_inputs(n)
        for kernel in KERNELS:
            want = expected(kernel, d)
            passing = {}
            for name, fn in contestants(kernel, d).items():
                try:
                    ctx.check(f"{kernel} N={n} {name}", fn(), want, RTOL, atol=1e-300)
                    passing[name] = fn
                except CheckError as err:
                    failures.setdefault((kernel, n), {})[name] = str(err)
            big = n >= 1_000_000
            options = {"warmup": 1 if big else ctx.warmup, "repeats": repeats_for(ctx, n)}
            # torch is timed in its own loop right after the others: its OpenMP workers keep
            # spinning for a while after each call and would slow whichever contestant ran
            # next (measured: our 2-thread logsumexp at N = 1e6 took 1.5 ms instead of 0.74
            # right after a torch call); the pause lets them go idle before the next case.
            in_process = {k: v for k, v in passing.items() if k != "torch"}
            timings[(kernel, n)] = ctx.measure(in_process, **options)
            if "torch" in passing:
                timings[(kernel, n)].update(ctx.measure({"torch": passing["torch"]}, **options))
                time.sleep(0.2)
            task = ref_task(kernel, n, d, want, repeats_for(ctx, n))
            if task is not None:
                tasks.append(task)
        del d
    return timings, failures, tasks


def call_overhead(ctx: Context) -> str:
    """Seconds per call with one element: the cost of crossing into the kernel."""
    x1 = np.array([-1.5])
    f1 = np.array([[1.0, 0.0, 2.0, 3.0]])
    y1, z1 = np.array([-2.0]), np.array([-1.0])
    x2 = x1.reshape(1, 1)
    rows = [
        ("logsumexp", lambda: _core.logsumexp(x1), lambda: dn.logsumexp(x1)),
        ("logmeanexp", lambda: _core.logmeanexp(x1), lambda: dn.logmeanexp(x1)),
        (
            "normalized_weights",
            lambda: _core.normalized_weights(x1),
            lambda: dn.normalized_weights(x1),
        ),
        (
            "effective_sample_size",
            lambda: _core.effective_sample_size(x1),
            lambda: dn.effective_sample_size(x1),
        ),
        (
            "weighted_moments (K=4)",
            lambda: _core.weighted_moments(x1, f1),
            lambda: dn.weighted_moments(x1, f1),
        ),
        ("estimate_log_z", lambda: _core.estimate_log_z(x1, z1), lambda: dn.estimate_log_z(x1, z1)),
        (
            "divergence kl (log_z given)",
            lambda: _core.divergence("kl", x1, y1, z1, 0.5),
            lambda: dn.kl_divergence(x1, y1, z1, 0.5),
        ),
        (
            "divergence tv (log_z given)",
            lambda: _core.divergence("tv", x1, y1, z1, 0.5),
            lambda: dn.tv_distance(x1, y1, z1, 0.5),
        ),
        (
            "divergence js (log_z given)",
            lambda: _core.divergence("js", x1, y1, z1, 0.5),
            lambda: dn.js_divergence(x1, y1, z1, 0.5),
        ),
        (
            "divergence_grouped kl (1 x 1)",
            lambda: _core.divergence_grouped("kl", x2, x2, x2, None),
            lambda: dn.kl_divergence(x2, x2, x2),
        ),
    ]
    out = []
    for name, raw, public in rows:
        for fn in (raw, public):
            fn()
        t = ctx.measure({"raw": raw, "public": public})
        out.append((name, fmt_time(t["raw"].median), fmt_time(t["public"].median)))
    baseline = ctx.measure({"np": lambda: np.max(x1), "noop": lambda: None})
    return "\n".join(
        [
            "### Call overhead (one element)",
            "",
            "Time per call on a 1-element input: `_core.*` is the binding alone (argument "
            "extraction, borrow, release of the interpreter lock, result); `disco.numerics.*` "
            "adds the Python-side conversion and shape checks. For scale: a Python call of a "
            f"no-op lambda takes {fmt_time(baseline['noop'].median)}, `np.max` of one element "
            f"{fmt_time(baseline['np'].median)}.",
            "",
            table(["kernel", "`_core` binding", "`disco.numerics`"], out),
        ]
    )


def _cell(t: Timing | None, ours: Timing | None, fastest: bool, note: str = "") -> str:
    if t is None:
        return note or "—"
    text = fmt_time(t.median)
    if ours is not None and t is not ours:
        text += f" ({fmt_ratio(t.median / ours.median)})"
    return f"**{text}**" if fastest else text


def run(ctx: Context) -> str:
    sizes = SIZES_QUICK if ctx.quick else SIZES_FULL
    timings, failures, tasks = measure_sizes(ctx, sizes)
    ref = ctx.reference("ref_numerics", tasks)
    ref_times: dict[tuple[str, int], RefResult] = {}
    if ref is not None:
        for task in tasks:
            kernel, n = task.id.rsplit("/", 1)
            ref_times[(kernel, int(n))] = ref[task.id]

    lines = [
        "## Numerics kernels (`disco.numerics`)",
        "",
        __doc__.strip().splitlines()[0],
        "",
        f"Inputs: N log-scores (N ∈ {{{', '.join(fmt_n(n) for n in sizes)}}}), seeded; "
        "log-weights ~ Normal(-25, 3); for the divergences, proposal log-probs ~ "
        "Normal(-30, 3), policy = proposal + Normal(0, 0.5), unnormalised target = proposal + "
        "Normal(0, 1) + 5, with `log_z` given to every contestant (disco 1.1.1's metrics take "
        f"Z as an argument); weighted moments over K = {K} features (two binary, two real). "
        "numpy/torch rows are the direct float64 formulas (no validation, no `-inf` "
        "handling); scipy is `scipy.special.logsumexp` / `softmax` where it has a function "
        "for the quantity. Every result is checked against a long-double evaluation "
        f"(rtol {RTOL:g}; disco 1.1.1: {REF_RTOL_DEFAULT:g}, JS {REF_RTOL['js_divergence']:g} "
        "because it casts the mixture to float32) before it is timed.",
        "",
        "numpy and scipy are timed batch by batch, interleaved with ours. torch is timed in "
        "its own loop right after them (its OpenMP workers spin after each call and slow "
        "whichever contestant runs next); disco 1.1.1 runs in its own process after all "
        "sizes (its inputs travel as .npy files). Under a changing load, the ratios to torch "
        "and, most of all, to disco 1.1.1 are the less reliable ones.",
        "",
        "Cells: median time per call, and in brackets the contestant's time over ours "
        f"(above 1{TIMES}: ours is faster). Bold: fastest in the row. —: no such function.",
        "",
    ]
    if ref is None:
        lines += [f"_{ctx.ref_note}_", ""]

    # Summary first: who is fastest where.
    summary_rows = []
    aims = {"fastest": [0, 0], "scipy2x": [0, 0]}
    per_kernel_tables = []
    for kernel in KERNELS:
        rows = []
        for n in sizes:
            t = dict(timings[(kernel, n)])
            r = ref_times.get((kernel, n))
            notes: dict[str, str] = {}
            if r is not None and r.timing is not None:
                t["disco 1.1.1"] = r.timing
            elif r is not None and r.error and r.error != "no equivalent":
                notes["disco 1.1.1"] = f"✗ {r.error}"
            for name, msg in failures.get((kernel, n), {}).items():
                notes[name] = f"✗ check failed ({msg.split(': ', 1)[-1]})"
            ours = t.get("ours")
            best = min(t, key=lambda k: t[k].median) if t else None
            rows.append(
                [f"{fmt_n(n)}"]
                + [_cell(t.get(c), ours, c == best, notes.get(c, "")) for c in CONTESTANTS]
            )
            if ours is not None:
                others = {k: v for k, v in t.items() if k != "ours"}
                runner = min(others, key=lambda k: others[k].median) if others else None
                if best == "ours" and runner is not None:
                    cell = f"ours, {fmt_ratio(others[runner].median / ours.median)} vs {runner}"
                else:
                    cell = f"{best} ({fmt_ratio(t[best].median / ours.median)})"
                summary_rows.append((kernel, n, cell))
                if n >= 100_000:
                    aims["fastest"][1] += 1
                    aims["fastest"][0] += best == "ours"
                    if "scipy" in t:
                        aims["scipy2x"][1] += 1
                        aims["scipy2x"][0] += t["scipy"].median >= 2 * ours.median
        per_kernel_tables += [
            f"#### `{kernel}`" + (f" (K = {K})" if kernel == "weighted_moments" else ""),
            "",
            table(["N", *CONTESTANTS], rows),
            "",
        ]
    summary = {(k, n): c for k, n, c in summary_rows}
    lines += [
        "### Summary: the fastest contestant",
        "",
        "Each cell names the fastest contestant; when that is ours, the ratio is the "
        f"runner-up's time over ours, otherwise the winner's time over ours (below 1{TIMES}: we "
        "are "
        "slower by that factor).",
        "",
        table(
            ["kernel", *(f"N = {fmt_n(n)}" for n in sizes)],
            [[f"`{k}`", *(summary.get((k, n), "—") for n in sizes)] for k in KERNELS],
        ),
        "",
    ]
    overhead_100 = max(
        timings[(k, 100)]["ours"].median for k in KERNELS if "ours" in timings[(k, 100)]
    )
    lines += [
        "Aims: fastest at N ≥ 1e5 in "
        f"{aims['fastest'][0]} of {aims['fastest'][1]} kernel-size cases; at least 2{TIMES} scipy "
        "in "
        f"{aims['scipy2x'][0]} of {aims['scipy2x'][1]} (kernels where scipy has a function); "
        f"slowest call of ours at N = 100: {fmt_time(overhead_100)} (aim < 5 µs).",
        "",
        HOW.strip(),
        "",
        "### Per kernel",
        "",
        *per_kernel_tables,
        call_overhead(ctx),
        "",
        f"Versions: numpy {np.__version__}, scipy {scipy.__version__}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads)"
        + (
            f"; disco 1.1.1 under {', '.join(f'{k} {v}' for k, v in ctx.ref_versions.items())}"
            if ctx.ref_versions
            else ""
        )
        + ".",
    ]
    return "\n".join(lines)
