"""The tuner's running estimate of each context's partition function ``Z`` (in log space)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from disco import numerics

__all__ = ["LogZEstimate"]


class LogZEstimate:
    """Per context, the inverse-variance weighted average of the batches' estimates of ``Z``.

    A batch estimates ``Z`` by the mean of ``P/q`` over its samples. Batches are averaged with
    inverse-variance weights, so the noisy batches drawn while the proposal was far from the
    target do not dominate once it is close. A batch's relative variance
    (``Var/Z² = 1/ESS - 1/n``) is estimated from its own ratios, but the weight it gets is the
    one estimated on the context's *previous* batch: a weight computed from the batch itself is
    correlated with its estimate (a batch that happens to miss the rare high-ratio samples has
    both a low Z and a high ESS) and biases Z low by several percent, which moves the optimum of
    losses that threshold on ``pi/p`` (total variation). Kept in log space as
    ``(log Σ w_b Z_b, log Σ w_b)`` per context (:attr:`sums`), with the samples seen
    (:attr:`counts`) and the last batch's relative variance (:attr:`relative_variance`).
    """

    def __init__(self) -> None:
        self.sums: dict[str, tuple[float, float]] = {}
        self.counts: dict[str, int] = {}
        self.relative_variance: dict[str, float] = {}

    def update(self, context: Any, log_ratios: np.ndarray) -> float:
        """Fold one batch's ``log P - log q`` into the context's estimate; returns ``log Z``."""
        key = str(context)
        n = len(log_ratios)
        log_z_batch = numerics.logmeanexp(log_ratios)
        if not math.isfinite(log_z_batch):
            return self.log_z(context)
        relative_variance = max(
            1.0 / numerics.effective_sample_size(log_ratios) - 1.0 / n, 1e-3 / n
        )
        log_weight = -math.log(self.relative_variance.get(key, relative_variance))
        self.relative_variance[key] = relative_variance
        weighted, total = self.sums.get(key, (-math.inf, -math.inf))
        self.sums[key] = (
            float(np.logaddexp(weighted, log_weight + log_z_batch)),
            float(np.logaddexp(total, log_weight)),
        )
        self.counts[key] = self.counts.get(key, 0) + n
        return self.log_z(context)

    def log_z(self, context: Any = "") -> float:
        """The current estimate of ``log Z`` for a context (``nan`` if it was never seen)."""
        key = str(context)
        if key not in self.sums:
            return math.nan
        weighted, total = self.sums[key]
        return weighted - total

    def state_dict(self) -> dict[str, Any]:
        """The estimate for checkpoints (three tables by context)."""
        return {
            "log_z_sums": self.sums,
            "log_z_counts": self.counts,
            "log_z_relative_variance": self.relative_variance,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the tables of :meth:`state_dict` (the last one may be absent)."""
        self.sums = {k: (float(v[0]), float(v[1])) for k, v in state["log_z_sums"].items()}
        self.counts = {k: int(v) for k, v in state["log_z_counts"].items()}
        self.relative_variance = {
            k: float(v) for k, v in state.get("log_z_relative_variance", {}).items()
        }
