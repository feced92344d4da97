"""Metrics as TensorBoard scalars, through ``torch.utils.tensorboard``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from disco.tuners.loggers._util import flatten, jsonable, metric_value, require
from disco.tuners.loggers.base import Logger

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(Logger):
    """Write a run as TensorBoard event files in ``log_dir``.

    Every metric becomes a scalar series at its step (names with ``/``, such as ``moment/x``,
    are grouped by TensorBoard under their prefix). The config is written both as a text summary
    (``config``, pretty JSON) and as hyperparameters (the HParams tab; nested keys joined by
    ``.``, values other than numbers, strings and booleans as their JSON text). Samples become a
    markdown table under the text tag ``samples``. A resumed run (another :meth:`start`) adds a
    new event file to the same directory; TensorBoard reads them as one run.

    Parameters
    ----------
    log_dir:
        The run's directory (created if missing).
    flush_secs:
        How often, in seconds, pending events are written to disk.

    Raises
    ------
    ImportError
        If tensorboard is not installed (``pip install "disco-control[tensorboard]"``).
    """

    def __init__(self, log_dir: str | os.PathLike[str], flush_secs: float = 10.0) -> None:
        self._tb = require(
            "torch.utils.tensorboard", "tensorboard", "TensorBoardLogger", "tensorboard"
        )
        self._summary = require(
            "torch.utils.tensorboard.summary", "tensorboard", "TensorBoardLogger", "tensorboard"
        )
        self.log_dir = Path(log_dir)
        self.flush_secs = flush_secs
        self._writer: Any = None

    def start(self, config: Mapping[str, Any]) -> None:
        """Open a writer and record the config as text and hyperparameters."""
        self.close()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = self._tb.SummaryWriter(log_dir=str(self.log_dir), flush_secs=self.flush_secs)
        step = int(config.get("start_step", 0) or 0)
        text = json.dumps(jsonable(dict(config)), indent=2, allow_nan=False, ensure_ascii=False)
        # Four spaces make a markdown code block: TensorBoard renders text summaries as markdown.
        self._writer.add_text("config", "    " + text.replace("\n", "\n    "), step)
        hparams = {k: _hparam(v) for k, v in flatten(config).items()}
        for summary in self._summary.hparams(hparams, {}):
            self._writer.file_writer.add_summary(summary)

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Add each metric as a scalar at ``step``."""
        writer = self._require_writer()
        for key, value in metrics.items():
            writer.add_scalar(str(key), float(metric_value(key, value)), int(step))

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Add the samples as a markdown table (text tag ``samples``)."""
        self._require_writer().add_text("samples", _markdown_table(samples), int(step))

    def close(self) -> None:
        """Flush and close the writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _require_writer(self) -> Any:
        if self._writer is None:
            raise RuntimeError("TensorBoardLogger: call start() before logging")
        return self._writer


def _hparam(value: Any) -> bool | int | float | str:
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(jsonable(value), allow_nan=False, ensure_ascii=False)


def _markdown_table(samples: Sequence[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for sample in samples:
        columns.extend(str(k) for k in sample if str(k) not in columns)
    if not columns:
        return "(no samples)"

    def cell(value: Any) -> str:
        text = value if isinstance(value, str) else json.dumps(jsonable(value), ensure_ascii=False)
        return text.replace("|", "\\|").replace("\n", "<br>")

    rows = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *(
            "| " + " | ".join(cell(s.get(c, "")) for c in columns) + " |"
            for s in ({str(k): v for k, v in sample.items()} for sample in samples)
        ),
    ]
    return "\n".join(rows)
