"""The original disco's module path for :class:`AccumulationSampler`."""

from disco.samplers.accumulation import AccumulationSampler

__all__ = ["AccumulationSampler"]
