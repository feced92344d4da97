"""The logger interface the tuners call, and a composite that fans out to several loggers."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

__all__ = ["Logger", "LoggerList", "takes_original_form"]

_Init = TypeVar("_Init", bound=Callable[..., None])


def takes_original_form(init: _Init) -> _Init:
    """Let a logger's ``__init__`` also take the original disco's form ``Logger(tuner, ...)``.

    A first argument with a ``tune`` method is the original's tuner: the alias layer (imported
    on that first use only) translates the other arguments; the logger, once built, is
    attached to the tuner.
    """

    @functools.wraps(init)
    def init_either_way(self: Any, *args: Any, **kwargs: Any) -> None:
        if args and callable(getattr(args[0], "tune", None)):
            from disco.compat import original_logger_arguments

            tuner = args[0]
            init(self, **original_logger_arguments(self, tuner, args[1:], kwargs))
            tuner.loggers.append(self)  # once built: a logger that could not start is not attached
        else:
            init(self, *args, **kwargs)

    return cast(_Init, init_either_way)


class Logger:
    """Receives a tuning run's settings, metrics and samples; every method is a no-op here.

    A tuner calls :meth:`start` once before its first step, :meth:`log` after every step,
    :meth:`log_samples` now and then, and :meth:`close` once at the end, also when the run stops
    on an exception or Ctrl-C. A tuner resumed with another ``tune()`` call starts the same logger
    again after closing it, so subclasses accept ``start`` after ``close``. ``close`` must be
    safe to call twice, or without a ``start``. Loggers are context managers that close on exit.
    """

    def start(self, config: Mapping[str, Any]) -> None:
        """Begin a run; ``config`` holds the run's settings (``"n_steps"``, ``"start_step"``, …)."""

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Record the metrics of step ``step`` (names such as ``"kl_target_policy"``, ``"moment/x"``)."""

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Record a few samples (texts with their scores) drawn at step ``step``."""

    def log_batch(
        self, step: int, context: Any, samples: Sequence[Any], log_scores: Mapping[str, Any]
    ) -> None:
        """See each scoring batch of step ``step``: its samples for ``context`` and log-scores.

        ``log_scores`` maps ``"proposal"``, ``"policy"`` and ``"target"`` to 1-D float64
        tensors. Called on the main process, with that process's batches.
        """

    def close(self) -> None:
        """End the run and release files or connections."""

    def __enter__(self) -> Logger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LoggerList(Logger):
    """Several loggers behind one: each call goes to every logger, in order.

    One logger's failure does not keep the others from their call: the first exception is
    raised once all have been called. If a ``start`` fails, the loggers already started are
    closed before the exception propagates, so nothing is left open.
    """

    def __init__(self, loggers: Iterable[Logger] = ()) -> None:
        self.loggers: list[Logger] = []
        for logger in loggers:
            if isinstance(logger, LoggerList):
                self.loggers.extend(logger.loggers)
            else:
                self.loggers.append(logger)

    def __iter__(self) -> Iterator[Logger]:
        return iter(self.loggers)

    def __len__(self) -> int:
        return len(self.loggers)

    def start(self, config: Mapping[str, Any]) -> None:
        """Start every logger; on a failure close the ones started and re-raise."""
        started: list[Logger] = []
        try:
            for logger in self.loggers:
                logger.start(config)
                started.append(logger)
        except BaseException:
            for logger in reversed(started):
                with contextlib.suppress(Exception):  # the start failure is the one to report
                    logger.close()
            raise

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Pass the step's metrics to every logger."""
        _call_all(self.loggers, "log", step, metrics)

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Pass the samples to every logger."""
        _call_all(self.loggers, "log_samples", step, samples)

    def log_batch(
        self, step: int, context: Any, samples: Sequence[Any], log_scores: Mapping[str, Any]
    ) -> None:
        """Pass the batch to every logger."""
        seeing = [logger for logger in self.loggers if hasattr(logger, "log_batch")]
        _call_all(seeing, "log_batch", step, context, samples, log_scores)

    def close(self) -> None:
        """Close every logger, even when one of them fails."""
        _call_all(self.loggers, "close")


def _call_all(loggers: Sequence[Logger], method: str, *args: Any) -> None:
    first: Exception | None = None
    for logger in loggers:
        try:
            getattr(logger, method)(*args)
        except Exception as exc:
            if first is None:
                first = exc
    if first is not None:
        raise first


def __getattr__(name: str) -> Any:
    # The original disco's observer base class lived here; it belongs to the alias layer.
    if name == "BaseTunerObserver":
        from disco._compat_observer import BaseTunerObserver

        return BaseTunerObserver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
