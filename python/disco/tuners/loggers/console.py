"""Progress on the terminal: a tqdm bar on a TTY, plain lines elsewhere, and a closing summary."""

from __future__ import annotations

import fnmatch
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from tqdm import tqdm

from disco.tuners.loggers._util import metric_value
from disco.tuners.loggers.base import Logger, takes_original_form

__all__ = ["DEFAULT_CONSOLE_KEYS", "ConsoleLogger"]

#: The metrics the console shows when no ``keys`` are given (glob patterns; absent ones are skipped).
DEFAULT_CONSOLE_KEYS: tuple[str, ...] = (
    "loss",
    "kl_target_policy",
    "tv_target_policy",
    "js_target_policy",
    "kl",
    "tv",
    "js",
    "ess",
    "moment/*",
)


class ConsoleLogger(Logger):
    """Show a run's progress and key metrics on the console, then a one-line summary.

    On a terminal, a tqdm progress bar over the run's steps carries the metrics as its postfix.
    When the stream is not a terminal (a log file, a pipe, CI), it prints a plain line every
    ``every`` steps and at the last one instead, so no carriage returns pile up in the output.
    :meth:`close` ends with a summary line: the number of steps, the time taken and each shown
    metric's first and last value.

    The original disco's ``ConsoleLogger(tuner)`` is accepted too: it attaches a default console
    logger to the tuner.

    Parameters
    ----------
    keys:
        Metric names or glob patterns (``"moment/*"``) to show, in this order;
        ``None`` uses :data:`DEFAULT_CONSOLE_KEYS`. Metrics a run does not report are skipped.
    every:
        Refresh the shown metrics (bar postfix or plain line) every ``every`` steps.
    file:
        The stream to write to; ``None`` means ``sys.stderr`` at the time of :meth:`start`.
    bar:
        Force the tqdm bar on (``True``) or off (``False``); ``None`` uses it only on a terminal.
    precision:
        Significant digits of the shown values.
    """

    @takes_original_form
    def __init__(
        self,
        keys: Sequence[str] | None = None,
        every: int = 1,
        file: TextIO | None = None,
        bar: bool | None = None,
        precision: int = 4,
    ) -> None:
        if isinstance(keys, str):
            raise TypeError("keys must be a sequence of metric names or patterns, not one string")
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        if precision < 1:
            raise ValueError(f"precision must be at least 1, got {precision}")
        self.keys: tuple[str, ...] = DEFAULT_CONSOLE_KEYS if keys is None else tuple(keys)
        self.every = every
        self.file = file
        self.bar = bar
        self.precision = precision
        self._stream: TextIO | None = None
        self._pbar: Any = None  # a tqdm bar while one is shown
        self._total: int | None = None
        self._first: dict[str, float | int] = {}
        self._last: dict[str, float | int] = {}
        self._errors: dict[str, float | int] = {}  # the shown metrics' standard errors
        self._n_logged = 0
        self._last_step: int | None = None
        self._t0 = 0.0

    def start(self, config: Mapping[str, Any]) -> None:
        """Open the bar (or announce the run) for ``config["n_steps"]`` steps from ``start_step``."""
        self.close()
        stream = self.file if self.file is not None else sys.stderr
        self._stream = stream
        initial = int(config.get("start_step", 0) or 0)
        n_steps = config.get("n_steps")
        self._total = int(n_steps) if isinstance(n_steps, (int, float)) else None
        if self._total is not None and self._total < initial:
            self._total = None
        self._first, self._last = {}, {}
        self._n_logged = 0
        self._last_step = None
        self._t0 = time.perf_counter()
        use_bar = self.bar if self.bar is not None else _isatty(stream)
        if use_bar:
            self._pbar = tqdm(
                total=self._total,
                initial=initial,
                file=stream,
                desc="disco",
                unit="step",
                dynamic_ncols=True,
                leave=True,
            )

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Advance to ``step`` and refresh the shown metrics every ``every`` steps."""
        if self._stream is None:
            return
        chosen = self._select(metrics)
        shown = {k: metric_value(k, metrics[k]) for k in chosen}
        self._errors = {
            k: metric_value(k, metrics[f"{k}_stderr"]) for k in chosen if f"{k}_stderr" in metrics
        }
        for k, v in shown.items():
            self._first.setdefault(k, v)
        self._last.update(shown)
        self._last_step = step
        self._n_logged += 1
        refresh = step % self.every == 0 or step == self._total
        if self._pbar is not None:
            if refresh:
                self._pbar.set_postfix_str(self._format(shown), refresh=False)
            self._pbar.update(step - self._pbar.n)
        elif refresh:
            total = f"/{self._total}" if self._total is not None else ""
            elapsed = time.perf_counter() - self._t0
            line = f"step {step}{total} [{elapsed:.1f}s]"
            if shown:
                line += " | " + self._format(shown)
            self._write(line)

    def close(self) -> None:
        """Close the bar and print the summary line (nothing if the logger was not started)."""
        if self._stream is None:
            return
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        elapsed = time.perf_counter() - self._t0
        if self._last_step is None:
            self._write(f"disco: no step logged [{elapsed:.1f}s]")
        else:
            n = self._n_logged
            parts = [
                f"{k} {self._number(self._first[k])} -> {self._number(v)}"
                for k, v in self._last.items()
            ]
            plural = "s" if n != 1 else ""
            line = f"disco: {n} step{plural} in {elapsed:.1f}s (last step {self._last_step})"
            if parts:
                line += " | " + ", ".join(parts)
            self._write(line)
        self._stream = None

    def _select(self, metrics: Mapping[str, Any]) -> list[str]:
        chosen: list[str] = []
        for pattern in self.keys:
            if pattern in metrics:
                matches = [pattern]
            else:
                matches = [k for k in metrics if fnmatch.fnmatchcase(k, pattern)]
            # A `*_stderr` metric is shown beside its estimate, as `value±stderr`.
            chosen.extend(k for k in matches if k not in chosen and not k.endswith("_stderr"))
        return chosen

    def _number(self, value: float | int) -> str:
        if isinstance(value, int) or not math.isfinite(value):
            return str(value)
        return f"{value:.{self.precision}g}"

    def _format(self, shown: Mapping[str, float | int]) -> str:
        def one(k: str, v: float | int) -> str:
            error = self._errors.get(k)
            return f"{k}={self._number(v)}" + (
                f"±{self._number(error)}" if error is not None else ""
            )

        return " ".join(one(k, v) for k, v in shown.items())

    def _write(self, line: str) -> None:
        assert self._stream is not None
        self._stream.write(line + "\n")
        self._stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
