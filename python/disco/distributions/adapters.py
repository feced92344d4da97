"""A peft-wrapped language model seen with its adapters off: the base under a LoRA policy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from disco.distributions.base import BaseDistribution

__all__ = ["AdaptersDisabled"]


class AdaptersDisabled(BaseDistribution):
    """A view of a peft-wrapped ``LMDistribution`` that samples and scores with adapters off."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.name = "base (adapters disabled)"

    def sample(self, context: Any = "", sampling_size: int = 32) -> tuple[list[Any], torch.Tensor]:
        """Sample from the base weights."""
        with self.lm.model.disable_adapter():
            return self.lm.sample(context, sampling_size)

    def log_score(
        self, samples: Sequence[Any], context: Any = "", grad: bool = False
    ) -> torch.Tensor:
        """Log-probabilities under the base weights."""
        with self.lm.model.disable_adapter():
            return self.lm.log_score(samples, context, grad=grad)

    def log_score_batch(
        self, samples: Sequence[Sequence[Any]], contexts: Sequence[Any], grad: bool = False
    ) -> torch.Tensor:
        """Batched log-probabilities under the base weights."""
        with self.lm.model.disable_adapter():
            return self.lm.log_score_batch(samples, contexts, grad=grad)
