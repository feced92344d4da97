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
    "sample_rows",
    "try_plot",
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


def format_table(report: dict[str, Any]) -> str:
    """The before/after table printed at the end of a run (and by ``disco inspect``)."""

    def value(key: str, index: int | None = None) -> float:
        v = report.get(key, math.nan)
        return float(v[index] if index is not None and isinstance(v, list) else v)

    rows: list[tuple[str, str]] = []
    for i, name in enumerate(report["features"]):
        rows += [
            (f"{name}: base model", f"{value('base_rate', i):.3f}"),
            (f"{name}: target", f"{value('targets', i):.3f}"),
            (f"{name}: tuned policy", f"{value('tuned_rate', i):.3f}"),
            (f"{name}: QRS on the tuned policy", f"{value('qrs_rate', i):.3f}"),
        ]
    rows += [
        ("KL(policy || base), nats", f"{value('kl_policy_base'):.4f}"),
        ("KL(target || policy), nats", f"{value('kl_target_policy'):.4f}"),
        ("QRS beta", beta_text(value("qrs_log_beta")) if "qrs_log_beta" in report else "nan"),
        ("QRS acceptance: estimated", f"{value('qrs_estimated_acceptance'):.3f}"),
        ("QRS acceptance: observed", f"{value('qrs_acceptance'):.3f}"),
        ("QRS KL(target || QRS), nats (est.)", f"{value('qrs_estimated_kl'):.4f}"),
        ("QRS TV(target, QRS) (est.)", f"{value('qrs_estimated_tv'):.4f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':{width}}  value", f"{'-' * width}  ------"]
    return "\n".join(lines + [f"{name:{width}}  {v}" for name, v in rows])


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
    them faintly and, over them, their mean over the last eighth of the run, which shows where
    the policy is heading.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    steps = range(1, len(history) + 1)
    window = max(1, len(history) // 8)
    left, right = fig.subplots(1, 2)

    def curve(axes: Any, values: list[float], label: str) -> Any:
        (faint,) = axes.plot(steps, values, linewidth=0.8, alpha=0.35)
        axes.plot(
            steps,
            trailing_mean(values, window),
            color=faint.get_color(),
            linewidth=2,
            label=f"{label} (mean of {window} steps)" if window > 1 else label,
        )
        return faint

    for name, target in zip(names, targets):
        line = curve(left, [h.get(f"moment/{name}", math.nan) for h in history], name)
        left.axhline(target, color=line.get_color(), linestyle="--", linewidth=1)
    left.set_xlabel("step")
    left.set_ylabel("moment (dashed: target)")
    left.legend()
    curve(right, [h["kl_target_policy"] for h in history], "KL(target || policy)")
    curve(right, [h.get("kl_policy_base", math.nan) for h in history], "KL(policy || base)")
    right.set_xlabel("step")
    right.set_ylabel("nats")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
