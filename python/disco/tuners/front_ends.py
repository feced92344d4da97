"""The named tuners of the DPG family: one loop (:class:`Tuner`), the papers' names and call forms."""

from __future__ import annotations

from typing import Any

from disco.distributions.base import Distribution
from disco.distributions.contexts import SingleContextDistribution
from disco.tuners.losses import FDivergenceLoss, JSLoss
from disco.tuners.tuner import Tuner

__all__ = ["CDPGTuner", "DPGTuner", "FCDPGTuner", "FDPGTuner", "context_settings"]


_NOT_GIVEN: Any = object()


def _settings(target: Any, third: str, value: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The tuner's keywords from a front end's third argument (named ``third``) and the others.

    The original disco put a proposal (or a loss) in third place; such a value, recognised by
    its type, is translated by the alias layer, imported on that first use only.
    """
    if value is _NOT_GIVEN:
        return context_settings(settings)
    if isinstance(value, Distribution | FDivergenceLoss):
        from disco.compat import tuner_arguments

        return tuner_arguments(target, [value], settings, third)
    if third in settings:
        raise TypeError(f"{third!r} was given both by position and by keyword")
    return context_settings({**settings, third: value})


def context_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with at most one of ``context`` and ``context_distribution``.

    A distribution of one context (a :class:`SingleContextDistribution`) becomes that fixed
    context; a context given beside a context distribution is an error.
    """
    distribution = settings.get("context_distribution")
    if distribution is None:
        return settings
    if "context" in settings:
        raise ValueError("give either context or context_distribution, not both")
    if not isinstance(distribution, SingleContextDistribution):
        return settings
    settings = {k: v for k, v in settings.items() if k != "context_distribution"}
    return {**settings, "context": distribution.context}


class DPGTuner(Tuner):
    """Distributional Policy Gradient: forward ``KL(p ‖ pi)`` for one context.

    ``DPGTuner(policy, target, context, **settings)``, the settings being :class:`Tuner`'s
    keywords (``context=`` too); the original disco's forms (a proposal third, its setting
    names) work as well.
    """

    def __init__(
        self, policy: Any, target: Any, context: Any = _NOT_GIVEN, /, **settings: Any
    ) -> None:
        super().__init__(policy, target, **_settings(target, "context", context, settings))


class _ConditionalTuner(Tuner):
    """A tuner whose third argument is the context distribution."""

    def __init__(
        self, policy: Any, target: Any, context_distribution: Any = _NOT_GIVEN, /, **settings: Any
    ) -> None:
        super().__init__(
            policy,
            target,
            **_settings(target, "context_distribution", context_distribution, settings),
        )


class CDPGTuner(_ConditionalTuner):
    """Conditional DPG: forward KL averaged over a context distribution.

    ``CDPGTuner(policy, target, context_distribution, **settings)``; without a context
    distribution it tunes for the empty context.
    """


class FDPGTuner(Tuner):
    """f-DPG for one context: any f-divergence loss, Jensen–Shannon by default.

    ``FDPGTuner(policy, target, loss, context=..., **settings)``.
    """

    default_loss = JSLoss

    def __init__(
        self,
        policy: Any,
        target: Any,
        loss: FDivergenceLoss | None = _NOT_GIVEN,
        /,
        **settings: Any,
    ) -> None:
        super().__init__(policy, target, **_settings(target, "loss", loss, settings))


class FCDPGTuner(_ConditionalTuner):
    """Conditional f-DPG over a context distribution; Jensen–Shannon by default.

    ``FCDPGTuner(policy, target, context_distribution, loss=..., **settings)``; without a context
    distribution it tunes for the empty context (the original's RLHF example).
    """

    default_loss = JSLoss
