"""The original disco's module path for :class:`DPGTuner`."""

from disco.tuners.tuner import DPGTuner

__all__ = ["DPGTuner"]
