"""The tuner's stopping rule: stop once the divergence estimate has stopped improving."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["has_converged"]


def has_converged(values: Sequence[float], window: int) -> bool:
    """Whether a run of per-step estimates has stopped improving (``window`` ≥ 2; else never).

    Compares the mean estimate over a window of ``window`` steps with the mean over the window
    before: flat when the improvement is below one standard error of the difference. Each
    window's standard error is the spread of its steps' estimates over the root of its length,
    which holds both the sampling noise and the iterates' own fluctuation, so a noisy plateau
    counts as flat instead of as progress. Converged when the comparison has been flat at each
    of the last ``window`` steps: one flat comparison happens by chance early on, while the
    estimate still falls fast.
    """
    estimates = np.asarray(values)
    if window < 2 or len(estimates) < 3 * window - 1:
        return False

    def flat(end: int) -> bool:
        current = estimates[end - window : end]
        previous = estimates[end - 2 * window : end - window]
        stderr = math.sqrt((np.var(current, ddof=1) + np.var(previous, ddof=1)) / window)
        return bool(previous.mean() - current.mean() < stderr)

    return all(flat(len(estimates) - lag) for lag in range(window))
