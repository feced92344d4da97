"""The original disco's module path for :class:`Scorer`."""

from disco.scorers.base import Scorer

__all__ = ["Scorer"]
