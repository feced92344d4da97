"""The original disco's module path for :class:`FDPGTuner`."""

from disco.tuners.front_ends import FDPGTuner

__all__ = ["FDPGTuner"]
