"""What the tuner computes on each chunk of a step's samples, and the metrics it reports."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from disco import numerics
from disco._calls import call_log_score

__all__ = ["Learned", "Scored", "across_contexts", "cpu64", "features_and_base", "slices"]


def cpu64(x: torch.Tensor) -> np.ndarray:
    """A tensor as float64 numpy on the CPU."""
    return x.detach().to("cpu", torch.float64).numpy()


def slices(n: int, size: int) -> Iterable[slice]:
    """``range(n)`` cut into consecutive slices of at most ``size``."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@dataclass
class Scored:
    """One chunk's proposal and target log-scores, reported features and base log-scores."""

    log_q: np.ndarray
    log_p: np.ndarray
    phi: np.ndarray | None
    log_a: np.ndarray | None
    shown: list[tuple[str, float]]  # (text, target log-score) of the context's first samples


@dataclass
class Learned:
    """One chunk's policy log-probabilities, loss weights and loss share, with its timings."""

    log_pi: np.ndarray
    weights: np.ndarray
    weighted: np.ndarray
    losses: list[float]
    score_time: float
    backward_time: float


def features_and_base(
    features: Sequence[Any], base: Any, context: Any, samples: list[Any]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The reported features' values and the base's log-scores on a batch (once per batch).

    ``base`` ``None``: no ``KL(pi ‖ base)`` is reported.
    """
    if not samples:  # a chunk past the reported samples
        return (
            np.empty((0, len(features))) if features else None,
            np.empty(0) if base is not None else None,
        )
    phi = None
    if features:
        phi = np.stack([cpu64(f.score(samples, context)) for f in features], axis=1)
    log_a = cpu64(call_log_score(base, samples, context)) if base is not None else None
    return phi, log_a


def step_metrics(
    kind: numerics.FDivergenceKind,
    features: Sequence[Any],
    log_p: np.ndarray,
    log_pi: np.ndarray,
    log_q: np.ndarray,
    log_z: float,
    phi: np.ndarray | None,
    log_a: np.ndarray | None,
) -> dict[str, float]:
    """A context's reported figures, each with its standard error, named for the loggers."""
    scalars, moments = numerics.tuner_metrics(kind, log_p, log_pi, log_q, log_z, phi, log_a)
    kl_policy_base = scalars.pop("kl_policy_base", None)
    kl_policy_base_stderr = scalars.pop("kl_policy_base_stderr", math.nan)
    m = {k: v for k, v in scalars.items() if not k.startswith("moment_stderr_")}
    if moments is not None:
        for j, (f, value) in enumerate(zip(features, moments)):
            name = f"moment/{getattr(f, 'name', repr(f))}"
            m[name] = float(value)
            m[f"{name}_stderr"] = float(scalars[f"moment_stderr_{j}"])
    if kl_policy_base is not None:
        m["kl_policy_base"] = kl_policy_base
        m["kl_policy_base_stderr"] = kl_policy_base_stderr
    return m


def across_contexts(key: str, values: list[float]) -> float:
    """A step's figure over its contexts: their mean, or for a ``*_stderr`` key its error.

    The contexts' samples are independent, so the errors combine as those of a mean.
    """
    if key.endswith("_stderr"):
        return numerics.mean_of_independent([numerics.Estimate(0.0, v) for v in values]).stderr
    return float(np.mean(values))
