"""The original disco's module path for :class:`ExponentialScorer`."""

from disco.scorers.base import ExponentialScorer

__all__ = ["ExponentialScorer"]
