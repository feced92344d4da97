"""Scorers: features of samples, positive factors, and their products (energy-based models).

A :class:`Scorer` is a real-valued feature ``phi(x, c)``; a :class:`PositiveScorer` is a
non-negative factor of an unnormalised distribution and exposes ``log_score``; a
:class:`Product` multiplies factors (a base distribution included) into an EBM
``P(x) = a(x) b(x) exp(lambda . phi(x))`` (docs/design.md §2.2). Everything scores whole batches and
returns float64 tensors; ``-inf`` log-scores (probability zero) stay exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from disco._calls import call_log_score

# torch is imported where it is used: the feature registry and the command's checks import
# this module, and cost no torch.
if TYPE_CHECKING:
    import torch

__all__ = [
    "BooleanScorer",
    "ExponentialScorer",
    "PositiveScorer",
    "Product",
    "Scorer",
    "as_scorer",
]


def _as_scores(values: Any, n: int, who: str) -> torch.Tensor:
    """Turns a scoring function's output into a finite float64 CPU tensor of length ``n``."""
    import torch

    if isinstance(values, torch.Tensor):
        scores = values.detach().to("cpu", torch.float64).reshape(-1)
    else:
        scores = torch.as_tensor(np.asarray(values, dtype=np.float64).reshape(-1))
    if scores.numel() != n:
        raise ValueError(f"{who} returned {scores.numel()} values for {n} samples")
    bad = ~torch.isfinite(scores)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{who} returned {scores[i].item()} for sample {i}: scores must be finite")
    return scores


class _ClassName:
    """A scorer's default ``name``: its class name, until ``__init__`` sets one.

    A subclass written the original disco's way may skip ``Scorer.__init__``; it still has a name.
    """

    def __get__(self, obj: Any, owner: type) -> str:
        return owner.__name__


class Scorer:
    """A real-valued feature of a sample and its context, scored in batches.

    Parameters
    ----------
    scoring_function:
        ``f(sample, context) -> float``, or with ``batched=True``
        ``f(samples, context) -> sequence of floats``.
    batched:
        Whether ``scoring_function`` takes the whole list of samples at once.
    name:
        Used in error messages and reports (defaults to the function's name).
    """

    name: str = _ClassName()  # type: ignore[assignment]
    batched: bool = False
    spec: dict[str, Any] | None = None

    def __init__(
        self,
        scoring_function: Callable[..., Any],
        batched: bool = False,
        name: str | None = None,
    ) -> None:
        if not callable(scoring_function):
            raise TypeError(f"scoring_function must be callable, got {scoring_function!r}")
        self.scoring_function = scoring_function
        self.batched = batched
        self.name: str = str(name or getattr(scoring_function, "__name__", type(self).__name__))
        self.spec: dict[str, Any] | None = None
        """How to rebuild this scorer (see :mod:`disco.features`); ``None`` for arbitrary code."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @staticmethod
    def _broadcast(
        function: Callable[[Any, Any], Any],
    ) -> Callable[[Sequence[Any], Any], list[Any]]:
        """``f(sample, context)`` made into ``f(samples, context) -> list`` (the original's helper).

        For scorers written the original disco's way: ``self._broadcast(self.my_feature)``.
        """

        def on_each(samples: Sequence[Any], context: Any) -> list[Any]:
            return [function(s, context) for s in samples]

        return on_each

    def _raw(self, samples: Sequence[Any], context: Any) -> Any:
        if self.batched:
            return self.scoring_function(list(samples), context)
        return [self.scoring_function(s, context) for s in samples]

    def score(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """The feature's value for each sample, as a float64 tensor."""
        return _as_scores(self._raw(samples, context), len(samples), f"scorer {self.name!r}")


class CountMismatchError(ValueError, TypeError):
    """Two lists that go together (features and moments or coefficients) differ in length.

    A ``ValueError`` like every bad input here, and a ``TypeError`` as the original disco raised.
    """


def as_list(value: Any, name: str) -> list[Any]:
    """``value`` (a list, tuple or 1-D array) as a list; a bare item is a ``TypeError``.

    ``ExponentialScorer([f], 0.5)`` or ``constrain(feature, ...)`` name one item where a list
    of them belongs; taking the number or the scorer for a list of one would hide the mistake.
    """
    import torch

    if isinstance(value, np.ndarray | torch.Tensor):
        if value.ndim != 1:
            raise TypeError(
                f"{name} must be passed as a list (or a 1-D array); got shape {tuple(value.shape)}"
            )
        return list(value.tolist())
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be passed as a list, one entry per feature; got {type(value).__name__} "
            f"{value!r}"
        )
    return list(value)


def as_scorer(feature: Any, index: int) -> Scorer:
    """``feature`` as a :class:`Scorer`: scorers pass through, a bare ``f(sample, context)`` is wrapped."""
    if isinstance(feature, Scorer):
        return feature
    if callable(feature):
        return Scorer(feature, name=getattr(feature, "__name__", f"feature_{index}"))
    raise TypeError(f"features[{index}] must be a Scorer or a callable, got {feature!r}")


class PositiveScorer(Scorer):
    """A non-negative factor of an unnormalised distribution; ``log_score = log(score)``.

    ``scoring_function`` returns non-negative values (0 is allowed and gives ``-inf``).
    Multiplying positive scorers (or a distribution) with ``*`` builds a :class:`Product`.
    """

    def score(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """The factor's value for each sample (non-negative)."""
        scores = super().score(samples, context)
        if (scores < 0).any():
            i = int((scores < 0).nonzero()[0])
            raise ValueError(
                f"positive scorer {self.name!r} returned {scores[i].item()} for sample {i}: "
                "values must be non-negative"
            )
        return scores

    def log_score(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """``log`` of the factor for each sample (``-inf`` where it is 0)."""
        import torch

        return torch.log(self.score(samples, context))

    def __mul__(self, other: Any) -> Product:
        return Product(self, other)

    def __rmul__(self, other: Any) -> Product:
        return Product(other, self)


class BooleanScorer(PositiveScorer):
    """A predicate: ``score`` is 1.0 or 0.0 and ``log_score`` is 0 or ``-inf``.

    As a feature it has a moment in [0, 1] (how often it holds); with moment 1.0 it becomes a
    pointwise constraint of the target.
    """

    def score(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """1.0 where the predicate holds, else 0.0."""
        import torch

        raw = self._raw(samples, context)
        values = torch.as_tensor(np.asarray(raw, dtype=bool).reshape(-1), dtype=torch.float64)
        if values.numel() != len(samples):
            raise ValueError(
                f"boolean scorer {self.name!r} returned {values.numel()} values for {len(samples)} samples"
            )
        return values

    def negation(self) -> BooleanScorer:
        """The predicate that holds exactly where this one does not."""
        negated = BooleanScorer(
            lambda samples, context: [not v for v in self.score(samples, context).bool().tolist()],
            batched=True,
            name=f"not {self.name}",
        )
        if self.spec is not None:  # still savable as data (disco.features' "not")
            negated.spec = {"type": "not", "feature": dict(self.spec)}
        return negated


class ExponentialScorer(PositiveScorer):
    """The factor ``exp(sum_k coefficients[k] * features[k](x))``.

    Parameters
    ----------
    features:
        Scorers giving ``phi_k``.
    coefficients:
        The ``lambda_k`` (finite).
    """

    def __init__(
        self, features: Sequence[Scorer | Callable[..., Any]], coefficients: Sequence[float] | Any
    ) -> None:
        import torch

        features = as_list(features, "features")
        if isinstance(coefficients, torch.Tensor):
            coefficients = coefficients.detach().cpu()
        coefficients = np.asarray(as_list(coefficients, "coefficients"), dtype=np.float64)
        if len(features) != coefficients.size:
            raise CountMismatchError(
                f"{len(features)} features but {coefficients.size} coefficients"
            )
        if not np.all(np.isfinite(coefficients)):
            raise ValueError(f"coefficients must be finite, got {coefficients.tolist()}")
        self.features = [as_scorer(f, k) for k, f in enumerate(features)]
        self.coefficients = torch.as_tensor(coefficients)
        super().__init__(
            self._energy, batched=True, name="exp(" + ", ".join(f.name for f in self.features) + ")"
        )

    def __repr__(self) -> str:
        terms = ", ".join(
            f"{c:.6g}*{f.name}" for f, c in zip(self.features, self.coefficients.tolist())
        )
        return f"ExponentialScorer({terms})"

    def feature_matrix(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """``N x K`` matrix of the features' values."""
        import torch

        if not samples:
            return torch.zeros((0, len(self.features)), dtype=torch.float64)
        n = len(samples)
        return torch.stack(
            [
                _as_scores(f.score(samples, context), n, f"feature {f.name!r}")
                for f in self.features
            ],
            dim=1,
        )

    def log_score(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """``lambda . phi(x)`` for each sample."""
        return self.feature_matrix(samples, context) @ self.coefficients

    def _energy(self, samples: Sequence[Any], context: Any) -> torch.Tensor:
        import torch

        return torch.exp(self.log_score(samples, context))

    def score(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """``exp(lambda . phi(x))`` (may overflow to inf for extreme energies: use log_score)."""
        return self._energy(samples, context)


class Product(PositiveScorer):
    """The product of positive factors: an unnormalised distribution (EBM) over samples.

    Factors are positive scorers or distributions (anything with ``log_score(samples,
    context)``); ``log_score`` is the sum of their log-scores. Nested products are flattened.
    ``fit_report`` holds the coefficient fit when the product came from ``constrain``.
    """

    def __init__(self, *factors: Any) -> None:
        flat: list[Any] = []
        for f in factors:
            if isinstance(f, Product):
                flat.extend(f.factors)
            elif hasattr(f, "log_score"):
                flat.append(f)
            else:
                raise TypeError(f"cannot multiply by {f!r}: factors need a log_score method")
        if not flat:
            raise ValueError("a product needs at least one factor")
        self.factors: list[Any] = flat
        self.fit_report: Any = None
        super().__init__(self._product, batched=True, name=" * ".join(self._name(f) for f in flat))

    @staticmethod
    def _name(factor: Any) -> str:
        return getattr(factor, "name", None) or type(factor).__name__

    def __repr__(self) -> str:
        return f"Product({', '.join(repr(f) for f in self.factors)})"

    @property
    def scorers(self) -> list[Any]:
        """:attr:`factors` (the original disco's name): ``scorers[0]`` is the base."""
        return self.factors

    def log_score(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """Sum of the factors' log-scores (``-inf`` wherever any factor is zero)."""
        import torch

        total = torch.zeros(len(samples), dtype=torch.float64)
        for factor in self.factors:
            scores = call_log_score(factor, samples, context)
            scores = scores.detach().to("cpu", torch.float64).reshape(-1)
            if scores.numel() != len(samples):
                raise ValueError(
                    f"factor {self._name(factor)!r} returned {scores.numel()} log-scores for {len(samples)} samples"
                )
            if torch.isnan(scores).any() or (scores == float("inf")).any():
                i = int((torch.isnan(scores) | (scores == float("inf"))).nonzero()[0])
                raise ValueError(
                    f"factor {self._name(factor)!r} returned log-score {scores[i].item()} for sample {i}"
                )
            total = total + scores
        return total

    def _product(self, samples: Sequence[Any], context: Any) -> torch.Tensor:
        import torch

        return torch.exp(self.log_score(samples, context))

    def score(self, samples: Sequence[Any], context: Any = "") -> torch.Tensor:
        """``exp(log_score)``; prefer ``log_score``, which cannot overflow."""
        return self._product(samples, context)
