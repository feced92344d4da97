"""Metrics to Weights & Biases, offline by default."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from disco.tuners.loggers._util import exit_status, jsonable, metric_value, require
from disco.tuners.loggers.base import Logger, takes_original_form

__all__ = ["WandBLogger"]


class WandBLogger(Logger):
    """Log a run with Weights & Biases (``wandb``).

    The default ``mode="offline"`` needs no account and no network: the run is written under
    ``dir/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``. Metric names with
    ``/`` (``moment/x``) become W&B sections. Samples are logged as a ``wandb.Table`` under the
    key ``samples``. A resumed run (another :meth:`start` after :meth:`close`) continues the same
    run id. If :meth:`close` runs while an exception propagates (the tuner closes its loggers in
    a ``finally``), the run is finished with exit code 1.

    Parameters
    ----------
    project:
        The W&B project (``None``: wandb's default or ``WANDB_PROJECT``).
    mode:
        ``"offline"``, ``"online"`` or ``"disabled"``; ``None``: wandb's own setting
        (``WANDB_MODE``, else online). The original disco's ``WandBLogger(tuner, project, name)``
        attaches the logger to the tuner and uses ``mode=None``.
    dir:
        Where wandb writes its files (created if missing; ``None``: the working directory).
    **init_kwargs:
        Passed on to ``wandb.init`` (``name``, ``tags``, ``group``, ``entity``, ``settings``, …).

    Raises
    ------
    ImportError
        If wandb is not installed (``pip install "disco-control[wandb]"``).
    """

    @takes_original_form
    def __init__(
        self,
        project: str | None = None,
        mode: str | None = "offline",
        dir: str | os.PathLike[str] | None = None,
        **init_kwargs: Any,
    ) -> None:
        self._wandb = require("wandb", "wandb", "WandBLogger")
        self.project = project
        self.mode = mode
        self.dir = None if dir is None else Path(dir)
        self.init_kwargs = init_kwargs
        self.run: Any = None
        self.run_id: str | None = init_kwargs.pop("id", None)

    def start(self, config: Mapping[str, Any]) -> None:
        """Begin (or resume) the W&B run, with ``config`` as its config."""
        self.close()
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"reinit": "create_new", **self.init_kwargs}
        if self.run_id is not None:
            kwargs.update(id=self.run_id, resume="allow", allow_val_change=True)
        self.run = self._wandb.init(
            project=self.project,
            mode=self.mode,
            dir=None if self.dir is None else str(self.dir),
            config=jsonable(dict(config)),
            **kwargs,
        )
        self.run_id = self.run.id

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Log the metrics at ``step``."""
        run = self._require_run()
        run.log({str(k): metric_value(k, v) for k, v in metrics.items()}, step=int(step))

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Log the samples as a table under ``samples``."""
        run = self._require_run()
        columns: list[str] = []
        for sample in samples:
            columns.extend(str(k) for k in sample if str(k) not in columns)
        rows = [[_cell(sample.get(c)) for c in columns] for sample in samples]
        run.log({"samples": self._wandb.Table(columns=columns, data=rows)}, step=int(step))

    def close(self) -> None:
        """Finish the run (exit code 1 while an exception propagates)."""
        if self.run is not None:
            run, self.run = self.run, None
            run.finish(exit_code=0 if exit_status() == "ok" else 1)

    def _require_run(self) -> Any:
        if self.run is None:
            raise RuntimeError("WandBLogger: call start() before logging")
        return self.run


def _cell(value: Any) -> Any:
    value = jsonable(value)
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
