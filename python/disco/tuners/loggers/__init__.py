"""Loggers for tuning runs: console, JSON lines, TensorBoard, Weights & Biases, MLflow, Neptune.

A tuner takes any number of :class:`Logger` objects (or one :class:`LoggerList`); it calls
``start(config)`` once, ``log(step, metrics)`` after every step, ``log_samples(step, samples)``
now and then, ``log_batch(step, context, samples, log_scores)`` (when defined) with each scoring
batch, and ``close()`` at the end, also after an exception. The TensorBoard, W&B,
MLflow and Neptune loggers import their library only when constructed, and raise an ImportError
naming the extra to install (``pip install "disco-control[tensorboard]"``, ``"disco-control[wandb]"``,
``"disco-control[mlflow]"``, ``"disco-control[neptune]"``). The original disco's form ``Logger(tuner, ...)``
attaches a logger to a tuner, and ``disco.tuners.loggers.base.BaseTunerObserver`` is the original's
observer base class (see :mod:`disco.compat`).
"""

from collections.abc import Callable
from pathlib import Path

from disco.registry import Registry
from disco.tuners.loggers.base import Logger, LoggerList
from disco.tuners.loggers.console import DEFAULT_CONSOLE_KEYS, ConsoleLogger
from disco.tuners.loggers.jsonl import JSONLogger, read_jsonl
from disco.tuners.loggers.mlflow import MLFlowLogger, MLflowLogger
from disco.tuners.loggers.neptune import NeptuneLogger
from disco.tuners.loggers.tensorboard import TensorBoardLogger
from disco.tuners.loggers.wandb import WandBLogger

__all__ = [
    "DEFAULT_CONSOLE_KEYS",
    "LOGGERS",
    "ConsoleLogger",
    "JSONLogger",
    "Logger",
    "LoggerList",
    "MLFlowLogger",
    "MLflowLogger",
    "NeptuneLogger",
    "TensorBoardLogger",
    "WandBLogger",
    "read_jsonl",
]

# The loggers a ``disco run`` may add to its console and metrics.jsonl ones (``[output] loggers``),
# each built for the run folder: a new logger is its class plus one line here.
LOGGERS: Registry[Callable[[Path], Logger]] = Registry("logger")
LOGGERS.register(
    lambda run: TensorBoardLogger(run / "tensorboard"),
    name="tensorboard",
    about="TensorBoard event files in RUN_DIR/tensorboard (pip install 'disco-control[tensorboard]')",
)
LOGGERS.register(
    lambda run: WandBLogger(project="disco", dir=run),
    name="wandb",
    about="Weights & Biases, offline, in RUN_DIR/wandb (pip install 'disco-control[wandb]')",
)
LOGGERS.register(
    lambda run: MLflowLogger(tracking_uri=run / "mlruns"),
    name="mlflow",
    about="MLflow, a file store in RUN_DIR/mlruns (pip install 'disco-control[mlflow]')",
)
LOGGERS.register(
    lambda run: NeptuneLogger(),
    name="neptune",
    about="Neptune, offline, in ./.neptune (pip install 'disco-control[neptune]')",
)
