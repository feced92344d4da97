"""Ctrl-C during tuning: finish the step in progress, then stop at a step boundary."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Mapping
from typing import Any

from disco.tuners.checkpoint import kill_point
from disco.tuners.loggers import Logger

__all__ = ["StopBetweenSteps", "StoppedBetweenSteps"]


class StoppedBetweenSteps(KeyboardInterrupt):
    """Raised by :class:`StopBetweenSteps` after the step in which Ctrl-C arrived."""


class StopBetweenSteps(Logger):
    """A logger that stops the run after the step during which Ctrl-C arrived.

    The checkpoint written then is a step boundary, so resuming is exact; a second Ctrl-C stops
    at once. Give it to the tuner as its last logger (so the others have logged the step), and
    enter it (``with stopper:``) around ``tune()`` to install its SIGINT handler.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Stop here, after step ``step`` is logged, if Ctrl-C was pressed during it."""
        kill_point(f"tuning: step {step} logged")
        if self.requested:
            raise StoppedBetweenSteps

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ndisco: stopping after this step (Ctrl-C again stops at once)", file=sys.stderr)

    def __enter__(self) -> StopBetweenSteps:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
