"""A run's configuration: one dataclass per section, each checking its own table.

:func:`load_config` reads a TOML file, :func:`check_config` a mapping; both return the settings
normalised (every default filled in) as plain data, the form ``config.json`` records and
:func:`disco.cli.run_pipeline` takes. A problem is a one-line :class:`UserError` naming the key.

The checks run in two passes. :meth:`RunConfig.check` reads the file alone (types, ranges,
unknown keys and names, the warp, missing files) and imports neither torch nor transformers, so
such a mistake is reported at once; then :func:`disco.cli.build.check_buildable` checks what
needs the features built, the model's files or the device.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disco._fields import described as _help
from disco.cli import sources
from disco.cli.errors import UserError
from disco.cli.values import check_acceptance_rate, real, user_beta

__all__ = [
    "FitSection",
    "LoraSection",
    "ModelSection",
    "OutputSection",
    "RunConfig",
    "SamplerSection",
    "TunerSection",
    "check_acceptance_rate",
    "check_config",
    "check_feature_table",
    "demo_config",
    "load_config",
    "user_beta",
]

# Upper bounds checked before any work starts, so a typo cannot hang a run or exhaust memory.
MAX_SAMPLES = 1_000_000  # samples drawn for one purpose (fit, estimation, evaluation, a step)
MAX_COUNT = 10_000_000  # steps, intervals, windows
MAX_SEED = 2**63 - 1
# Proposals QRS or IMH may draw for one context before the command gives up with advice.
MAX_PROPOSALS = 200_000
# The tuner's own keys that the command sets itself from other sections.
TUNER_RESERVED = ("features", "kl_from_base", "checkpoint_dir")
SECTIONS = {
    "seed": "seeds the base samples, tuning and sampling",
    "model": "path, length, temperature, top_k, top_p",
    "lora": "r, alpha, dropout, target_modules: tune LoRA adapters only (needs peft)",
    "context": "one context (default: the empty prompt)",
    "contexts": "a list of contexts (conditional fit and tuning)",
    "context_file": "a text file with one context a line",
    "features": "[[features]] tables: a feature specification plus its moment",
    "fit": "n_samples: base samples the coefficients are fitted on",
    "tuner": "loss and any TunerConfig setting",
    "sampler": "acceptance_rate or beta, n_samples, estimation_samples",
    "output": "dir, eval_samples, loggers",
}


def _table(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise UserError(f"{name} must be a table", name, f"write it as [{name}]")
    return dict(value)


def _known(section: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
    for key in section:
        if key not in allowed:
            raise UserError(
                f"unknown key {key!r}", f"{prefix}{key}", f"valid keys: {', '.join(allowed)}"
            )


def _keys(section: type) -> list[str]:
    return [f.name for f in dataclasses.fields(section)]


def _integer(value: Any, key: str, minimum: int, maximum: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{value!r} is not an integer >= {minimum}", key, f"use {minimum} or more")
    if value > maximum:
        raise UserError(f"{value} is more than {maximum}", key, f"use at most {maximum}")
    return value


def _without_none(section: Any) -> dict[str, Any]:
    """A section as its table: settings left unset (``None``) are not written."""
    return {k: v for k, v in dataclasses.asdict(section).items() if v is not None}


@dataclass
class ModelSection:
    """``[model]``: the base model and how it samples (sampling and scoring share the warp)."""

    path: str | None = _help(
        "a local folder or a Hub name (default: the embedded model)", default=None
    )
    length: int = _help("new tokens per sample", default=30)
    temperature: float | None = _help("sampling temperature (default 1)", default=None)
    top_k: int | None = _help("keep the k likeliest tokens (default 0: all)", default=None)
    top_p: float | None = _help("nucleus sampling's mass (default 1: all)", default=None)

    @classmethod
    def check(cls, raw: Mapping[str, Any], base_dir: Path | None) -> ModelSection:
        """The ``[model]`` table of ``raw``, checked."""
        from disco.distributions.warp import Warp

        table = _table(raw, "model")
        _known(table, _keys(cls), "model.")
        if "path" in table:
            table["path"] = sources.model_path(table["path"], base_dir)
        section = cls(**table)
        _integer(section.length, "model.length", 1, 1_000_000)
        try:  # as LMDistribution's warp will, before any model is loaded
            Warp(**{k: v for k, v in section.settings().items() if k != "length"})
        except ValueError as err:
            raise UserError(str(err), "model", "fix that setting") from None
        return section

    def settings(self) -> dict[str, Any]:
        """The keywords ``LMDistribution`` takes besides the path."""
        return {k: v for k, v in _without_none(self).items() if k != "path"}


@dataclass
class LoraSection:
    """``[lora]``: tune LoRA adapters instead of every weight (needs peft)."""

    r: int = _help("the adapters' rank", default=8)
    alpha: float = _help("the adapters' scaling numerator (scale alpha / r)", default=16.0)
    dropout: float = _help("dropout on the adapters' input, in [0, 1)", default=0.0)
    target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "names of the modules to adapt (default: peft's for the architecture)"},
    )

    @classmethod
    def check(cls, raw: Mapping[str, Any]) -> LoraSection | None:
        """The ``[lora]`` table of ``raw``, checked; ``None`` when there is none."""
        if raw.get("lora") is None:
            return None
        table = _table(raw, "lora")
        _known(table, _keys(cls), "lora.")
        r = _integer(table.get("r", 8), "lora.r", 1)
        numbers = {}
        for key, default, low, high in (("alpha", 16.0, 0.0, math.inf), ("dropout", 0.0, 0.0, 1.0)):
            value = table.get(key, default)
            if not real(value) or not low <= value < high:
                raise UserError(
                    f"{value!r} is not a number in [{low}, {high})", f"lora.{key}", "fix the number"
                )
            numbers[key] = float(value)
        modules = table.get("target_modules")
        if modules is not None and (
            not isinstance(modules, list)
            or not modules
            or not all(isinstance(m, str) for m in modules)
        ):
            raise UserError(
                "target_modules must be a list of module names",
                "lora.target_modules",
                'e.g. target_modules = ["c_attn"], or leave it out for peft\'s default',
            )
        if importlib.util.find_spec("peft") is None:  # found, not imported: peft imports torch
            raise UserError(
                "LoRA needs peft", "lora", "pip install 'disco-control[lora]'"
            ) from None
        return cls(r=r, target_modules=modules, **numbers)


@dataclass
class FitSection:
    """``[fit]``: how the target's coefficients are fitted."""

    n_samples: int = _help("base samples the coefficients are fitted on", default=2048)

    @classmethod
    def check(cls, raw: Mapping[str, Any]) -> FitSection:
        """The ``[fit]`` table of ``raw``, checked."""
        table = _table(raw, "fit")
        _known(table, _keys(cls), "fit.")
        return cls(_integer(table.get("n_samples", 2048), "fit.n_samples", 2, MAX_SAMPLES))


@dataclass
class TunerSection:
    """``[tuner]``: the loss, by its ``kind``, and any :class:`~disco.tuners.TunerConfig` setting."""

    loss: str = _help("the f-divergence to minimise (disco list losses)", default="kl")
    settings: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "the TunerConfig settings given (seed: the run's by default)"},
    )

    @classmethod
    def check(cls, raw: Mapping[str, Any], seed: int) -> TunerSection:
        """The ``[tuner]`` table of ``raw``, checked.

        Each setting is checked by ``TunerConfig`` itself, the loss's name against the losses.
        """
        from disco.parallel import LEAVE_THE_POLICY_SHARDED
        from disco.tuners.config import TunerConfig
        from disco.tuners.losses import LOSSES

        table = _table(raw, "tuner")
        loss = str(table.pop("loss", "kl"))
        for key, instead in LEAVE_THE_POLICY_SHARDED.items():
            if table.get(key):
                raise UserError(
                    "the command samples and evaluates with the tuned policy after tuning, in "
                    f"uneven shares, which a policy left sharded by {key} cannot do",
                    f"tuner.{key}",
                    f"remove it ({instead}), or tune from Python with disco.tuners.Tuner",
                )
        _known(table, [k for k in TunerConfig.field_help() if k not in TUNER_RESERVED], "tuner.")
        table.setdefault("seed", seed)
        for key, value in table.items():
            try:
                TunerConfig(**{key: value})
            except (ValueError, TypeError, OverflowError) as err:
                raise UserError(
                    str(err), f"tuner.{key}", f"TunerConfig.field_help()['{key}'] says what it is"
                ) from None
            limit = MAX_SAMPLES if "samples" in key or "batch" in key else MAX_COUNT
            if key != "seed" and isinstance(value, int) and value > limit:
                raise UserError(
                    f"{value} is more than {limit}", f"tuner.{key}", f"use at most {limit}"
                )
        if loss not in LOSSES:
            raise UserError(
                f"unknown loss {loss!r}", "tuner.loss", f"use one of {', '.join(LOSSES)}"
            )
        return cls(loss, table)


@dataclass
class SamplerSection:
    """``[sampler]``: QRS on the tuned policy, at a β or at the β of an acceptance rate."""

    acceptance_rate: float | None = _help(
        "QRS chooses beta for this rate (default 0.5)", default=None
    )
    beta: float | None = _help("QRS beta, instead of acceptance_rate", default=None)
    n_samples: int = _help("QRS samples to keep", default=64)
    estimation_samples: int = _help("proposals the estimates are made on", default=2048)

    @classmethod
    def check(cls, raw: Mapping[str, Any]) -> SamplerSection:
        """The ``[sampler]`` table of ``raw``, checked: exactly one of ``beta`` and ``acceptance_rate``."""
        table = _table(raw, "sampler")
        _known(table, _keys(cls), "sampler.")
        if "beta" in table and "acceptance_rate" in table:
            raise UserError(
                "both beta and acceptance_rate are set", "sampler.beta", "keep one of the two"
            )
        if "beta" in table:
            how: dict[str, float] = {"beta": user_beta(table["beta"], "sampler.beta")}
        else:
            rate = table.get("acceptance_rate", 0.5)
            how = {"acceptance_rate": check_acceptance_rate(rate, "sampler.acceptance_rate")}
        return cls(
            n_samples=_integer(table.get("n_samples", 64), "sampler.n_samples", 1, MAX_PROPOSALS),
            estimation_samples=_integer(
                table.get("estimation_samples", 2048), "sampler.estimation_samples", 2, MAX_SAMPLES
            ),
            **how,
        )


@dataclass
class OutputSection:
    """``[output]``: the run folder and what is written there."""

    dir: str = _help("the run folder (--out overrides it)", default="disco-run")
    eval_samples: int = _help(
        "base and tuned samples the report's rates are measured on", default=256
    )
    loggers: list[str] = field(
        default_factory=list,
        metadata={"help": "loggers besides the console and metrics.jsonl (disco list loggers)"},
    )

    @classmethod
    def check(cls, raw: Mapping[str, Any]) -> OutputSection:
        """The ``[output]`` table of ``raw``, checked."""
        from disco.tuners.loggers import LOGGERS

        table = _table(raw, "output")
        _known(table, _keys(cls), "output.")
        folder = table.get("dir", "disco-run")
        if not isinstance(folder, str) or not folder:
            raise UserError(f"{folder!r} is not a folder name", "output.dir", 'dir = "my-run"')
        loggers = table.get("loggers", [])
        if not isinstance(loggers, list) or not all(
            isinstance(name, str) and name in LOGGERS for name in loggers
        ):
            raise UserError(
                f"loggers {loggers!r} are not a list of logger names",
                "output.loggers",
                f"choose from {', '.join(LOGGERS)}",
            )
        eval_samples = _integer(
            table.get("eval_samples", 256), "output.eval_samples", 1, MAX_SAMPLES
        )
        return cls(folder, eval_samples, list(dict.fromkeys(loggers)))


def check_feature_table(spec: Any, index: int, base_dir: Path | None = None) -> dict[str, Any]:
    """One ``[[features]]`` table as far as the file alone tells: a known type, a finite moment.

    A classifier's local model folder is made absolute (looked up next to the config first).
    Whether its settings are valid is checked in the second pass
    (:func:`disco.cli.build.check_feature`).
    """
    from disco.features import FEATURE_TYPES

    key = f"features[{index}]"
    if not isinstance(spec, dict):
        raise UserError(f"{key} is not a table", key, "write each feature as a [[features]] table")
    if "type" not in spec:
        raise UserError("a feature without a type", f"{key}.type", 'add type = "word" (or another)')
    if "moment" not in spec:
        raise UserError("a feature without a target moment", f"{key}.moment", "add moment = 0.5")
    moment = spec["moment"]
    if not real(moment) or not math.isfinite(moment):
        raise UserError(
            f"moment {moment!r} is not a finite number", f"{key}.moment", "give a number"
        )
    if not isinstance(spec["type"], str) or spec["type"] not in FEATURE_TYPES:
        raise UserError(
            f"unknown feature type {spec['type']!r}",
            f"{key}.type",
            f"use one of {', '.join(FEATURE_TYPES)}",
        )
    spec = dict(spec)
    if spec["type"] == "classifier" and isinstance(spec.get("model"), str):
        found = sources.local(spec["model"], base_dir)
        if found is not None:
            spec["model"] = str(found)
    return spec


def _features(raw: Mapping[str, Any], base_dir: Path | None) -> list[dict[str, Any]]:
    specs = raw.get("features")
    if not specs:
        raise UserError("no features", "features", "add at least one [[features]] table")
    if not isinstance(specs, list):
        raise UserError(
            "features must be an array of tables", "features", "write [[features]], not [features]"
        )
    return [check_feature_table(spec, i, base_dir) for i, spec in enumerate(specs)]


@dataclass
class RunConfig:
    """A whole run's settings, section by section (see each section's class)."""

    seed: int
    model: ModelSection
    lora: LoraSection | None
    contexts: list[str]
    features: list[dict[str, Any]]
    fit: FitSection
    tuner: TunerSection
    sampler: SamplerSection
    output: OutputSection

    @classmethod
    def check(cls, raw: Mapping[str, Any], base_dir: Path | None = None) -> RunConfig:
        """Check a configuration mapping section by section, from the file alone.

        Neither torch nor transformers is imported: what needs them (the features built, the
        model's positions, the device) is :func:`check_config`'s second pass.
        """
        _known(raw, list(SECTIONS), "")
        seed = _integer(raw.get("seed", 0), "seed", 0, MAX_SEED)
        model = ModelSection.check(raw, base_dir)
        lora = LoraSection.check(raw)
        features = _features(raw, base_dir)
        fit = FitSection.check(raw)
        tuner = TunerSection.check(raw, seed)
        sampler = SamplerSection.check(raw)
        output = OutputSection.check(raw)
        contexts = sources.read_contexts(dict(raw), base_dir)
        return cls(seed, model, lora, contexts, features, fit, tuner, sampler, output)

    @classmethod
    def from_normalised(cls, cfg: Mapping[str, Any]) -> RunConfig:
        """The settings :meth:`as_dict` wrote (already checked: nothing is checked again)."""
        return cls(
            seed=cfg["seed"],
            model=ModelSection(**cfg["model"]),
            lora=LoraSection(**cfg["lora"]) if cfg.get("lora") else None,
            contexts=list(cfg["contexts"]),
            features=[dict(spec) for spec in cfg["features"]],
            fit=FitSection(**cfg["fit"]),
            tuner=TunerSection(cfg["loss"], dict(cfg["tuner"])),
            sampler=SamplerSection(**cfg["sampler"]),
            output=OutputSection(**cfg["output"]),
        )

    def as_dict(self) -> dict[str, Any]:
        """The normalised settings as plain data (what ``config.json`` records)."""
        return {
            "seed": self.seed,
            "model": _without_none(self.model),
            "lora": _without_none(self.lora) if self.lora is not None else None,
            "contexts": list(self.contexts),
            "features": [dict(spec) for spec in self.features],
            "fit": dataclasses.asdict(self.fit),
            "tuner": dict(self.tuner.settings),
            "loss": self.tuner.loss,
            "sampler": _without_none(self.sampler),
            "output": dataclasses.asdict(self.output),
        }


def check_config(
    raw: dict[str, Any], base_dir: Path | None = None, *, allow_imports: bool = False
) -> dict[str, Any]:
    """Validate a configuration mapping; returns it normalised with every default filled in.

    Unknown keys, feature types and tuner settings, moments a boolean feature cannot have,
    missing files and malformed numbers raise :class:`UserError` naming the key: first what
    the file alone shows (:meth:`RunConfig.check`), then what needs the features built, the
    model's files or the device (:func:`disco.cli.build.check_buildable`).
    """
    from disco.cli.build import check_buildable

    settings = RunConfig.check(raw, base_dir)
    check_buildable(settings, raw, base_dir, allow_imports=allow_imports)
    return settings.as_dict()


def load_config(path: str | os.PathLike[str], *, allow_imports: bool = False) -> dict[str, Any]:
    """Read and check a TOML run configuration; returns the normalised settings.

    ``function`` features import (run) Python modules: they are refused unless
    ``allow_imports`` (``--allow-imports``), even though the configuration is the user's own,
    because a configuration is also something people download and share.
    """
    file = Path(path)
    raw = sources.read_toml(file)
    if allow_imports:
        sources.make_importable(file.parent.resolve())
    return check_config(raw, base_dir=file.parent, allow_imports=allow_imports)


def demo_config(quick: bool = False, model: str | None = None, seed: int = 0) -> dict[str, Any]:
    """The demo's settings: the word "LORD" (in about 12% of the embedded model's samples) in half."""
    raw: dict[str, Any] = {
        "seed": seed,
        "model": {"length": 20, "temperature": 1.0},
        "features": [{"type": "word", "word": "LORD", "moment": 0.5}],
        "fit": {"n_samples": 512 if quick else 4096},
        "tuner": {
            "loss": "kl",
            # Fewer, larger batches: the same samples in all, a less noisy gradient at each
            # step, and the per-step estimates on 128 of them (BENCHMARKS.md, "Convergence").
            "n_steps": 8 if quick else 40,
            "samples_per_context": 256 if quick else 512,
            "metrics_samples": 64 if quick else 128,
            "learning_rate": 2e-4,
            # The averaged iterates (what the demo evaluates and saves) are much closer to the
            # target and the base than the noisy last iterate.
            "averaging": "ema",
            "averaging_decay": 0.98,
            "sampling_batch_size": 64,
            "scoring_batch_size": 64,
        },
        "sampler": {
            "acceptance_rate": 0.5,
            "n_samples": 16 if quick else 256,
            "estimation_samples": 256 if quick else 4096,
        },
        "output": {"dir": "disco-demo", "eval_samples": 128 if quick else 1024},
    }
    if model is not None:
        raw["model"]["path"] = model
    return check_config(raw)
