"""Metrics to MLflow tracking, through an ``MlflowClient`` (no global active run)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from disco.tuners.loggers._util import exit_status, flatten, jsonable, metric_value, require
from disco.tuners.loggers.base import Logger, takes_original_form

__all__ = ["MLFlowLogger", "MLflowLogger"]

# MLflow's limits per log_batch call and per parameter value.
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_VALUE = 6000
# MLflow names allow alphanumerics, "_", "-", ".", " ", ":" and "/"; anything else becomes "_".
_UNSAFE = re.compile(r"[^\w\-. :/]")
_STATUS = {"ok": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


class MLflowLogger(Logger):
    """Log a run to MLflow: the config as parameters, metrics per step, samples as artifacts.

    The logger talks to its own ``MlflowClient``, so it neither needs nor disturbs
    ``mlflow.start_run``'s active run. Nested config keys are joined with ``.``; values longer
    than MLflow's limit are cut. MLflow's parameters are immutable, so a resumed run (another
    :meth:`start` after :meth:`close`) reopens the same run and adds only parameters it has not
    logged yet. Names are kept, ``/`` included; characters MLflow rejects become ``_``. Samples
    go to the artifact ``samples/step-XXXXXXXX.json``. If :meth:`close` runs while an exception
    propagates, the run ends as ``FAILED`` (``KILLED`` on Ctrl-C) instead of ``FINISHED``.

    The original disco's ``MLFlowLogger(tuner, project, name)`` is accepted too: it attaches the
    logger to the tuner, with ``project`` as the experiment and ``name`` as the run name.

    Parameters
    ----------
    tracking_uri:
        ``None`` uses MLflow's default (``MLFLOW_TRACKING_URI`` or its local default). A URI
        with a scheme (``sqlite:///runs.db``, ``http://host:5000``, ``file:///...``) is used as
        is. A plain path is a local file store directory (created if missing). MLflow ≥ 3.7
        refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE`` is true, so for a plain path or
        a ``file:`` URI the logger sets that variable to ``true`` when it is unset.
    experiment_name:
        The experiment, created if it does not exist.
    run_name:
        The run's display name (``None``: MLflow picks one).
    tags:
        Tags for the run.

    Raises
    ------
    ImportError
        If mlflow is not installed (``pip install "disco-control[mlflow]"``).
    """

    @takes_original_form
    def __init__(
        self,
        tracking_uri: str | os.PathLike[str] | None = None,
        experiment_name: str = "disco",
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self._tracking = require("mlflow.tracking", "mlflow", "MLflowLogger")
        self._entities = require("mlflow.entities", "mlflow", "MLflowLogger")
        self.tracking_uri = _resolve_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.client: Any = None
        self.run_id: str | None = None
        self._params: set[str] = set()
        self._active = False

    def start(self, config: Mapping[str, Any]) -> None:
        """Create the run (or reopen it) and log the config as parameters."""
        self.close()
        if self.client is None:
            if self.tracking_uri is not None and self.tracking_uri.startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self.client = self._tracking.MlflowClient(tracking_uri=self.tracking_uri)
        client = self.client
        if self.run_id is None:
            experiment = client.get_experiment_by_name(self.experiment_name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(self.experiment_name)
            )
            run = client.create_run(
                experiment_id,
                run_name=self.run_name,
                tags={str(k): str(v) for k, v in self.tags.items()},
            )
            self.run_id = run.info.run_id
        else:
            client.update_run(self.run_id, status="RUNNING")
        self._active = True
        params = []
        for key, value in flatten(config).items():
            name = _safe_name(key)
            if name in self._params:
                continue
            self._params.add(name)
            text = value if isinstance(value, str) else json.dumps(jsonable(value), allow_nan=False)
            params.append(self._entities.Param(name, text[:_MAX_PARAM_VALUE]))
        for i in range(0, len(params), _MAX_PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=params[i : i + _MAX_PARAMS_PER_BATCH])

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        """Log the metrics at ``step`` in one batch."""
        run_id = self._require_run()
        now = int(time.time() * 1000)
        Metric = self._entities.Metric
        batch = [
            Metric(_safe_name(str(k)), float(metric_value(k, v)), now, int(step))
            for k, v in metrics.items()
        ]
        for i in range(0, len(batch), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=batch[i : i + _MAX_METRICS_PER_BATCH])

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Store the samples as the JSON artifact ``samples/step-XXXXXXXX.json``."""
        run_id = self._require_run()
        self.client.log_dict(run_id, jsonable(list(samples)), f"samples/step-{int(step):08d}.json")

    def close(self) -> None:
        """End the run: ``FINISHED``, or ``FAILED``/``KILLED`` while an exception propagates."""
        if self._active:
            self._active = False
            self.client.set_terminated(self.run_id, status=_STATUS[exit_status()])

    def _require_run(self) -> str:
        if not self._active or self.run_id is None:
            raise RuntimeError("MLflowLogger: call start() before logging")
        return self.run_id


MLFlowLogger = MLflowLogger
"""The original disco's spelling of :class:`MLflowLogger`."""


def _safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name)


def _resolve_uri(uri: str | os.PathLike[str] | None) -> str | None:
    if uri is None:
        return None
    text = os.fspath(uri)
    scheme = urlparse(text).scheme
    # A one-letter "scheme" is a Windows drive ("C:\\runs"); "databricks" has no "://".
    if (len(scheme) > 1) or text.startswith("databricks"):
        return text
    path = Path(text).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()
