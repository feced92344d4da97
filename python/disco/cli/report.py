"""What a run reports: feature rates, the fitted coefficients, the table and the tuning plot."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "beta_text",
    "coefficients",
    "format_table",
    "plot_tuning",
    "rates",
    "rates_with_stderr",
    "sample_rows",
    "try_plot",
    "verdicts",
]

Drawn = Sequence[tuple[str, list[Any]]]  # each context with its samples


def beta_text(log_beta: float) -> str:
    """β for people: a number, or ``exp(…)`` where it (or its inverse) is past float range."""
    from disco._beta import MAX_LOG_FLOAT

    return f"{math.exp(log_beta):.4g}" if abs(log_beta) < MAX_LOG_FLOAT else f"exp({log_beta:.6g})"


def coefficients(ebm: Any) -> dict[str, float]:
    """The EBM's fitted coefficient of each feature, by the feature's name."""
    from disco.scorers import ExponentialScorer

    for factor in getattr(ebm, "factors", ()):
        if isinstance(factor, ExponentialScorer):
            return {f.name: float(c) for f, c in zip(factor.features, factor.coefficients)}
    return {}


def rates(features: Sequence[Any], drawn: Drawn) -> list[float]:
    """Each feature's mean over each context's samples, averaged over the contexts."""
    means = []
    for scorer in features:
        per_context = [
            float(scorer.score(samples, c).double().mean()) for c, samples in drawn if samples
        ]
        means.append(sum(per_context) / len(per_context) if per_context else math.nan)
    return means


def rates_with_stderr(features: Sequence[Any], drawn: Drawn) -> tuple[list[float], list[float]]:
    """:func:`rates` and their standard errors.

    Per context (:func:`~disco.numerics.sample_means_with_stderr`: Agresti-Coull for 0/1
    features), then combined as the error of a mean over independent contexts.
    """
    from disco.numerics import Estimate, mean_of_independent, sample_means_with_stderr

    values, errors = [], []
    for scorer in features:
        per_context = []
        for c, samples in drawn:
            if samples:
                m, se = sample_means_with_stderr(scorer.score(samples, c).double().numpy())
                per_context.append(Estimate(float(m[0]), float(se[0])))
        mean = mean_of_independent(per_context) if per_context else Estimate(math.nan, math.nan)
        values.append(mean.value)
        errors.append(mean.stderr)
    return values, errors


def sample_rows(
    features: Sequence[Any], names: Sequence[str], sources: Mapping[str, Drawn]
) -> list[dict[str, Any]]:
    """One ``samples.jsonl`` record per sample: its source, context, text and feature values."""
    return [
        {
            "source": source,
            "context": c,
            "text": s.text,
            **{n: float(f.score([s], c)[0]) for n, f in zip(names, features)},
        }
        for source, drawn in sources.items()
        for c, samples in drawn
        for s in samples
    ]


def _with_error(report: Mapping[str, Any], key: str, index: int | None, digits: int) -> str:
    """``value ± stderr`` of ``report[key]`` (the stderr from ``key + "_stderr"`` when present)."""

    def pick(k: str) -> float:
        v = report.get(k, math.nan)
        return float(v[index] if index is not None and isinstance(v, list) else v)

    text = f"{pick(key):.{digits}f}"
    if f"{key}_stderr" in report:
        text += f" ± {pick(key + '_stderr'):.{digits}f}"
    return text


def format_table(report: dict[str, Any]) -> str:
    """The before/after table printed at the end of a run (and by ``disco inspect``).

    Then the verdict lines, when the report has them.
    """

    def cell(key: str, index: int | None = None, digits: int = 3) -> str:
        return _with_error(report, key, index, digits)

    rows: list[tuple[str, str]] = []
    for i, name in enumerate(report["features"]):
        rows += [
            (f"{name}: base model", cell("base_rate", i)),
            (f"{name}: target", cell("targets", i)),
            (f"{name}: tuned policy", cell("tuned_rate", i)),
            (f"{name}: QRS on the tuned policy", cell("qrs_rate", i)),
        ]
    rows += [
        ("KL(policy || base), nats", cell("kl_policy_base", digits=4)),
        ("KL(target || policy), nats", cell("kl_target_policy", digits=4)),
    ]
    if "tv_target_policy" in report:
        rows += [
            ("TV(target, policy)", cell("tv_target_policy", digits=4)),
            ("JS(target, policy), nats", cell("js_target_policy", digits=4)),
            ("ESS of the weights target/policy", cell("ess", digits=1)),
        ]
    rows += [
        (
            "QRS beta",
            beta_text(float(report["qrs_log_beta"])) if "qrs_log_beta" in report else "nan",
        ),
        ("QRS acceptance: estimated", cell("qrs_estimated_acceptance")),
        ("QRS acceptance: observed", cell("qrs_acceptance")),
        ("QRS KL(target || QRS), nats (est.)", cell("qrs_estimated_kl", digits=4)),
        ("QRS TV(target, QRS) (est.)", cell("qrs_estimated_tv", digits=4)),
    ]
    width = max(len(name) for name, _ in rows)
    header = "value ± standard error" if "kl_target_policy_stderr" in report else "value"
    lines = [f"{'':{width}}  {header}", f"{'-' * width}  {'-' * len(header)}"]
    lines += [f"{name:{width}}  {v}" for name, v in rows]
    if report.get("verdicts"):
        lines += ["", VERDICT_NOTE, *report["verdicts"]]
    if "evaluation_samples" in report:
        lines += [
            "",
            f"The policy's figures rest on {report['evaluation_samples']} fresh samples of it; "
            "± is one standard error.",
        ]
    return "\n".join(lines)


VERDICT_NOTE = "Does each rate meet its target? (± here: the 95% interval's half-width)"


def _verdict(value: float, stderr: float, target: float, z: float) -> str:
    half = z * stderr
    if not (math.isfinite(value) and math.isfinite(half)):
        return f"{value:.2f}: unknown"
    word = "meets" if abs(value - target) <= half else ("short" if value < target else "over")
    return f"{value:.2f} ± {half:.2f}: {word}"


def verdicts(report: Mapping[str, Any], level: float = 0.95) -> list[str]:
    """One line per feature: its target, and the tuned policy's and QRS's rates.

    Each rate comes with its interval at ``level`` and says whether the interval holds the
    target: ``meets``, else ``short`` or ``over``.
    """
    from disco.numerics import z_score

    z = z_score(level)
    names = list(report["features"])
    width = max(len(n) for n in names)
    lines = []
    for i, name in enumerate(names):
        target = float(report["targets"][i])
        parts = [f"{name:{width}}  target {target:.2f}"]
        for label, key in (("tuned", "tuned_rate"), ("QRS", "qrs_rate")):
            value = float(report[key][i])
            stderr = float(report.get(f"{key}_stderr", [math.nan] * len(names))[i])
            parts.append(f"{label} {_verdict(value, stderr, target, z)}")
        lines.append(" | ".join(parts))
    return lines


def try_plot(draw: Callable[[], object], name: str) -> None:
    """Draw a plot, or say it was skipped when matplotlib is missing."""
    try:
        draw()
    except ImportError:
        print(f"disco: {name} skipped (plots need matplotlib: pip install matplotlib)")


def trailing_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value with the ``window - 1`` before it (fewer at the start; NaN skipped)."""
    out = []
    for i in range(len(values)):
        recent = [v for v in values[max(0, i + 1 - window) : i + 1] if not math.isnan(v)]
        out.append(sum(recent) / len(recent) if recent else math.nan)
    return out


def plot_tuning(
    history: Sequence[dict[str, float]], names: Sequence[str], targets: Sequence[float], path: Path
) -> None:
    """Moments and divergences over the tuning steps, as a PNG at ``path``.

    Each step's estimates come from that step's samples alone, so they scatter; the plot draws
    them faintly, with a band of ± one standard error where the history has one, and, over
    them, their mean over the last eighth of the run, which shows where the policy is heading.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    steps = range(1, len(history) + 1)
    window = max(1, len(history) // 8)
    left, right = fig.subplots(1, 2)

    def curve(axes: Any, values: list[float], label: str, key: str) -> Any:
        (faint,) = axes.plot(steps, values, linewidth=0.8, alpha=0.35)
        errors = [h.get(f"{key}_stderr", math.nan) for h in history]
        if any(math.isfinite(e) for e in errors):
            # Each step's estimate ± its standard error, as a faint band.
            axes.fill_between(
                steps,
                [v - e for v, e in zip(values, errors)],
                [v + e for v, e in zip(values, errors)],
                color=faint.get_color(),
                alpha=0.12,
                linewidth=0,
            )
        axes.plot(
            steps,
            trailing_mean(values, window),
            color=faint.get_color(),
            linewidth=2,
            label=f"{label} (mean of {window} steps)" if window > 1 else label,
        )
        return faint

    for name, target in zip(names, targets):
        key = f"moment/{name}"
        line = curve(left, [h.get(key, math.nan) for h in history], name, key)
        left.axhline(target, color=line.get_color(), linestyle="--", linewidth=1)
    left.set_xlabel("step")
    left.set_ylabel("moment (dashed: target)")
    left.legend()
    curve(
        right, [h["kl_target_policy"] for h in history], "KL(target || policy)", "kl_target_policy"
    )
    curve(
        right,
        [h.get("kl_policy_base", math.nan) for h in history],
        "KL(policy || base)",
        "kl_policy_base",
    )
    right.set_xlabel("step")
    right.set_ylabel("nats")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
