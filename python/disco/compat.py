"""The original disco's spellings, and where each one lands in this package.

Code written for the original ``disco`` (``disco-generation`` on PyPI, its README and tutorial
notebooks) runs here unchanged. This package's own API stays the primary one; the original's
documented forms are thin aliases onto it. None of them warns. The translation of the original's
keywords happens in this module only (:func:`tuner_arguments`, :func:`constrain_arguments`,
:func:`lm_arguments`, :func:`original_logger_arguments`); the original's module paths are
made from one table in :mod:`disco._aliases`, which also lists the core's only (lazy)
references to this layer.

Module paths
    The original's one-class modules (``disco.distributions.lm_distribution``,
    ``disco.scorers.boolean_scorer``, ``disco.tuners.dpg_tuner``, ``disco.tuners.loggers.json``
    ...) are made on import from one table, :data:`disco._aliases.ORIGINAL_MODULES`;
    ``disco.tuners.loggers.neptune`` (``NeptuneLogger``), ``…mlflow`` (``MLFlowLogger`` =
    ``MLflowLogger``) and ``disco.metrics`` (``KL``, ``TV``, ``JS``) are modules of this package.

Names
    ``ChiSquaredLoss`` = ``ChiSquareLoss``, ``ReverseChiSquaredLoss`` = ``ReverseChiSquareLoss``,
    ``MLFlowLogger`` = ``MLflowLogger``, ``QuasiRejectionSampler.get_acceptance_rate()`` =
    ``.acceptance_rate``, ``Product.scorers`` = ``Product.factors``.

Tuner keywords (:data:`TUNER_SETTINGS`)
    ``n_gradient_steps`` → ``n_steps``; ``n_samples_per_step`` and ``n_samples_per_context`` →
    ``samples_per_context``; ``scoring_size`` → ``scoring_batch_size``; ``sampling_size`` →
    ``sampling_batch_size``; ``context_sampling_size`` and ``n_contexts_per_step`` →
    ``contexts_per_step``; ``divergence_evaluation_interval`` → ``proposal_update_interval``;
    ``track_divergence_from_base=True`` → ``kl_from_base=True`` with the target's first factor
    as ``base``; ``features=[(name, scorer), ...]`` → the scorers, reported as
    ``moment/<name>``; ``proposal=<distribution>`` (keyword or third positional) → offline
    tuning from that proposal; ``context_distribution=SingleContextDistribution(c)`` → the fixed
    context ``c``. ``n_kl_samples`` and ``track_metrics`` (kl, tv and js are always tracked)
    are accepted and have no effect, as in the original.

``constrain`` keywords (:func:`constrain_arguments`)
    ``moments`` may be left out (every feature becomes a factor of the product, as in the
    original); ``context_sampling_size`` and ``n_contexts_per_step`` → ``n_contexts``;
    ``iterations`` → ``max_iterations``; ``learning_rate`` has no effect (Newton takes no step
    size). (A ``SingleContextDistribution(c)`` fits the one context ``c``, a fix in ``constrain``
    itself.)

``LMDistribution`` keywords (:func:`lm_arguments`)
    ``network=`` → ``model=``; ``nature="causal"|"seq2seq"`` → ``auto=``.

The original's objects one level down
    ``LMDistribution.network`` / ``.params`` / ``.scorable`` / ``.nature``
    (:func:`original_attribute`), ``BaseDistribution(score_fn)``
    (:func:`scored_base_distribution`), ``BaseTunerObserver`` (in :mod:`disco._compat_observer`;
    its events carried by a logger),
    and the generic ``Tuner(model, target, ...)`` with the original's setting names
    (:func:`tuner_arguments`).

The core's only references to this layer are lazy, made on first use of one of the original's
spellings where its path or name is a core one; :data:`disco._aliases.UPWARD_REFERENCES` lists
them, and the import-layer test allows no others.

Loggers attached by construction (:func:`original_logger_arguments`)
    ``ConsoleLogger(tuner)``, ``JSONLogger(tuner, project, name)`` (writes
    ``$DISCO_SAVE_PATH/project/name.jsonl``, the working directory when the variable is unset),
    ``WandBLogger(tuner, project, name)``, ``NeptuneLogger(tuner, project, name, api_token=...)``
    and ``MLFlowLogger(tuner, project, name)`` append the logger to ``tuner.loggers``; W&B and
    Neptune then take their mode from their own settings (``WANDB_MODE``, ``NEPTUNE_MODE``;
    online by default, as in the original).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CONSTRAIN_SETTINGS",
    "TUNER_SETTINGS",
    "constrain_arguments",
    "lm_arguments",
    "named_features",
    "original_attribute",
    "original_logger_arguments",
    "scored_base_distribution",
    "tuner_arguments",
]

#: The original tuner's setting names and this package's :class:`~disco.tuners.TunerConfig` fields.
TUNER_SETTINGS: dict[str, str] = {
    "n_gradient_steps": "n_steps",
    "n_samples_per_step": "samples_per_context",
    "n_samples_per_context": "samples_per_context",
    "scoring_size": "scoring_batch_size",
    "sampling_size": "sampling_batch_size",
    "context_sampling_size": "contexts_per_step",
    "n_contexts_per_step": "contexts_per_step",
    "divergence_evaluation_interval": "proposal_update_interval",
    "track_divergence_from_base": "kl_from_base",
}

#: Original tuner settings that had no effect there either.
_INERT_TUNER_SETTINGS = ("n_kl_samples",)

#: The original ``constrain`` keywords and this package's names.
CONSTRAIN_SETTINGS: dict[str, str] = {
    "context_sampling_size": "n_contexts",
    "n_contexts_per_step": "n_contexts",
    "iterations": "max_iterations",
}


def _rename(
    kwargs: dict[str, Any], table: Mapping[str, str], who: str, inert: Sequence[str] = ()
) -> dict[str, Any]:
    """``kwargs`` with the original names replaced; a setting given under two names is an error."""
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in kwargs.items():
        if key in inert:
            continue
        name = table.get(key, key)
        if name in given_as:
            raise ValueError(
                f"{who}: {given_as[name]!r} and {key!r} both set {name!r}; give only one of them"
            )
        given_as[name] = key
        out[name] = value
    return out


def named_features(features: Any) -> tuple[Any, ...]:
    """Scorers from the original's ``[(name, scorer), ...]`` (plain scorers pass through).

    A pair becomes a scorer named ``name`` that scores with ``scorer``, so the tuner reports its
    moment as ``moment/<name>``; the user's scorer is left as it is.
    """
    from disco.scorers import Scorer

    out = []
    for k, feature in enumerate(features):
        if isinstance(feature, tuple) and len(feature) == 2 and isinstance(feature[0], str):
            label, scorer = feature
            if not callable(getattr(scorer, "score", None)):
                raise ValueError(f"features[{k}]: {scorer!r} has no score(samples, context)")
            out.append(Scorer(scorer.score, batched=True, name=label))
        else:
            out.append(feature)
    return tuple(out)


def tuner_arguments(
    target: Any, positional: Sequence[Any], kwargs: dict[str, Any], third: str
) -> dict[str, Any]:
    """Keyword arguments for :class:`~disco.tuners.Tuner` from a front-end's call, in either API.

    ``third`` names what a third positional argument means in this package for that front-end
    (``"context"``, ``"loss"`` or ``"context_distribution"``); a loss or a distribution given
    there is recognised by its type, since the original put the proposal third.
    """
    from disco.distributions.base import Distribution
    from disco.tuners.front_ends import context_settings
    from disco.tuners.losses import FDivergenceLoss

    kwargs = dict(kwargs)
    if len(positional) > 1:
        raise TypeError(
            f"too many positional arguments after the policy and the target: {len(positional)}; "
            "pass the others by keyword"
        )
    if positional:
        value = positional[0]
        if isinstance(value, FDivergenceLoss):
            role = "loss"
        elif isinstance(value, Distribution):
            role = "proposal"
        else:
            role = third
        if role in kwargs:
            raise TypeError(f"{role!r} was given both by position and by keyword")
        kwargs[role] = value
    proposal = kwargs.get("proposal")
    if proposal is not None and not isinstance(proposal, str):
        kwargs["proposal_distribution"] = kwargs.pop("proposal")
        kwargs["proposal"] = "offline"
    kwargs = context_settings(kwargs)
    track_metrics = kwargs.pop("track_metrics", None)
    if track_metrics is not None and not set(track_metrics) <= {"kl", "tv", "js"}:
        raise ValueError(f"track_metrics={track_metrics!r}: the tuner tracks 'kl', 'tv' and 'js'")
    settings = _rename(kwargs, TUNER_SETTINGS, "tuner", _INERT_TUNER_SETTINGS)
    if "features" in settings:
        settings["features"] = named_features(settings["features"])
    if settings.get("kl_from_base") and settings.get("base") is None:
        factors = getattr(target, "factors", None)
        if not factors:
            raise ValueError(
                "track_divergence_from_base=True needs the target's base model: pass base=..., or "
                "a target built from a distribution (base * scorer, base.constrain(...))"
            )
        settings["base"] = factors[0]
    return settings


def constrain_arguments(
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """``constrain``'s keyword arguments with the original's names translated."""
    unknown = sorted(set(kwargs) - set(CONSTRAIN_SETTINGS) - {"learning_rate"})
    if unknown:
        raise TypeError(f"constrain() got unexpected keyword argument(s) {unknown}")
    return _rename(kwargs, CONSTRAIN_SETTINGS, "constrain", ("learning_rate",))


def lm_arguments(model: Any, auto: Any, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """``LMDistribution``'s model and auto class from the original's ``network`` and ``nature``.

    Removes those keywords from ``kwargs``.
    """
    if "network" in kwargs:
        if model is not None:
            raise ValueError("give the model once: model=... or network=..., not both")
        model = kwargs.pop("network")
    if "nature" in kwargs:
        if auto is not None:
            raise ValueError("give the model type once: auto=... or nature=..., not both")
        auto = kwargs.pop("nature")
    return model, auto


def _original_json(
    project: str, name: str, path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    root = Path(path if path is not None else os.environ.get("DISCO_SAVE_PATH", "."))
    return {"path": root / project / f"{name}.jsonl"}


def _original_wandb(project: str | None = None, name: str | None = None) -> dict[str, Any]:
    return {"project": project, "name": name, "mode": None}


def _original_neptune(
    project: str | None = None, name: str | None = None, api_token: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    return {"project": project, "name": name, "api_token": api_token, "mode": None, **kwargs}


def _original_mlflow(project: str = "disco", name: str | None = None) -> dict[str, Any]:
    return {"experiment_name": project, "run_name": name}


@functools.cache
def _logger_forms() -> dict[type, Callable[..., dict[str, Any]]]:
    """Each logger class with the original's form, and its translation to the native keywords."""
    from disco.tuners.loggers import (
        ConsoleLogger,
        JSONLogger,
        MLflowLogger,
        NeptuneLogger,
        WandBLogger,
    )

    return {
        ConsoleLogger: lambda: {},
        JSONLogger: _original_json,
        WandBLogger: _original_wandb,
        NeptuneLogger: _original_neptune,
        MLflowLogger: _original_mlflow,
    }


def original_logger_arguments(
    logger: Any, tuner: Any, args: Sequence[Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The native keywords of the original's ``Logger(tuner, *args, **kwargs)``.

    The caller attaches ``logger`` to ``tuner.loggers`` once it is built, so the tuner starts,
    feeds and closes it.
    """
    from disco.tuners.tuner import Tuner

    if not isinstance(tuner, Tuner):
        raise TypeError(f"{type(logger).__name__}: {tuner!r} is not a tuner")
    forms = _logger_forms()
    form = next((forms[c] for c in type(logger).__mro__ if c in forms), None)
    if form is None:
        raise TypeError(f"{type(logger).__name__} has no original-disco form Logger(tuner, ...)")
    return form(*args, **kwargs)


# --- the original's objects one level down -------------------------------------------------------


def original_attribute(obj: Any, name: str) -> Any:
    """The original ``LMDistribution``'s attributes that this package names otherwise.

    ``network`` is :attr:`~disco.distributions.LMDistribution.model`; ``params`` the
    generation settings as the original held them (``typical_p`` and ``num_beams`` are
    always neutral here, other values being refused); ``scorable`` is always True, since
    ``log_score`` applies the sampling warps; ``nature`` is ``"causal"`` or ``"seq2seq"``.
    """
    if name == "network":
        return obj.model
    if name == "params":
        return {
            "top_k": obj.top_k,
            "top_p": obj.top_p,
            "typical_p": 1.0,
            "temperature": obj.temperature,
            "num_beams": 1,
        }
    if name == "scorable":
        return True
    if name == "nature":
        return "seq2seq" if obj.is_seq2seq else "causal"
    raise AttributeError(f"{type(obj).__name__!r} object has no attribute {name!r}")


def _scored_base_distribution() -> type:
    from disco.distributions.base import BaseDistribution
    from disco.scorers import PositiveScorer

    class _Scored(BaseDistribution):
        """The original's ``BaseDistribution(score_fn)``: a positive scorer that can be constrained.

        It scores with ``score_fn(sample, context)`` (``log_score`` is its log) and draws
        nothing: ``constrain(features)`` without moments gives ``Product(self, *features)``.
        """

        def __init__(self, score_fn: Callable[[Any, Any], Any]) -> None:
            if not callable(score_fn):
                raise TypeError(f"BaseDistribution(score_fn): {score_fn!r} is not callable")
            self.scorer = PositiveScorer(score_fn)

        def score(self, samples: Sequence[Any], context: Any = "") -> Any:
            return self.scorer.score(samples, context)

        def log_score(self, samples: Sequence[Any], context: Any = "", grad: bool = False) -> Any:
            return self.scorer.log_score(samples, context)

        def sample(self, context: Any = "", sampling_size: int = 32) -> Any:
            raise TypeError(
                "a BaseDistribution built from a scoring function scores samples but cannot "
                "draw them: subclass BaseDistribution with a sample method to sample"
            )

    _Scored.__name__ = _Scored.__qualname__ = "BaseDistribution"
    return _Scored


#: The class behind ``BaseDistribution(score_fn)``, made on first use (it subclasses the core's).
scored_base_distribution = functools.cache(_scored_base_distribution)
