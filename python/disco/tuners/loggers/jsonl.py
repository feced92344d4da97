"""Metrics as JSON lines: one object per line, each line flushed as it is written."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from disco.tuners.loggers._util import jsonable, metric_value
from disco.tuners.loggers.base import Logger, takes_original_form

__all__ = ["JSONLogger", "read_jsonl"]

_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class JSONLogger(Logger):
    """Write a run to a JSON-lines file that every line of can be read by :func:`json.loads`.

    The file holds three kinds of records, one per line:

    - ``{"config": {...}}``: the run's settings, written by each :meth:`start`;
    - ``{"step": k, "<metric>": value, ...}``: the metrics of step ``k``, one line per step;
    - ``{"step": k, "samples": [...]}``: samples recorded by :meth:`log_samples`.

    JSON has no NaN or infinity, so non-finite floats are written as the strings ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"`` (not ``null``, which would lose the difference between an
    infinite divergence and an undefined one); :func:`read_jsonl` turns them back into floats.
    Values that are not JSON types (numpy scalars, tensors) are converted, others written as
    ``str``. Each line is flushed as it is written, so a killed run keeps every step it logged.
    No environment variable is read, except by the original disco's form (next).

    The original disco's ``JSONLogger(tuner, project, name, path=None)`` is accepted too: it
    attaches the logger to the tuner and writes ``path/project/name.jsonl``, ``path`` defaulting
    to ``$DISCO_SAVE_PATH`` (the working directory when unset).

    Parameters
    ----------
    path:
        The file to write; missing parent directories are created.
    append:
        Append to an existing file instead of replacing it at the first :meth:`start`.
        Later starts of the same logger (a resumed ``tune()``) always append.
    """

    @takes_original_form
    def __init__(self, path: str | os.PathLike[str], append: bool = False) -> None:
        self.path = Path(path)
        self.append = append
        self._file: IO[str] | None = None
        self._opened_before = False

    def start(self, config: Mapping[str, Any]) -> None:
        """Open the file and write the config line."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if self.append or self._opened_before else "w"
        self._file = self.path.open(mode, encoding="utf-8")
        self._opened_before = True
        self._write({"config": jsonable(dict(config))})

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Write one line ``{"step": step, **metrics}``."""
        if "step" in metrics:
            raise ValueError("metrics: the name 'step' is reserved for the step number")
        record: dict[str, Any] = {"step": int(step)}
        for key, value in metrics.items():
            record[str(key)] = jsonable(metric_value(key, value))
        self._write(record)

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Write one line ``{"step": step, "samples": [...]}``."""
        self._write({"step": int(step), "samples": jsonable(list(samples))})

    def close(self) -> None:
        """Close the file (it stays complete up to the last line written)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._file is None:
            raise RuntimeError("JSONLogger: call start() before logging")
        # allow_nan=False: a non-finite float that slipped through fails here, not in a reader.
        self._file.write(json.dumps(record, allow_nan=False, ensure_ascii=False) + "\n")
        self._file.flush()


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a :class:`JSONLogger` file back: its records, in order.

    The strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` in metric records become floats
    again. An unreadable last line (a run killed while writing it) is dropped.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise
        if "step" in record and "samples" not in record:
            record = {
                k: _NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()
            }
        records.append(record)
    return records
