"""The original disco's module path for :class:`FDPGTuner`."""

from disco.tuners.tuner import FDPGTuner

__all__ = ["FDPGTuner"]
