"""The original disco's module path for :class:`FCDPGTuner`."""

from disco.tuners.front_ends import FCDPGTuner

__all__ = ["FCDPGTuner"]
