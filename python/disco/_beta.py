"""β, the QRS threshold (docs/design.md §7.1): its one check and the one way back from ``log β``.

Every layer checks β here, so "positive and finite" means the same in ``numerics``, the
samplers, the estimator and the command. This module imports nothing from disco: it belongs to
the lowest layer, beside ``numerics``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_LOG_FLOAT", "beta_from_log", "check_beta", "check_betas", "checked_log_beta"]

MAX_LOG_FLOAT = math.log(sys.float_info.max)
"""``log`` of the largest float64 (709.78…): a ``log β`` from here on has no finite ``β``."""


def beta_from_log(log_beta: float) -> float:
    """``β = exp(log β)``, or ``inf`` where that is past float range.

    >>> beta_from_log(0.0), beta_from_log(1000.0)
    (1.0, inf)
    """
    return math.exp(log_beta) if log_beta < MAX_LOG_FLOAT else math.inf


def check_beta(beta: Any, name: str = "beta") -> float:
    """``beta`` as a float, refused unless positive and finite."""
    b = float(beta)
    if not (math.isfinite(b) and b > 0):
        raise ValueError(f"{name} is {b}: it must be positive and finite")
    return b


def check_betas(betas: npt.NDArray[np.float64], name: str = "betas") -> None:
    """Refuse an array of betas unless every one is positive and finite, naming the first bad."""
    bad = np.flatnonzero(~(np.isfinite(betas) & (betas > 0)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] is {betas[i]}: beta must be positive and finite")


def checked_log_beta(beta: Any, log_beta: Any) -> float:
    """``log β`` from exactly one of ``beta`` (positive, finite) and ``log_beta`` (finite).

    >>> checked_log_beta(None, 2.5), checked_log_beta(1.0, None)
    (2.5, 0.0)
    """
    if (beta is None) == (log_beta is None):
        raise ValueError("give exactly one of beta and log_beta")
    if log_beta is not None:
        value = float(log_beta)
        if not math.isfinite(value):
            raise ValueError(f"log_beta is {value}: it must be finite")
        return value
    return math.log(check_beta(beta))
