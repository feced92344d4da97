"""Ctrl-C, SIGTERM and SIGUSR1 during a run: finish the tuning step in progress, then stop.

Schedulers stop jobs with SIGTERM and a grace period (SLURM can send SIGUSR1 ahead of its time
limit), so those signals do what the first Ctrl-C does. The exit status of a stopped run is 128
plus the signal's number, the shell's convention (130 for SIGINT, 143 for SIGTERM, 138 for
SIGUSR1 on Linux): distinct from success (0), an error to fix (2) and a crash (1).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

__all__ = ["STOP_SIGNALS", "StopBetweenSteps", "StoppedBetweenSteps", "StoppedBySignal"]

# The signals that stop a run cleanly (SIGUSR1 does not exist on Windows).
STOP_SIGNALS = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None
)


class StoppedBySignal(KeyboardInterrupt):
    """A stop signal stopped the run at once (outside a tuning step, or a second signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StoppedBetweenSteps(StoppedBySignal):
    """Tuning stopped at a step boundary, after that step's checkpoint, on a stop signal."""


class StopBetweenSteps:
    """Handles the stop signals for a run (``with stopper:`` installs the handlers).

    While a tuner is watched (:meth:`watch`), the first signal asks it to stop at the end of the
    step in progress (:meth:`~disco.tuners.Tuner.request_stop`); outside tuning, or on a second
    signal, :class:`StoppedBySignal` is raised at once, keeping the last checkpoint.
    """

    def __init__(self) -> None:
        self.signum: int | None = None  # the first signal received
        self._tuner: Any = None
        self._previous: dict[int, Any] = {}

    def watch(self, tuner: Any) -> None:
        """Let the first signal stop ``tuner`` between steps (``None``: stop at once again)."""
        self._tuner = tuner

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None or self._tuner is None:
            self.signum = self.signum or signum
            raise StoppedBySignal(signum)
        self.signum = signum
        self._tuner.request_stop()
        name = signal.Signals(signum).name
        print(
            f"\ndisco: {name}: stopping after this step (a second signal stops at once)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> StopBetweenSteps:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:  # None: a handler not installed from Python, left alone
                signal.signal(signum, previous)
        self._previous.clear()
