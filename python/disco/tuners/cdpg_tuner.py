"""The original disco's module path for :class:`CDPGTuner`."""

from disco.tuners.front_ends import CDPGTuner

__all__ = ["CDPGTuner"]
