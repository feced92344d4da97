"""The distribution protocol every model, EBM proposal and policy in disco follows."""

from __future__ import annotations

import abc
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from disco._calls import call_log_score, call_sample

__all__ = ["BaseDistribution", "Distribution", "TextSample", "TokenIds"]


class TokenIds(tuple[int, ...]):
    """A sample's token ids: a tuple of ints that also answers the usual tensor operations.

    It hashes and compares with other tuples as a tuple does, so samples can be counted and
    deduplicated; compared with a number or a tensor (``ids[1:] == pad``) it gives a boolean
    tensor, and ``tensor()``, ``tolist()``, ``shape``, ``numel()`` and ``to(device)`` work as on
    a 1-D ``LongTensor``. It holds the tokens up to and including the first EOS, unpadded.
    """

    __slots__ = ()

    def __getitem__(self, index: Any) -> Any:
        item = tuple.__getitem__(self, index)
        return TokenIds(item) if isinstance(index, slice) else item

    def tensor(self) -> torch.Tensor:
        """The ids as a 1-D ``torch.long`` tensor."""
        return torch.tensor(tuple(self), dtype=torch.long)

    def _elementwise(self, other: Any) -> bool:
        return isinstance(other, torch.Tensor | numbers.Number) and not isinstance(other, bool)

    def __eq__(self, other: object) -> Any:
        if self._elementwise(other):
            return self.tensor() == other
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> Any:
        if self._elementwise(other):
            return self.tensor() != other
        return tuple.__ne__(self, other)

    __hash__ = tuple.__hash__

    def tolist(self) -> list[int]:
        """The ids as a list."""
        return list(self)

    @property
    def shape(self) -> torch.Size:
        """``(len(self),)``, as a 1-D tensor's shape."""
        return torch.Size([len(self)])

    def numel(self) -> int:
        """The number of ids."""
        return len(self)

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The ids as a tensor, moved (``ids.to(device)``)."""
        return self.tensor().to(*args, **kwargs)


class TextSample(NamedTuple):
    """One generated output: its token ids (up to and including EOS) and its decoded text.

    Sampled ones hold :class:`TokenIds`; a sample built by hand may hold a tuple, a list or a
    1-D tensor (padded or not), and every method that takes samples reads all of them alike.
    """

    token_ids: Sequence[int] | torch.Tensor
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
        drawn = [call_sample(self, c, sampling_size) for c in contexts]
        return [s for s, _ in drawn], torch.stack([lp for _, lp in drawn])

    def log_score_batch(
        self, samples: Sequence[Sequence[Any]], contexts: Sequence[Any], grad: bool = False
    ) -> torch.Tensor:
        """Log-probabilities of ``samples[c]`` given ``contexts[c]``, as a ``C x n`` tensor."""
        if len(samples) != len(contexts):
            raise ValueError(
                f"length mismatch: {len(samples)} groups of samples for {len(contexts)} contexts"
            )
        return torch.stack(
            [call_log_score(self, s, c, grad=grad) for s, c in zip(samples, contexts)]
        )


class BaseDistribution(Distribution):
    """A distribution that can serve as the base ``a`` of a target: it can be constrained.

    ``constrain(features, moments)`` returns the energy-based model closest to this
    distribution in KL that meets the moments (docs/design.md §2.2, §3).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """A new instance; ``BaseDistribution(score_fn)`` gives the original's scorer form."""
        if cls is BaseDistribution and (args or kwargs):
            # BaseDistribution(score_fn), the original disco's scorer form: an alias-layer class
            from disco.compat import scored_base_distribution

            return super().__new__(scored_base_distribution())
        return super().__new__(cls)

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
