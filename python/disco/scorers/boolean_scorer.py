"""The original disco's module path for :class:`BooleanScorer`."""

from disco.scorers.base import BooleanScorer

__all__ = ["BooleanScorer"]
