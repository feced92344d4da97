"""The original disco's module path for :class:`DatasetContextDistribution`."""

from disco.distributions.contexts import DatasetContextDistribution

__all__ = ["DatasetContextDistribution"]
