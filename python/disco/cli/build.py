"""From checked settings to the run's objects: features, models, the tuner and its loggers.

Everything that imports torch or transformers on the command's behalf starts here, as do the
checks that need them: the features built, the model's positions and the device
(:func:`check_buildable`, the second pass of :func:`disco.cli.check_config`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from disco.cli import sources
from disco.cli.config import LoraSection, ModelSection, RunConfig, check_feature_table
from disco.cli.errors import UserError, first_line

__all__ = [
    "build_feature",
    "check_buildable",
    "check_feature",
    "load_lm",
    "loss_tuner",
    "make_loggers",
    "make_policy",
    "make_tuner",
]


def build_feature(
    spec: Mapping[str, Any],
    index: int,
    *,
    allow_imports: bool = False,
    base_dir: Path | None = None,
) -> Any:
    """The scorer of ``[[features]]`` table ``index``; a bad setting is a :class:`UserError`."""
    from disco.features import ImportNotAllowedError, feature

    try:
        return feature(
            spec, allow_imports=allow_imports, import_paths=sources.import_dirs(base_dir)
        )
    except ImportNotAllowedError as err:
        raise UserError(
            err.what, f"features[{index}]", "pass --allow-imports if you trust that code"
        ) from None
    except (ValueError, TypeError, KeyError, ImportError, AttributeError, OSError) as err:
        raise UserError(
            first_line(err),
            f"features[{index}]",
            "fix the feature's settings (the configuration file in docs/command.md lists them)",
        ) from None


def _check_built_feature(
    spec: dict[str, Any], index: int, base_dir: Path | None, allow_imports: bool
) -> None:
    """Settings that build (the type is known already), and a moment its scorer can have."""
    from disco.scorers import BooleanScorer

    key = f"features[{index}]"
    if spec["type"] == "classifier":
        return  # built once, by the run: loading a classifier twice is slow
    scorer = build_feature(spec, index, allow_imports=allow_imports, base_dir=base_dir)
    moment = spec["moment"]
    if isinstance(scorer, BooleanScorer) and not 0.0 <= moment <= 1.0:
        raise UserError(
            f"moment {moment} of a boolean feature is outside [0, 1]",
            f"{key}.moment",
            "a boolean's moment is the fraction of samples where it holds",
        )


def check_feature(
    spec: Any, index: int, base_dir: Path | None = None, *, allow_imports: bool = False
) -> dict[str, Any]:
    """Check one ``[[features]]`` table: a known type, valid settings and a valid moment.

    A classifier's local model folder is made absolute (looked up next to the config first).
    """
    checked = check_feature_table(spec, index, base_dir)
    _check_built_feature(checked, index, base_dir, allow_imports)
    return checked


def _check_autocast(mode: Any) -> None:
    """``autocast = "bf16"`` needs a CUDA device that supports it: known before any work.

    The tuner refuses bf16 too, but only once tuning starts, on the policy's device.
    """
    if not isinstance(mode, str) or mode.lower() != "bf16":
        return
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        raise UserError(
            "autocast = bf16 needs a CUDA device with bfloat16 support, and there is none",
            "tuner.autocast",
            'use "auto" (bf16 where supported, float32 elsewhere) or "off"',
        )


def check_buildable(
    settings: RunConfig,
    raw: Mapping[str, Any],
    base_dir: Path | None = None,
    *,
    allow_imports: bool = False,
) -> None:
    """The checks the file alone cannot make, on ``raw``'s checked ``settings``.

    The features' settings and moments, the device for bf16, and the contexts against the
    model's positions. ``settings`` are :meth:`RunConfig.check`'s of ``raw``; a refusal is a
    :class:`UserError`.
    """
    for index, spec in enumerate(settings.features):
        _check_built_feature(spec, index, base_dir, allow_imports)
    _check_autocast(settings.tuner.settings.get("autocast", "auto"))
    model = settings.model
    sources.check_positions(model.path, model.length, settings.contexts, dict(raw))


def load_lm(model: ModelSection, freeze: bool = True) -> Any:
    """The ``LMDistribution`` of ``[model]``; a model that cannot load is a user error."""
    from disco.distributions import LMDistribution

    try:
        return LMDistribution(model.path, freeze=freeze, **model.settings())
    except OSError as err:
        raise UserError(
            first_line(err), "model.path", "check the path, or that the Hub can be reached"
        ) from None
    except ValueError as err:
        raise UserError(str(err), "model", "fix that setting") from None


def make_policy(model: ModelSection, lora: LoraSection | None) -> Any:
    """The model to tune: a trainable copy of the base, or the base with new LoRA adapters."""
    from disco.distributions import LMDistribution

    policy = load_lm(model, freeze=False)
    if lora is None:
        return policy
    import peft

    config = peft.LoraConfig(
        task_type="SEQ_2_SEQ_LM" if policy.is_seq2seq else "CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft says int; alpha / r is a float
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
    )
    try:
        with warnings.catch_warnings():
            # GPT-2's Conv1D layers: peft sets fan_in_fan_out itself, and says so
            warnings.filterwarnings("ignore", message="fan_in_fan_out", category=UserWarning)
            adapted = peft.get_peft_model(policy.model, config)
    except ValueError as err:
        raise UserError(str(err), "lora", "fix the LoRA settings (target_modules?)") from None
    return LMDistribution(adapted, policy.tokenizer, freeze=False, **model.settings())


def make_loggers(out: Path, names: list[str], *, append: bool) -> list[Any]:
    """The console, ``out/metrics.jsonl`` (continued when ``append``) and ``[output] loggers``."""
    from disco.tuners.loggers import LOGGERS, ConsoleLogger, JSONLogger

    loggers = [ConsoleLogger(), JSONLogger(out / "metrics.jsonl", append=append)]
    for name in names:
        try:
            loggers.append(LOGGERS[name](out))
        except ImportError as err:
            raise UserError(
                first_line(err), "output.loggers", f"install it, or drop {name}"
            ) from None
    return loggers


def loss_tuner(loss: str) -> Any:
    """The :class:`~disco.tuners.Tuner` whose own loss is ``[tuner] loss``.

    The tuner makes its loss itself, with its configuration's baseline settings.
    """
    from disco.tuners import Tuner
    from disco.tuners.losses import LOSSES

    return type(Tuner.__name__, (Tuner,), {"default_loss": LOSSES[loss]})


def make_tuner(
    settings: RunConfig,
    policy: Any,
    target: Any,
    base: Any,
    *,
    loggers: list[Any],
    **fixed: Any,
) -> Any:
    """The run's tuner: ``[tuner]``'s settings plus the ones the run ``fixed`` itself."""
    from disco.distributions import ContextDistribution
    from disco.tuners.config import TunerConfig

    contexts = settings.contexts
    where: dict[str, Any] = (
        {"context": contexts[0]}
        if len(contexts) == 1
        else {"context_distribution": ContextDistribution(contexts, seed=settings.seed)}
    )
    config = TunerConfig(**settings.tuner.settings, **fixed)
    tuner_class = loss_tuner(settings.tuner.loss)
    return tuner_class(policy, target, base=base, loggers=loggers, config=config, **where)
