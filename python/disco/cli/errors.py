"""What the command reports instead of a traceback: user errors and an interrupted run."""

from __future__ import annotations

import signal

__all__ = ["TuningInterrupted", "UserError", "first_line"]


class UserError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""

    def __init__(self, what: str, key: str, fix: str) -> None:
        super().__init__(f"{what} ({key}): {fix}")


class TuningInterrupted(KeyboardInterrupt):
    """A signal stopped the run; the run folder holds a partial report (and a checkpoint).

    ``signum``: the signal (the exit status is 128 plus it).
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def first_line(err: BaseException) -> str:
    """An exception's message cut to one line (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
