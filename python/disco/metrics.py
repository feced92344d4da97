"""The original disco's divergence classes, computed by :mod:`disco.numerics` (in Rust).

``KL.divergence(m1_log_scores, m2_log_scores, z, proposal_log_scores=None)`` estimates
``D(m1 / z ‖ m2)`` by importance sampling from the proposal (``m2`` itself by default), with the
original's argument order: ``m1`` is the unnormalised target with partition function ``z`` (a
value, not its log), ``m2`` a normalised model. Unlike the original, the estimates are computed
in float64 log space: ratios past ``exp(88)`` do not overflow to ``inf``/NaN, and ``-inf``
log-scores are exact zeros. For new code use :func:`disco.numerics.kl_divergence` and friends.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from disco import numerics

__all__ = ["JS", "KL", "TV"]


def _log_z(z: Any) -> float:
    value = float(z.item() if isinstance(z, torch.Tensor) else z)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"z is {value}: the partition function must be positive and finite")
    return math.log(value)


class _Divergence:
    """``divergence(m1_log_scores, m2_log_scores, z, proposal_log_scores=None)`` as a tensor."""

    kind: str = ""

    @classmethod
    def divergence(
        cls, m1_log_scores: Any, m2_log_scores: Any, z: Any, proposal_log_scores: Any = None
    ) -> torch.Tensor:
        """The divergence estimate (a 0-d float64 tensor)."""
        function = {
            "kl": numerics.kl_divergence,
            "tv": numerics.tv_distance,
            "js": numerics.js_divergence,
        }[cls.kind]
        value = function(m1_log_scores, m2_log_scores, proposal_log_scores, _log_z(z))
        return torch.tensor(float(value), dtype=torch.float64)


class KL(_Divergence):
    """Forward ``KL(m1 / z ‖ m2)`` in nats."""

    kind = "kl"


class TV(_Divergence):
    """Total variation distance between ``m1 / z`` and ``m2``."""

    kind = "tv"


class JS(_Divergence):
    """Jensen–Shannon divergence between ``m1 / z`` and ``m2``, in nats."""

    kind = "js"
