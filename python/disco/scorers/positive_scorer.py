"""The original disco's module path for :class:`PositiveScorer` and :class:`Product`."""

from disco.scorers.base import PositiveScorer, Product

__all__ = ["PositiveScorer", "Product"]
