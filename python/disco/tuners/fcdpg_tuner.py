"""The original disco's module path for :class:`FCDPGTuner`."""

from disco.tuners.tuner import FCDPGTuner

__all__ = ["FCDPGTuner"]
