"""f-divergence losses for f-DPG (docs/design.md §6).

Each loss names its divergence ``D_f(pi ‖ p)``; given a batch of samples from a proposal ``q``
it returns the surrogate whose gradient is an unbiased estimate of ``∇ D_f``:
``-mean(w (r - b) log pi)`` with ``w = pi/q`` and ``r = -f'(pi/p)`` (computed by the Rust
core from ``log t``), ``b`` an optional moving-average baseline, and only ``log pi`` carrying
gradient.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from disco import numerics
from disco.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "LOSSES",
    "ChiSquareLoss",
    "ChiSquaredLoss",
    "FDivergenceLoss",
    "JSLoss",
    "KLLoss",
    "LossOutput",
    "ReverseChiSquareLoss",
    "ReverseChiSquaredLoss",
    "ReverseKLLoss",
    "TVLoss",
]


@dataclass
class LossOutput:
    """A loss value with what went into it."""

    loss: torch.Tensor
    """Scalar surrogate to call ``backward`` on."""
    weights: np.ndarray
    """Importance weights ``pi/q`` per sample."""
    weighted_rewards: np.ndarray
    """``(pi/q) * -f'(t)`` per sample (0 where ``pi = 0``)."""
    baseline: float
    """Baseline subtracted from the rewards."""
    policy_log_probs: np.ndarray
    """The policy's log-probabilities as float64 on the CPU (moved there once, for every use)."""


# Every loss by its ``kind`` (the command's ``[tuner] loss``): a new loss is a class and a decorator.
LOSSES: Registry[type[FDivergenceLoss]] = Registry("loss", key=lambda cls: cls.kind)


class FDivergenceLoss:
    """The f-DPG loss for one f-divergence, with an optional moving-average baseline.

    Parameters
    ----------
    baseline:
        Subtract a moving average of past (importance-weighted) mean rewards, kept per context
        (contexts with different rewards do not share one; a context not seen before gets the
        average over all contexts' recent batches): it leaves the gradient unbiased
        (``E_pi[∇ log pi] = 0``) and lowers its variance.
    baseline_window:
        Number of past batches of a context the moving average covers.
    max_log_t:
        Cap on ``log(pi/p)`` when forming rewards (see :func:`disco.numerics.f_pseudo_rewards`).
    """

    kind: ClassVar[numerics.FDivergenceKind]
    divergence_name: ClassVar[str]

    def __init_subclass__(
        cls, kind: numerics.FDivergenceKind | None = None, divergence_name: str | None = None
    ) -> None:
        """``class MyLoss(FDivergenceLoss, kind=..., divergence_name=...)`` names its divergence."""
        super().__init_subclass__()
        if kind is not None:
            cls.kind = kind
        if divergence_name is not None:
            cls.divergence_name = divergence_name

    def __init__(
        self, baseline: bool = True, baseline_window: int = 32, max_log_t: float = 30.0
    ) -> None:
        if baseline_window < 1:
            raise ValueError(f"baseline_window must be at least 1, got {baseline_window}")
        self.use_baseline = baseline
        self.baseline_window = baseline_window
        self.max_log_t = max_log_t
        self._histories: dict[str, deque[float]] = {}
        self._recent: deque[float] = deque(maxlen=baseline_window)  # all contexts' batches

    def __repr__(self) -> str:
        return f"{type(self).__name__}(baseline={self.use_baseline}, baseline_window={self.baseline_window})"

    def baseline_for(self, context: Any = "") -> float:
        """A context's moving-average baseline (0 when disabled or before its first batch)."""
        if not self.use_baseline:
            return 0.0
        history = self._histories.get(str(context)) or self._recent
        return float(np.mean(history)) if history else 0.0

    @property
    def baseline(self) -> float:
        """The moving average over all contexts' recent batches (0 when disabled or unseen)."""
        if not self.use_baseline or not self._recent:
            return 0.0
        return float(np.mean(self._recent))

    def state_dict(self) -> dict[str, Any]:
        """The baselines' histories (per context and over all), for checkpoints."""
        return {
            "history": {key: list(h) for key, h in self._histories.items()},
            "recent": list(self._recent),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the baselines' histories from :meth:`state_dict`."""
        self._histories = {
            key: deque(h, maxlen=self.baseline_window) for key, h in state["history"].items()
        }
        self._recent = deque(state["recent"], maxlen=self.baseline_window)

    def __call__(
        self,
        policy_log_probs: torch.Tensor,
        target_log_scores: torch.Tensor | np.ndarray,
        proposal_log_probs: torch.Tensor | np.ndarray,
        log_z: float,
        context: Any = "",
    ) -> LossOutput:
        """The surrogate loss for one batch of one context (``policy_log_probs`` carries gradient).

        The baseline is not updated here: call :meth:`record_batch` once the whole batch of a
        context has been seen, so that every chunk of it uses the same baseline.
        """
        import torch

        policy_np = policy_log_probs.detach().to("cpu", torch.float64).numpy()
        weights, weighted_rewards = numerics.f_pseudo_rewards(
            self.kind, policy_np, target_log_scores, proposal_log_probs, log_z, self.max_log_t
        )
        baseline = self.baseline_for(context)
        coefficient = torch.as_tensor(
            weighted_rewards - baseline * weights, device=policy_log_probs.device
        )
        loss = -(coefficient.to(policy_log_probs.dtype) * policy_log_probs).mean()
        return LossOutput(loss, weights, weighted_rewards, baseline, policy_np)

    def record_batch(
        self, weights: np.ndarray, weighted_rewards: np.ndarray, context: Any = ""
    ) -> None:
        """Feed one batch's importance-weighted mean reward to its context's baseline."""
        total = float(np.sum(weights))
        if self.use_baseline and total > 0:
            history = self._histories.setdefault(str(context), deque(maxlen=self.baseline_window))
            history.append(float(np.sum(weighted_rewards)) / total)
            self._recent.append(history[-1])

    def divergence(
        self,
        policy_log_probs: torch.Tensor | np.ndarray,
        target_log_scores: torch.Tensor | np.ndarray,
        proposal_log_probs: torch.Tensor | np.ndarray,
        log_z: float,
    ) -> tuple[float, float]:
        """Importance-sampling estimate of this loss's ``D_f(pi ‖ p)`` and its standard error."""
        return numerics.f_divergence(
            self.kind, policy_log_probs, target_log_scores, proposal_log_probs, log_z
        )


@LOSSES.register
class KLLoss(FDivergenceLoss, kind="kl", divergence_name="kl(p||pi)"):
    """Forward ``KL(p ‖ pi)`` (``f(t) = -log t``): DPG and CDPG."""


@LOSSES.register
class ReverseKLLoss(FDivergenceLoss, kind="reverse_kl", divergence_name="kl(pi||p)"):
    """Reverse ``KL(pi ‖ p)`` (``f(t) = t log t``): with ``P = a·exp(r/beta)``, KL-regularised RLHF."""


@LOSSES.register
class TVLoss(FDivergenceLoss, kind="tv", divergence_name="tv(pi,p)"):
    """Total variation (``f(t) = |t - 1| / 2``)."""


@LOSSES.register
class JSLoss(FDivergenceLoss, kind="js", divergence_name="js(pi,p)"):
    """Jensen–Shannon (``f(t) = t log(2t/(1+t)) + log(2/(1+t))``); f-DPG's default.

    This ``f`` is twice the standard JS, so the loss's gradient is that of ``2 JS``: only a
    constant factor (absorbed by the learning rate). Reported estimates are the standard JS.
    """


@LOSSES.register
class ChiSquareLoss(FDivergenceLoss, kind="chi2", divergence_name="chi2(pi||p)"):
    """Pearson chi² ``Σ (pi - p)² / p`` (``f(t) = (t - 1)²``)."""


@LOSSES.register
class ReverseChiSquareLoss(FDivergenceLoss, kind="reverse_chi2", divergence_name="chi2(p||pi)"):
    """Neyman chi² ``Σ (p - pi)² / pi`` (``f(t) = (1 - t)² / t``)."""


# The original disco's later spellings (see disco.compat).
ChiSquaredLoss = ChiSquareLoss
ReverseChiSquaredLoss = ReverseChiSquareLoss
