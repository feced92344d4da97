"""The named tuners of the DPG family: one loop (:class:`Tuner`), the papers' names and call forms."""

from __future__ import annotations

from typing import Any

from disco.compat import tuner_arguments
from disco.tuners.losses import JSLoss
from disco.tuners.tuner import Tuner

__all__ = ["CDPGTuner", "DPGTuner", "FCDPGTuner", "FDPGTuner"]


class DPGTuner(Tuner):
    """Distributional Policy Gradient: forward ``KL(p ‖ pi)`` for one context.

    ``DPGTuner(policy, target, context, **settings)``; the original disco's forms (a proposal
    third, its setting names) are accepted too (see :mod:`disco.compat`).
    """

    def __init__(self, policy: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(policy, target, **tuner_arguments(target, args, kwargs, "context"))


class CDPGTuner(Tuner):
    """Conditional DPG: forward KL averaged over a context distribution.

    ``CDPGTuner(policy, target, context_distribution, **settings)``; without a context
    distribution it tunes for the empty context.
    """

    def __init__(self, policy: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            policy, target, **tuner_arguments(target, args, kwargs, "context_distribution")
        )


class FDPGTuner(Tuner):
    """f-DPG for one context: any f-divergence loss, Jensen–Shannon by default.

    ``FDPGTuner(policy, target, loss, context=..., **settings)``.
    """

    default_loss = JSLoss

    def __init__(self, policy: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(policy, target, **tuner_arguments(target, args, kwargs, "loss"))


class FCDPGTuner(Tuner):
    """Conditional f-DPG over a context distribution; Jensen–Shannon by default.

    ``FCDPGTuner(policy, target, context_distribution, loss=..., **settings)``; without a context
    distribution it tunes for the empty context (the original's RLHF example).
    """

    default_loss = JSLoss

    def __init__(self, policy: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            policy, target, **tuner_arguments(target, args, kwargs, "context_distribution")
        )
