"""The original disco's module path for :class:`ContextDistribution`."""

from disco.distributions.contexts import ContextDistribution

__all__ = ["ContextDistribution"]
