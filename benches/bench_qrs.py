"""QRS: a whole beta trade-off curve, and the accept/reject step, against numpy and disco 1.1.1.

- **Curve.** B = 100 betas over N log-ratios: acceptance rate, KL(p ‖ p_β) and TV(p, p_β) at
  every beta. Ours is ``disco.numerics.qrs_curve`` (one sort, then O(log N) per beta,
  docs/design.md §7.2); numpy evaluates the definitions beta by beta in O(N) each (vectorised,
  float64); the original disco calls its estimator once per beta and quantity (``ref_qrs.py``).
  Every contestant's values are checked against numpy's before timing.
- **Accept.** The decision ``u < min(1, P/(β q))`` on N = 1e7 log-ratios with given uniforms:
  ``disco.numerics.qrs_accept`` against numpy and 1.1.1's tensor expression, reported as
  accepted samples per second.

Log-ratios are ``N(0, 1.5²)`` (with log-probabilities of the proposal in [-30, -5], so the
reference's float64 exponentials stay in range); betas are log-spaced from the 1% quantile of
the ratios to past their maximum, where the divergences are exactly 0.
"""

from __future__ import annotations

import math

import numpy as np

from _harness import Context, RefTask, fmt_n, fmt_ratio, fmt_time, table
from disco import numerics

SEED = 8_191
BETAS = 100
SIZES_FULL = (100_000, 1_000_000)
SIZES_QUICK = (100_000,)
ACCEPT_N = 10_000_000
#: disco 1.1.1 handles one beta per call, so it is timed on every REF_STRIDE-th beta and its
#: time scaled by REF_STRIDE (a full 100-beta curve at N = 1e6 takes minutes per call there).
REF_STRIDE = 10


def numpy_curve(log_ratios: np.ndarray, log_betas: np.ndarray) -> np.ndarray:
    """AR, KL and TV at each beta, one O(N) vectorised pass per beta: ``B x 3``."""
    shift = log_ratios.max()
    r = np.exp(log_ratios - shift)
    s = r.sum()
    p = r / s
    with np.errstate(divide="ignore"):
        log_p = np.log(p)
    out = np.empty((log_betas.size, 3))
    for j, b in enumerate(log_betas):
        clipped = np.minimum(r, math.exp(b - shift))
        s_beta = clipped.sum()
        p_beta = clipped / s_beta
        out[j, 0] = s_beta / r.size / math.exp(b - shift)
        on = p > 0
        out[j, 1] = np.sum(p[on] * (log_p[on] - np.log(p_beta[on])))
        out[j, 2] = 0.5 * np.abs(p - p_beta).sum()
    return out


def ours_curve(log_ratios: np.ndarray, log_betas: np.ndarray) -> np.ndarray:
    curve = numerics.qrs_curve(log_ratios, log_betas=log_betas)
    return np.column_stack([curve.acceptance_rate, curve.kl, curve.tv])


def run(ctx: Context) -> str:
    """Measure, check, and return the markdown section."""
    sizes = SIZES_QUICK if ctx.quick else SIZES_FULL
    rng = np.random.default_rng(SEED)
    cases = []
    tasks = []
    for n in sizes:
        log_q = -rng.uniform(5.0, 30.0, n)
        log_ratios = rng.normal(0.0, 1.5, n)
        log_p = log_q + log_ratios
        log_betas = np.linspace(np.quantile(log_ratios, 0.01), log_ratios.max() + 0.5, BETAS)
        want = numpy_curve(log_ratios, log_betas)
        got = ours_curve(log_ratios, log_betas)
        ctx.check(f"qrs_curve N={n}", got, want, rtol=1e-9, atol=1e-12)
        timings = ctx.measure(
            {
                "ours": lambda lr=log_ratios, lb=log_betas: ours_curve(lr, lb),
                "numpy": lambda lr=log_ratios, lb=log_betas: numpy_curve(lr, lb),
            },
            repeats=3 if ctx.quick else 5,
        )
        cases.append((n, timings))
        subset = slice(None, None, REF_STRIDE)
        tasks.append(
            RefTask(
                id=f"curve-{n}",
                fn="curve",
                inputs={"target": log_p, "proposal": log_q},
                expect=got[subset],
                rtol=1e-5,
                atol=1e-9,
                params={"betas": np.exp(log_betas[subset]).tolist()},
                repeats=3,
            )
        )

    # Accept/reject on 1e7 log-ratios, beta at the median ratio (about 60% accepted).
    n_accept = ACCEPT_N if not ctx.quick else ACCEPT_N // 10
    log_ratios = rng.normal(0.0, 1.5, n_accept)
    uniforms = rng.random(n_accept)
    log_beta = float(np.median(log_ratios))
    want_mask = uniforms < np.exp(np.minimum(0.0, log_ratios - log_beta))
    accepted = int(want_mask.sum())

    def ours_accept() -> np.ndarray:
        return numerics.qrs_accept(log_ratios, uniforms, log_beta=log_beta)

    def numpy_accept() -> np.ndarray:
        return uniforms < np.exp(np.minimum(0.0, log_ratios - log_beta))

    ctx.check("qrs_accept", int(ours_accept().sum()), accepted, rtol=0, atol=2)
    ctx.check("qrs_accept mask", float((ours_accept() != want_mask).sum()), 0.0, rtol=0, atol=2)
    accept_timings = ctx.measure({"ours": ours_accept, "numpy": numpy_accept}, repeats=5)
    tasks.append(
        RefTask(
            id="accept",
            fn="accept",
            inputs={"log_ratios": log_ratios, "uniforms": uniforms},
            expect=accepted,
            rtol=0,
            atol=2,
            params={"beta": math.exp(log_beta)},
            repeats=5,
        )
    )
    ref = ctx.reference("ref_qrs", tasks)

    def ref_seconds(task_id: str) -> float | str:
        """The reference's median time, or the text to show instead."""
        if ref is None:
            return "—"
        result = ref.get(task_id)
        if result is None or result.timing is None:
            return "✗ " + (result.error if result is not None and result.error else "failed")
        return result.timing.median

    def ref_cell(task_id: str, ours_s: float, scale: float = 1.0) -> tuple[str, str]:
        t = ref_seconds(task_id)
        if isinstance(t, str):
            return t, "—"
        return fmt_time(scale * t), fmt_ratio(scale * t / ours_s)

    rows = []
    for n, timings in cases:
        ours_s, numpy_s = timings["ours"].median, timings["numpy"].median
        ref_time, ref_ratio = ref_cell(f"curve-{n}", ours_s, scale=REF_STRIDE)
        rows.append(
            [
                fmt_n(n),
                fmt_time(ours_s),
                fmt_time(numpy_s),
                fmt_ratio(numpy_s / ours_s),
                ref_time,
                ref_ratio,
            ]
        )
    lines = [
        "## QRS: trade-off curves and accept/reject",
        "",
        f"A {BETAS}-beta curve (acceptance rate, KL, TV at every beta), median time per curve; "
        "ratios are the contestant's time over ours. Ours sorts once and answers each beta in "
        "O(log N); numpy and disco 1.1.1 go over the N samples once per beta (1.1.1 three "
        f"times: one call per quantity; it is timed on every {REF_STRIDE}th beta and its time "
        f"multiplied by {REF_STRIDE}). Every contestant's values were checked against numpy's "
        "before timing: ours to 1e-9 relative, 1.1.1 to 1e-5 (it takes `log(torch.tensor(beta))` "
        "in float32, so its beta is off by up to 6e-8 relative).",
        "",
        table(
            ["N", "ours", "numpy (per beta)", "numpy / ours", "disco 1.1.1", "1.1.1 / ours"], rows
        ),
        "",
    ]
    ours_s, numpy_s = accept_timings["ours"].median, accept_timings["numpy"].median
    ref_time, ref_ratio = ref_cell("accept", ours_s)
    lines += [
        f"Accept/reject on N = {fmt_n(n_accept)} log-ratios with given uniforms "
        f"({accepted:,} accepted): median time, and accepted samples per second. 1.1.1's row is its tensor expression only "
        "(its sampler then builds Python lists of the accepted samples).",
        "",
        table(
            ["contestant", "time", "accepted / s", "ratio to ours"],
            [
                [
                    "ours (`qrs_accept`)",
                    fmt_time(ours_s),
                    f"{accepted / ours_s:.3g}",
                    fmt_ratio(1.0),
                ],
                [
                    "numpy",
                    fmt_time(numpy_s),
                    f"{accepted / numpy_s:.3g}",
                    fmt_ratio(numpy_s / ours_s),
                ],
                [
                    "disco 1.1.1",
                    ref_time,
                    "—"
                    if isinstance(ref_seconds("accept"), str)
                    else f"{accepted / float(ref_seconds('accept')):.3g}",
                    ref_ratio,
                ],
            ],
        ),
        "",
    ]
    if ref is None:
        lines += [f"_{ctx.ref_note}_", ""]
    return "\n".join(lines)
