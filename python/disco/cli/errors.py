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

    ``signum``: the signal (the exit status is 128 plus it); ``between_steps``: whether tuning
    finished its step and checkpointed it first.
    """

    def __init__(self, signum: int = signal.SIGINT, between_steps: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.between_steps = between_steps


def first_line(err: BaseException) -> str:
    """An exception's message cut to one line (its type's name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
