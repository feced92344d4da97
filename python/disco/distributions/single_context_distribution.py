"""The original disco's module path for :class:`SingleContextDistribution`."""

from disco.distributions.contexts import SingleContextDistribution

__all__ = ["SingleContextDistribution"]
