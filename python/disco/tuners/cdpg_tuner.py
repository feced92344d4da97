"""The original disco's module path for :class:`CDPGTuner`."""

from disco.tuners.tuner import CDPGTuner

__all__ = ["CDPGTuner"]
