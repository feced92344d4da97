"""The original disco's module path for :class:`LMDistribution` and :class:`TextSample`."""

from disco.distributions.base import TextSample
from disco.distributions.lm import LMDistribution

__all__ = ["LMDistribution", "TextSample"]
