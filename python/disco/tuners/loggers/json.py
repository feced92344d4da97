"""The original disco's module path for :class:`JSONLogger` (JSON lines, see :mod:`.jsonl`)."""

from disco.tuners.loggers.jsonl import JSONLogger

__all__ = ["JSONLogger"]
