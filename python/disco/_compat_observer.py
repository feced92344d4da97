"""The original disco's tuner observer (``disco.tuners.loggers.base.BaseTunerObserver``).

Part of the alias layer: the core reaches it only through ``disco.tuners.loggers.base``'s
module ``__getattr__``, on first use of the name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from disco.compat import TUNER_SETTINGS

__all__ = ["BaseTunerObserver"]


class BaseTunerObserver:
    """The original's tuner observer: subclass it and override the ``on_...`` events.

    ``BaseTunerObserver(tuner)`` subscribes to the tuner's events, carried by a logger added to
    ``tuner.loggers``; it is a context manager (``with MyObserver(tuner): tuner.tune()``).
    Events, with the original's arguments:

    - ``on_parameters_updated(params)`` once per ``tune()``: the settings, under this
      package's names and the original's (``n_gradient_steps``, ``scoring_size``, ...);
    - ``on_step_idx_updated(s)`` before step ``s`` (from 0), ``on_ministep_idx_updated(k)``
      before each scoring batch ``k`` of a context, and ``on_eval_samples_updated(context,
      samples, proposal_log_scores, model_log_scores, target_log_scores)`` with that batch;
    - ``on_metric_updated(name, value)`` for every metric of a step under this package's names
      (``kl_target_policy``, ``moment/<name>``, ``loss``, ...) and ``z``; and every
      ``divergence_evaluation_interval`` steps the means over those steps under the original's
      names: ``kl_target_model`` (likewise ``tv_``, ``js_``), ``kl_model_base``, and per
      feature ``<name>_proposal`` (its mean over the proposal's samples) and ``<name>_target``
      (its moment under the model, ``moment/<name>``). ``kl_target_proposal`` (``tv_``,
      ``js_``) and ``loss`` have the same name in both and come every step.
    """

    def __init__(self, tuner: Any) -> None:
        tuner.loggers.append(_ObserverLogger(self, tuner))

    def __enter__(self) -> BaseTunerObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def on_parameters_updated(self, params: dict[str, Any]) -> None:
        pass

    def on_metric_updated(self, name: str, value: Any) -> None:
        pass

    def on_step_idx_updated(self, s: int) -> None:
        pass

    def on_ministep_idx_updated(self, s: int) -> None:
        pass

    def on_eval_samples_updated(
        self,
        context: Any,
        samples: Any,
        proposal_log_scores: Any,
        model_log_scores: Any,
        target_log_scores: Any,
    ) -> None:
        pass


#: This package's per-step metrics and the original's names for their interval means.
_INTERVAL_NAMES = {
    **{f"{m}_target_policy": f"{m}_target_model" for m in ("kl", "tv", "js")},
    "kl_policy_base": "kl_model_base",
}


class _ObserverLogger:
    """A logger that turns the tuner's calls into a :class:`BaseTunerObserver`'s events."""

    def __init__(self, observer: BaseTunerObserver, tuner: Any) -> None:
        self.observer = observer
        self.tuner = tuner
        self._reset()

    def _reset(self) -> None:
        self.step: int | None = None
        self.batch: tuple[Any, int] = (None, 0)
        self.window: list[Mapping[str, float]] = []
        self.proposal_sums: dict[str, list[float]] = {}

    def _announce(self, step: int) -> None:
        if step != self.step:
            self.step = step
            self.batch = (None, 0)
            self.observer.on_step_idx_updated(step - 1)

    def start(self, config: Mapping[str, Any]) -> None:
        self._reset()
        params = dict(config)
        for original, ours in TUNER_SETTINGS.items():
            if ours in params:
                params.setdefault(original, params[ours])
        self.observer.on_parameters_updated(params)

    def log_batch(
        self, step: int, context: Any, samples: Any, log_scores: Mapping[str, Any]
    ) -> None:
        self._announce(step)
        last, k = self.batch
        k = k if last == context or last is None else 0
        self.batch = (context, k + 1)
        self.observer.on_ministep_idx_updated(k)
        self.observer.on_eval_samples_updated(
            context, samples, log_scores["proposal"], log_scores["policy"], log_scores["target"]
        )
        for feature in self.tuner.config.features:
            name = getattr(feature, "name", repr(feature))
            values = feature.score(samples, context).double()
            total = self.proposal_sums.setdefault(name, [0.0, 0.0])
            total[0] += float(values.sum())
            total[1] += values.numel()

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        self._announce(step)
        for name, value in metrics.items():
            self.observer.on_metric_updated(name, value)
        if "log_z" in metrics:
            self.observer.on_metric_updated("z", math.exp(metrics["log_z"]))
        self.window.append(metrics)
        if step % self.tuner.config.proposal_update_interval:
            return
        for ours, original in _INTERVAL_NAMES.items():
            values = [m[ours] for m in self.window if ours in m]
            if values:
                self.observer.on_metric_updated(original, sum(values) / len(values))
        for name, (total, count) in self.proposal_sums.items():
            if count:
                self.observer.on_metric_updated(f"{name}_proposal", total / count)
            values = [m[f"moment/{name}"] for m in self.window if f"moment/{name}" in m]
            if values:
                self.observer.on_metric_updated(f"{name}_target", sum(values) / len(values))
        self.window = []
        self.proposal_sums = {}

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        pass

    def close(self) -> None:
        pass
