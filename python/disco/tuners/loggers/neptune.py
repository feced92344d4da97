"""Metrics to Neptune (the ``neptune`` client), offline by default."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from disco.tuners.loggers._util import exit_status, jsonable, metric_value, require
from disco.tuners.loggers.base import Logger, takes_original_form

__all__ = ["NeptuneLogger"]


class NeptuneLogger(Logger):
    """Log a run with Neptune: the config under ``parameters``, metrics as series, samples as text.

    The default ``mode="offline"`` needs no account and no network: neptune writes the run under
    ``.neptune/offline/`` in the working directory, and ``neptune sync`` uploads it later.
    Each metric ``name`` becomes the series ``metrics/<name>`` with the step as its step; samples
    go to the string series ``samples``. Each :meth:`start` opens a new Neptune run (a resumed
    ``tune()`` logs to a second run). If :meth:`close` runs while an exception propagates, the
    run is marked failed (``sys/failed``).

    The original disco's ``NeptuneLogger(tuner, project, name, api_token=None, **kwargs)`` is
    accepted too: it attaches the logger to the tuner and lets neptune choose the mode
    (``NEPTUNE_MODE``, else its default, online).

    Parameters
    ----------
    project:
        ``workspace/project`` (``None``: ``NEPTUNE_PROJECT``).
    name:
        The run's display name.
    api_token:
        The API token (``None``: ``NEPTUNE_API_TOKEN``; not needed offline).
    mode:
        ``"offline"``, ``"async"``, ``"sync"``, ``"debug"``; ``None``: neptune's own setting.
    **init_kwargs:
        Passed on to ``neptune.init_run`` (``tags``, ``description``, …). Hardware monitoring and
        stdout/stderr capture are off unless asked for here.

    Raises
    ------
    ImportError
        If neptune is not installed (``pip install "disco-control[neptune]"``).
    """

    @takes_original_form
    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        api_token: str | None = None,
        mode: str | None = "offline",
        **init_kwargs: Any,
    ) -> None:
        with warnings.catch_warnings():
            # neptune 1.x imports a deprecated jsonschema API; that warning is not the user's.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._neptune = require("neptune", "neptune", "NeptuneLogger")
        self.project = project
        self.name = name
        self.api_token = api_token
        self.mode = mode
        self.init_kwargs = {
            "capture_hardware_metrics": False,
            "capture_stdout": False,
            "capture_stderr": False,
            "source_files": [],
            "git_ref": False,
            **init_kwargs,
        }
        self.run: Any = None

    def start(self, config: Mapping[str, Any]) -> None:
        """Open a Neptune run and record ``config`` under ``parameters``."""
        self.close()
        self.run = self._neptune.init_run(
            project=self.project,
            name=self.name,
            api_token=self.api_token,
            mode=self.mode,
            **self.init_kwargs,
        )
        self.run["parameters"] = _neptune_safe(jsonable(dict(config)))

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Append each metric to its series ``metrics/<name>`` at ``step``."""
        run = self._require_run()
        for key, value in metrics.items():
            run[f"metrics/{key}"].append(float(metric_value(key, value)), step=int(step))

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Append the samples' texts to the string series ``samples``."""
        run = self._require_run()
        for sample in samples:
            text = sample.get("text", str(dict(sample)))
            run["samples"].append(str(text), step=int(step))

    def close(self) -> None:
        """Stop the run (marked failed while an exception propagates)."""
        if self.run is not None:
            run, self.run = self.run, None
            if exit_status() != "ok":
                run["sys/failed"] = True
            run.stop()

    def _require_run(self) -> Any:
        if self.run is None:
            raise RuntimeError("NeptuneLogger: call start() before logging")
        return self.run


def _neptune_safe(value: Any) -> Any:
    """Neptune stores strings, numbers and booleans (and dicts of them): lists become strings."""
    if isinstance(value, dict):
        return {str(k): _neptune_safe(v) for k, v in value.items()}
    if value is None or isinstance(value, (list, tuple)):
        return str(value)
    return value
