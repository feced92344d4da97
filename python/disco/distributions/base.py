"""The distribution protocol every model, EBM proposal and policy in disco follows."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

__all__ = ["BaseDistribution", "Distribution", "TextSample"]


class TextSample(NamedTuple):
    """One generated output: its token ids (up to and including EOS) and its decoded text."""

    token_ids: tuple[int, ...]
    text: str


class Distribution(abc.ABC):
    """Anything that can draw samples for a context and score them with log-probabilities.

    ``sample`` returns the samples and their log-probabilities under the distribution actually
    sampled from; ``log_score`` recomputes those log-probabilities for given samples. Both
    return 1-D float64 tensors; ``-inf`` means probability zero.
    """

    @abc.abstractmethod
    def sample(self, context: Any = "", sampling_size: int = 32) -> tuple[list[Any], torch.Tensor]:
        """Draw ``sampling_size`` samples for ``context``; return them and their log-probabilities."""

    @abc.abstractmethod
    def log_score(
        self, samples: Sequence[Any], context: Any = "", grad: bool = False
    ) -> torch.Tensor:
        """Log-probabilities of ``samples`` given ``context`` (differentiable when ``grad``)."""

    def __mul__(self, other: Any) -> Any:
        from disco.scorers import Product

        return Product(self, other)

    def __rmul__(self, other: Any) -> Any:
        from disco.scorers import Product

        return Product(other, self)

    def sample_batch(
        self, contexts: Sequence[Any], sampling_size: int = 32
    ) -> tuple[list[list[Any]], torch.Tensor]:
        """Draw ``sampling_size`` samples for each context; log-probabilities are ``C x n``."""
        drawn = [self.sample(c, sampling_size) for c in contexts]
        return [s for s, _ in drawn], torch.stack([lp for _, lp in drawn])

    def log_score_batch(
        self, samples: Sequence[Sequence[Any]], contexts: Sequence[Any], grad: bool = False
    ) -> torch.Tensor:
        """Log-probabilities of ``samples[c]`` given ``contexts[c]``, as a ``C x n`` tensor."""
        if len(samples) != len(contexts):
            raise ValueError(
                f"length mismatch: {len(samples)} groups of samples for {len(contexts)} contexts"
            )
        return torch.stack([self.log_score(s, c, grad=grad) for s, c in zip(samples, contexts)])


class BaseDistribution(Distribution):
    """A distribution that can serve as the base ``a`` of a target: it can be constrained.

    ``constrain(features, moments)`` returns the energy-based model closest to this
    distribution in KL that meets the moments (DESIGN §4).
    """

    def constrain(
        self, features: Sequence[Any], moments: Sequence[float] | None = None, **kwargs: Any
    ) -> Any:
        """Return the EBM closest to this distribution in KL that meets the feature moments.

        Without ``moments``, the product of this distribution and the features. See
        :func:`disco.distributions.constraints.constrain` for the options.
        """
        from disco.distributions.constraints import constrain

        return constrain(self, features, moments, **kwargs)

    def clone(self) -> BaseDistribution:
        """Return an independent copy (parameters included) of this distribution."""
        import copy

        return copy.deepcopy(self)
