"""The original disco's module path for :class:`DPGTuner`."""

from disco.tuners.front_ends import DPGTuner

__all__ = ["DPGTuner"]
