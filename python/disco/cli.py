"""The ``disco`` command: the whole path (express, tune, sample) offline, from flags or a config.

``disco demo`` runs it on the embedded model with a readable feature; ``disco run CONFIG.toml``
runs it from a configuration file (and ``--resume`` continues an interrupted run); ``disco
sample`` draws QRS or IMH samples from a saved EBM; ``disco inspect RUN_DIR`` prints a run's
summary. A problem the user can fix prints one line, ``disco: error: <what> (<key>): <fix>``,
and exits with status 2.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["UserError", "check_config", "demo_config", "load_config", "main", "run_pipeline"]

# The name to `pip install` (`disco` on PyPI is another project); the import name is `disco`.
DISTRIBUTION = "disco-control"
LOSSES = {
    "kl": "KLLoss",
    "reverse_kl": "ReverseKLLoss",
    "tv": "TVLoss",
    "js": "JSLoss",
    "chi2": "ChiSquareLoss",
    "reverse_chi2": "ReverseChiSquareLoss",
}
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
    "output": "dir, eval_samples",
}
MODEL_KEYS = ("path", "length", "temperature", "top_k", "top_p")
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")
SAMPLER_KEYS = ("acceptance_rate", "beta", "n_samples", "estimation_samples")
# The tuner's own keys that the command sets itself from other sections.
TUNER_RESERVED = ("features", "kl_from_base", "checkpoint_dir")
# Proposals QRS or IMH may draw for one context before the command gives up with advice.
MAX_PROPOSALS = 200_000
# Upper bounds checked before any work starts, so a typo cannot hang a run or exhaust memory.
MAX_SAMPLES = 1_000_000  # samples drawn for one purpose (fit, estimation, evaluation, a step)
MAX_COUNT = 10_000_000  # steps, intervals, windows
MAX_SEED = 2**63 - 1
MAX_CONFIG_BYTES = 1 * 2**20
MAX_CONTEXT_FILE_BYTES = 16 * 2**20
MAX_CONTEXTS = 100_000
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class UserError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""

    def __init__(self, what: str, key: str, fix: str) -> None:
        super().__init__(f"{what} ({key}): {fix}")


# ------------------------------------------------------------------------------- configuration


def _toml() -> Any:
    import importlib

    try:
        return importlib.import_module("tomllib")
    except ModuleNotFoundError:  # Python 3.10
        try:
            return importlib.import_module("tomli")
        except ModuleNotFoundError:
            raise UserError(
                "reading TOML needs Python 3.11+ or the tomli package",
                "CONFIG",
                "pip install tomli",
            ) from None


def load_config(path: str | os.PathLike[str], *, allow_imports: bool = False) -> dict[str, Any]:
    """Read and check a TOML run configuration; returns the normalised settings.

    ``function`` features import (run) Python modules: they are refused unless
    ``allow_imports`` (``--allow-imports``), even though the configuration is the user's own,
    because a configuration is also something people download and share.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(
            f"no configuration file at {file}", "CONFIG", "give the path of a .toml file"
        )
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(
            f"{file} is larger than {MAX_CONFIG_BYTES} bytes", "CONFIG", "is it a configuration?"
        )
    toml = _toml()
    try:
        raw = toml.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(
            f"{file} is not UTF-8 text ({err.reason} at byte {err.start})",
            "CONFIG",
            "save it as UTF-8 (TOML files are UTF-8; UTF-16 is not accepted)",
        ) from None
    except toml.TOMLDecodeError as err:
        raise UserError(
            f"malformed TOML in {file}: {err}", "CONFIG", "fix the syntax there"
        ) from None
    except RecursionError:
        raise UserError(
            f"{file} nests arrays or tables too deeply", "CONFIG", "flatten the configuration"
        ) from None
    if allow_imports:
        _importable(file.parent.resolve())
    return check_config(raw, base_dir=file.parent, allow_imports=allow_imports)


def _importable(folder: Path) -> None:
    """Let ``function`` features import modules next to the config or in the current folder.

    Only with ``--allow-imports``. The ``disco`` script's own folder, not the current one, heads
    ``sys.path``; appending keeps installed packages first.
    """
    for entry in _import_dirs(folder):
        if entry not in sys.path:
            sys.path.append(entry)


def _import_dirs(config_folder: Path | None) -> list[str]:
    """Where ``--allow-imports`` lets function features' modules come from, after sys.path."""
    return [str(config_folder.resolve()), os.getcwd()] if config_folder is not None else []


def _unknown(section: dict[str, Any], allowed: Sequence[str], prefix: str) -> None:
    for key in section:
        if key not in allowed:
            raise UserError(
                f"unknown key {key!r}", f"{prefix}{key}", f"valid keys: {', '.join(allowed)}"
            )


def _table(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise UserError(f"{name} must be a table", name, f"write it as [{name}]")
    return dict(value)


def _integer(value: Any, key: str, minimum: int, maximum: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{value!r} is not an integer >= {minimum}", key, f"use {minimum} or more")
    if value > maximum:
        raise UserError(f"{value} is more than {maximum}", key, f"use at most {maximum}")
    return value


def _local(path: str, base_dir: Path | None) -> Path | None:
    """``path`` as an existing file or folder, or ``None`` when there is none.

    A relative path is looked up next to the config file first, then in the current directory.
    """
    given = Path(os.path.expanduser(path))
    candidates = [given] if given.is_absolute() or base_dir is None else [base_dir / given, given]
    return next((c.resolve() for c in candidates if c.exists()), None)


def _model_path(path: Any, base_dir: Path | None) -> str:
    """A local folder (an absolute path, so saved EBMs load from anywhere) or a Hub name."""
    if not isinstance(path, str) or not path:
        raise UserError(f"{path!r} is not a path", "model.path", 'write path = "folder/or/name"')
    found = _local(path, base_dir)
    if found is not None:
        return str(found)
    text = path
    if _HUB_NAME.match(text) and not text.startswith("."):
        return text  # loading tries the Hub and reports the failure as a user error
    raise UserError(
        f"no model at {path}",
        "model.path",
        "give an existing model folder or a Hub name (org/name)",
    )


def _contexts(raw: dict[str, Any], base_dir: Path | None) -> list[str]:
    given = [k for k in ("context", "contexts", "context_file") if k in raw]
    if len(given) > 1:
        raise UserError(
            f"both {given[0]} and {given[1]} are set", given[1], "keep one way of giving contexts"
        )
    if "context_file" in raw:
        name = raw["context_file"]
        file = _local(name, base_dir) if isinstance(name, str) and name else None
        if file is None or not file.is_file():
            raise UserError(f"no context file at {name}", "context_file", "give an existing file")
        if file.stat().st_size > MAX_CONTEXT_FILE_BYTES:
            raise UserError(
                f"{file} is larger than {MAX_CONTEXT_FILE_BYTES} bytes",
                "context_file",
                "give fewer contexts",
            )
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(
                f"{file} is not UTF-8 text ({err.reason} at byte {err.start})",
                "context_file",
                "save it as UTF-8",
            ) from None
        contexts = [line for line in text.splitlines() if line.strip()]
        if not contexts:
            raise UserError(f"{file} has no contexts", "context_file", "write one context a line")
        if len(contexts) > MAX_CONTEXTS:
            raise UserError(
                f"{file} has {len(contexts)} contexts",
                "context_file",
                f"use at most {MAX_CONTEXTS}",
            )
        return contexts
    if "contexts" in raw:
        contexts = raw["contexts"]
        if (
            not isinstance(contexts, list)
            or not contexts
            or not all(isinstance(c, str) for c in contexts)
        ):
            raise UserError(
                "contexts must be a non-empty list of strings", "contexts", 'contexts = ["A", "B"]'
            )
        if len(set(contexts)) != len(contexts):
            raise UserError("contexts has duplicates", "contexts", "list each context once")
        if len(contexts) > MAX_CONTEXTS:
            raise UserError(f"{len(contexts)} contexts", "contexts", f"use at most {MAX_CONTEXTS}")
        return list(contexts)
    context = raw.get("context", "")
    if not isinstance(context, str):
        raise UserError(
            f"context must be a string, got {context!r}",
            "context",
            "use contexts = [...] for several",
        )
    return [context]


def build_feature(
    spec: dict[str, Any], index: int, *, allow_imports: bool = False, base_dir: Path | None = None
) -> Any:
    """The scorer of ``[[features]]`` table ``index``; a bad setting is a :class:`UserError`."""
    from disco.features import ImportNotAllowedError, feature

    try:
        return feature(spec, allow_imports=allow_imports, import_paths=_import_dirs(base_dir))
    except ImportNotAllowedError as err:
        raise UserError(
            str(err).split(": allow it")[0],
            f"features[{index}]",
            "pass --allow-imports if you trust that code",
        ) from None
    except (ValueError, TypeError, KeyError, ImportError, AttributeError, OSError) as err:
        what = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            what, f"features[{index}]", "fix the feature's settings (see the README)"
        ) from None


def check_feature(
    spec: Any, index: int, base_dir: Path | None = None, *, allow_imports: bool = False
) -> dict[str, Any]:
    """Check one ``[[features]]`` table: a known type, valid settings and a valid moment.

    A classifier's local model folder is made absolute (looked up next to the config first).
    """
    from disco.features import FEATURE_TYPES
    from disco.scorers import BooleanScorer

    key = f"features[{index}]"
    if not isinstance(spec, dict):
        raise UserError(f"{key} is not a table", key, "write each feature as a [[features]] table")
    if "type" not in spec:
        raise UserError("a feature without a type", f"{key}.type", 'add type = "word" (or another)')
    if not isinstance(spec["type"], str) or spec["type"] not in FEATURE_TYPES:
        raise UserError(
            f"unknown feature type {spec['type']!r}",
            f"{key}.type",
            f"use one of {', '.join(FEATURE_TYPES)}",
        )
    if "moment" not in spec:
        raise UserError("a feature without a target moment", f"{key}.moment", "add moment = 0.5")
    moment = spec["moment"]
    if isinstance(moment, bool) or not isinstance(moment, int | float) or not math.isfinite(moment):
        raise UserError(
            f"moment {moment!r} is not a finite number", f"{key}.moment", "give a number"
        )
    if spec["type"] == "classifier":
        spec = dict(spec)
        found = _local(spec["model"], base_dir) if isinstance(spec.get("model"), str) else None
        if found is not None:
            spec["model"] = str(found)
        return spec  # built once, by the run: loading a classifier twice is slow
    scorer = build_feature(spec, index, allow_imports=allow_imports, base_dir=base_dir)
    if isinstance(scorer, BooleanScorer) and not 0.0 <= moment <= 1.0:
        raise UserError(
            f"moment {moment} of a boolean feature is outside [0, 1]",
            f"{key}.moment",
            "a boolean's moment is the fraction of samples where it holds",
        )
    return dict(spec)


def _check_lora(raw: dict[str, Any]) -> dict[str, Any]:
    lora = _table(raw, "lora")
    _unknown(lora, LORA_KEYS, "lora.")
    lora["r"] = _integer(lora.get("r", 8), "lora.r", 1)
    for key, default, low, high in (("alpha", 16.0, 0.0, math.inf), ("dropout", 0.0, 0.0, 1.0)):
        value = lora.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < high:
            raise UserError(
                f"{value!r} is not a number in [{low}, {high})", f"lora.{key}", "fix the number"
            )
        lora[key] = float(value)
    modules = lora.get("target_modules")
    if modules is not None and (
        not isinstance(modules, list) or not modules or not all(isinstance(m, str) for m in modules)
    ):
        raise UserError(
            "target_modules must be a list of module names",
            "lora.target_modules",
            'e.g. target_modules = ["c_attn"], or leave it out for peft\'s default',
        )
    try:
        import peft  # noqa: F401
    except ImportError:
        raise UserError("LoRA needs peft", "lora", "pip install 'disco-control[lora]'") from None
    return lora


def check_config(
    raw: dict[str, Any], base_dir: Path | None = None, *, allow_imports: bool = False
) -> dict[str, Any]:
    """Validate a configuration mapping; returns it normalised with every default filled in.

    Unknown keys, feature types and tuner settings, moments a boolean feature cannot have,
    missing files and malformed numbers raise :class:`UserError` naming the key.
    """
    from disco.tuners import TunerConfig

    _unknown(raw, list(SECTIONS), "")
    seed = _integer(raw.get("seed", 0), "seed", 0, MAX_SEED)

    model = _table(raw, "model")
    _unknown(model, MODEL_KEYS, "model.")
    if "path" in model:
        model["path"] = _model_path(model["path"], base_dir)
    model.setdefault("length", 30)
    _integer(model["length"], "model.length", 1, 1_000_000)
    from disco.distributions import LMDistribution

    try:  # the same checks LMDistribution makes, before any model is loaded
        LMDistribution._check_warp(
            model.get("temperature", 1.0), model.get("top_k", 0), model.get("top_p", 1.0)
        )
    except ValueError as err:
        raise UserError(str(err), "model", "fix that setting") from None

    lora = _check_lora(raw) if raw.get("lora") is not None else None

    specs = raw.get("features")
    if not specs:
        raise UserError("no features", "features", "add at least one [[features]] table")
    if not isinstance(specs, list):
        raise UserError(
            "features must be an array of tables", "features", "write [[features]], not [features]"
        )
    features = [
        check_feature(spec, i, base_dir, allow_imports=allow_imports)
        for i, spec in enumerate(specs)
    ]

    fit = _table(raw, "fit")
    _unknown(fit, ("n_samples",), "fit.")
    fit["n_samples"] = _integer(fit.get("n_samples", 2048), "fit.n_samples", 2, MAX_SAMPLES)

    tuner = _table(raw, "tuner")
    loss = str(tuner.pop("loss", "kl"))
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}", "tuner.loss", f"use one of {', '.join(LOSSES)}")
    allowed = [k for k in TunerConfig.field_help() if k not in TUNER_RESERVED]
    _unknown(tuner, allowed, "tuner.")
    tuner.setdefault("seed", seed)
    for key, value in tuner.items():
        try:
            TunerConfig(**{key: value})
        except (ValueError, TypeError, OverflowError) as err:
            raise UserError(
                str(err), f"tuner.{key}", f"TunerConfig.field_help()['{key}'] says what it is"
            ) from None
        limit = MAX_SAMPLES if "samples" in key or "batch" in key else MAX_COUNT
        if key != "seed" and isinstance(value, int) and value > limit:
            raise UserError(f"{value} is more than {limit}", f"tuner.{key}", f"use at most {limit}")
    _check_autocast(tuner.get("autocast", "auto"))

    sampler = _table(raw, "sampler")
    _unknown(sampler, SAMPLER_KEYS, "sampler.")
    if "beta" in sampler and "acceptance_rate" in sampler:
        raise UserError(
            "both beta and acceptance_rate are set", "sampler.beta", "keep one of the two"
        )
    if "beta" in sampler:
        beta = sampler["beta"]
        if (
            isinstance(beta, bool)
            or not isinstance(beta, int | float)
            or not 0 < beta < math.inf
            or not math.isfinite(math.log(beta))
        ):
            raise UserError(
                f"beta {beta!r} is not positive and finite", "sampler.beta", "use beta > 0"
            )
        sampler["beta"] = float(beta)
    else:
        rate = sampler.get("acceptance_rate", 0.5)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
            raise UserError(
                f"acceptance rate {rate!r} is outside (0, 1]",
                "sampler.acceptance_rate",
                "use 0 < acceptance_rate <= 1",
            )
        sampler["acceptance_rate"] = float(rate)
    sampler["n_samples"] = _integer(
        sampler.get("n_samples", 64), "sampler.n_samples", 1, MAX_PROPOSALS
    )
    sampler["estimation_samples"] = _integer(
        sampler.get("estimation_samples", 2048), "sampler.estimation_samples", 2, MAX_SAMPLES
    )

    output = _table(raw, "output")
    _unknown(output, ("dir", "eval_samples"), "output.")
    output.setdefault("dir", "disco-run")
    if not isinstance(output["dir"], str) or not output["dir"]:
        raise UserError(f"{output['dir']!r} is not a folder name", "output.dir", 'dir = "my-run"')
    output["eval_samples"] = _integer(
        output.get("eval_samples", 256), "output.eval_samples", 1, MAX_SAMPLES
    )

    contexts = _contexts(raw, base_dir)
    _check_positions(model, contexts, raw)
    return {
        "seed": seed,
        "model": model,
        "lora": lora,
        "contexts": contexts,
        "features": features,
        "fit": fit,
        "tuner": tuner,
        "loss": loss,
        "sampler": sampler,
        "output": output,
    }


def _check_autocast(mode: Any) -> None:
    """``autocast = "bf16"`` needs a CUDA device that supports it: known before any work."""
    if not isinstance(mode, str) or mode.lower() != "bf16":
        return
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        raise UserError(
            "autocast = bf16 needs a CUDA device with bfloat16 support, and there is none",
            "tuner.autocast",
            'use "auto" (bf16 where supported, float32 elsewhere) or "off"',
        )


@functools.lru_cache(maxsize=8)
def _positions_and_tokenizer(path: str | None) -> tuple[int | None, Any]:
    """The model's position limit (``None``: unlimited or unknown) and its tokenizer.

    Read from the local folder's config and tokenizer files only (no weights, no network, no
    remote code); ``(None, None)`` when the model is not a local folder.
    """
    from transformers import AutoConfig, AutoTokenizer

    if path is None:
        from disco.models import default_model_path

        path = str(default_model_path())
    if not Path(path).is_dir() or not (Path(path) / "config.json").is_file():
        return None, None
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError):
        return None, None  # loading the model reports it
    if getattr(config, "is_encoder_decoder", False):
        return None, tokenizer  # relative positions (T5) or separate limits: checked by loading
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        limit = getattr(config, name, None)
        if isinstance(limit, int) and limit > 0:
            return limit, tokenizer
    return None, tokenizer


def _check_positions(model: dict[str, Any], contexts: Sequence[str], raw: dict[str, Any]) -> None:
    """A context plus ``model.length`` new tokens must fit the model's positions."""
    limit, tokenizer = _positions_and_tokenizer(model.get("path"))
    if limit is None:
        return
    length = model["length"]
    if length + 1 > limit:
        raise UserError(
            f"length {length} does not fit the model's {limit} positions",
            "model.length",
            f"use at most {limit - 1}",
        )
    key = next((k for k in ("context", "contexts", "context_file") if k in raw), "context")
    for i, context in enumerate(contexts):
        if len(context) + length + 1 <= limit:
            continue  # a token is at least one character: fits without tokenizing
        n = len(tokenizer(context, verbose=False)["input_ids"])
        if max(n, 1) + length > limit:
            raise UserError(
                f"context {i} is {n} tokens: with length {length} it exceeds the model's "
                f"{limit} positions",
                key,
                f"shorten it to at most {limit - length} tokens, or lower model.length",
            )


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
            # target and the base than the noisy last iterate (issue 15).
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


# ------------------------------------------------------------------------------- the pipeline


def _lm(model_cfg: dict[str, Any], freeze: bool = True) -> Any:
    from disco.distributions import LMDistribution

    settings = {k: v for k, v in model_cfg.items() if k != "path"}
    try:
        return LMDistribution(model_cfg.get("path"), freeze=freeze, **settings)
    except OSError as err:
        raise UserError(
            str(err).strip().splitlines()[0],
            "model.path",
            "check the path, or that the Hub can be reached",
        ) from None
    except ValueError as err:
        raise UserError(str(err), "model", "fix that setting") from None


def _policy(cfg: dict[str, Any]) -> Any:
    """The model to tune: a trainable copy of the base, or the base with new LoRA adapters."""
    from disco.distributions import LMDistribution

    policy = _lm(cfg["model"], freeze=False)
    lora = cfg.get("lora")
    if not lora:
        return policy
    import peft

    config = peft.LoraConfig(
        task_type="SEQ_2_SEQ_LM" if policy.is_seq2seq else "CAUSAL_LM",
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora.get("target_modules"),
    )
    try:
        with warnings.catch_warnings():
            # GPT-2's Conv1D layers: peft sets fan_in_fan_out itself, and says so
            warnings.filterwarnings("ignore", message="fan_in_fan_out", category=UserWarning)
            model = peft.get_peft_model(policy.model, config)
    except ValueError as err:
        raise UserError(str(err), "lora", "fix the LoRA settings (target_modules?)") from None
    settings = {k: v for k, v in cfg["model"].items() if k != "path"}
    return LMDistribution(model, policy.tokenizer, freeze=False, **settings)


def _shares(total: int, contexts: Sequence[str]) -> list[tuple[str, int]]:
    """``total`` samples split as evenly as possible over ``contexts`` (none gets zero-sized)."""
    k = len(contexts)
    counts = [total // k + (i < total % k) for i in range(k)]
    return [(c, n) for c, n in zip(contexts, counts) if n > 0]


def _draw(model: Any, contexts: Sequence[str], total: int) -> list[tuple[str, list[Any]]]:
    import torch

    with torch.no_grad():
        return [(c, model.sample(c, n)[0]) for c, n in _shares(total, contexts)]


def _rates(features: Sequence[Any], drawn: Sequence[tuple[str, list[Any]]]) -> list[float]:
    """Each feature's mean over each context's samples, averaged over the contexts."""
    rates = []
    for scorer in features:
        per_context = [
            float(scorer.score(samples, c).double().mean()) for c, samples in drawn if samples
        ]
        rates.append(sum(per_context) / len(per_context) if per_context else math.nan)
    return rates


def _draw_exactly(draw: Callable[..., Any], n: int, context: str, what: str) -> Any:
    """``draw(n, context, ...)`` of QRS or IMH within :data:`MAX_PROPOSALS`, or a user error."""
    budget = "max_proposals" if what == "QRS" else "max_steps"
    try:
        return draw(n, context, progress=False, **{budget: MAX_PROPOSALS})
    except RuntimeError as err:
        raise UserError(
            str(err), "sampler", f"{what} gave up after {MAX_PROPOSALS} proposals"
        ) from None


def _beta_text(log_beta: float) -> str:
    return f"{math.exp(log_beta):.4g}" if abs(log_beta) < 700 else f"exp({log_beta:.6g})"


def _check_qrs_cost(estimated_rate: float, log_beta: float, n: int) -> None:
    """Refuse before drawing when the estimated acceptance rate makes ``n`` samples unaffordable."""
    needed = n / estimated_rate if estimated_rate > 0 else math.inf
    if needed > MAX_PROPOSALS:
        raise UserError(
            f"QRS at beta={_beta_text(log_beta)} accepts about {estimated_rate:.3g} of the proposals, so "
            f"{n} samples would take about {needed:.3g} of them",
            "sampler.beta",
            "use a smaller beta, or acceptance_rate instead",
        )


def _coefficients(ebm: Any) -> dict[str, float]:
    from disco.scorers import ExponentialScorer

    for factor in getattr(ebm, "factors", ()):
        if isinstance(factor, ExponentialScorer):
            return {f.name: float(c) for f, c in zip(factor.features, factor.coefficients)}
    return {}


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` whole or not at all (a full disk leaves the previous version)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    _write_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))


def _write_report(out: Path, report: dict[str, Any]) -> None:
    _write_atomically(out / "report.json", json.dumps(report, indent=2, default=float))


def _stage_seed(seed: int, stage: str) -> int:
    """A seed for one stage of the run, so it draws the same whether or not the run resumed."""
    digest = hashlib.sha256(f"{seed}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _keep_steps_up_to(metrics: Path, step: int) -> None:
    """Drop what a killed run logged after its checkpoint, so no step appears twice."""
    if not metrics.is_file():
        return
    kept = []
    for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        if (
            isinstance(record, dict)
            and isinstance(record.get("step"), int)
            and record["step"] > step
        ):
            continue
        kept.append(line + "\n")
    _write_atomically(metrics, "".join(kept))


def _save_policy(policy: Any, folder: Path) -> None:
    """Write the tuned policy whole or not at all: never a folder without its weights."""
    import tempfile

    from disco.io import replace_folder

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        policy.model.save_pretrained(tmp)
        policy.tokenizer.save_pretrained(tmp)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _try_plot(draw: Callable[[], object], name: str) -> None:
    try:
        draw()
    except ImportError:
        print(f"disco: {name} skipped (plots need matplotlib: pip install matplotlib)")


def _plot_tuning(
    history: Sequence[dict[str, float]], names: Sequence[str], targets: Sequence[float], path: Path
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    steps = range(1, len(history) + 1)
    left, right = fig.subplots(1, 2)
    for name, target in zip(names, targets):
        (line,) = left.plot(steps, [h.get(f"moment/{name}", math.nan) for h in history], label=name)
        left.axhline(target, color=line.get_color(), linestyle="--", linewidth=1)
    left.set_xlabel("step")
    left.set_ylabel("feature moment of the policy (dashed: target)")
    left.legend()
    right.plot(steps, [h["kl_target_policy"] for h in history], label="KL(target || policy)")
    right.plot(
        steps, [h.get("kl_policy_base", math.nan) for h in history], label="KL(policy || base)"
    )
    right.set_xlabel("step")
    right.set_ylabel("nats")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _interactive() -> bool:
    """Progress bars only on a terminal: logs and pipes get plain lines."""
    return sys.stderr.isatty()


def _fit(cfg: dict[str, Any], base: Any, features: list[Any], moments: list[float]) -> Any:
    contexts = cfg["contexts"]
    n = cfg["fit"]["n_samples"]
    print(f"disco: fitting the target's coefficients on {n} base samples ...", file=sys.stderr)
    where: dict[str, Any] = (
        {"context": contexts[0]} if len(contexts) == 1 else {"contexts": contexts}
    )
    try:
        target = base.constrain(
            features,
            moments,
            n_samples=n,
            sampling_size=min(256, n),
            progress=_interactive(),
            **where,
        )
    except ValueError as err:
        raise UserError(
            f"cannot fit the constraints: {err}",
            "features",
            "choose moments the base model can reach, or draw more samples ([fit] n_samples)",
        ) from None
    print(target.fit_report, file=sys.stderr)
    return target


class _StopBetweenSteps:
    """Ctrl-C during tuning stops the run after the step in progress.

    The checkpoint written then is a step boundary, so resuming is exact; a second Ctrl-C stops
    at once. Used as the tuner's last logger.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def start(self, config: Any) -> None:
        pass

    def log(self, step: int, metrics: Any) -> None:
        from disco.tuners.checkpoint import kill_point

        kill_point(f"tuning: step {step} logged")
        if self.requested:
            raise _StoppedBetweenSteps

    def log_samples(self, step: int, samples: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ndisco: stopping after this step (Ctrl-C again stops at once)", file=sys.stderr)

    def __enter__(self) -> _StopBetweenSteps:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _StoppedBetweenSteps(KeyboardInterrupt):
    pass


class TuningInterrupted(KeyboardInterrupt):
    """Tuning was interrupted; the run folder holds a partial report (and a checkpoint)."""


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings that must match for a run to be resumed (more steps and output may differ)."""
    plain = json.loads(json.dumps(cfg))
    plain["tuner"].pop("n_steps", None)
    plain.pop("output", None)
    return plain


def _check_resumable(cfg: dict[str, Any], out: Path) -> None:
    from disco.tuners import checkpoint

    saved = out / "config.json"
    if not (out / "ebm" / "ebm.json").is_file() or not saved.is_file():
        raise UserError(f"no run to resume in {out}", "--resume", "resume a run that began tuning")
    if checkpoint.find(out / "checkpoints") is None:
        raise UserError(
            f"no checkpoint in {out / 'checkpoints'}", "--resume", "run again without --resume"
        )
    try:
        if saved.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError("too large")
        recorded = json.loads(saved.read_bytes().decode("utf-8"))
        before = _comparable(recorded)
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as err:
        raise UserError(
            f"{saved} is unreadable ({err})", "--resume", "run again without --resume"
        ) from None
    now = _comparable(cfg)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise UserError(
            f"the configuration's {', '.join(changed)} differ from the run's (config.json)",
            "--resume",
            "resume with the run's settings (only tuner.n_steps and [output] may change)",
        )


def run_pipeline(
    cfg: dict[str, Any], out: Path, *, resume: bool = False, allow_imports: bool = False
) -> dict[str, Any]:
    """Fit the EBM, tune a policy, sample with QRS; write the run folder; return the report.

    The folder gets ``config.json`` (the settings, normalised), ``ebm/``, ``policy/``,
    ``checkpoints/``, ``metrics.jsonl``, ``samples.jsonl``, ``report.json``, ``tuning.png``
    and ``qrs.png``. With ``resume``, the saved EBM and the latest checkpoint in ``out`` are
    loaded and tuning continues from there: from the newest intact checkpoint (damaged ones are
    skipped with a warning), with the steps logged after it dropped from ``metrics.jsonl``, so
    the run ends as the uninterrupted one would (same report, bit-identical weights).
    """
    import torch

    from disco.distributions import ContextDistribution
    from disco.features import FeatureError
    from disco.io import load_ebm, save_ebm
    from disco.samplers import QRSEstimator, QuasiRejectionSampler
    from disco.tuners import Tuner, TunerConfig, checkpoint
    from disco.tuners import losses as loss_module
    from disco.tuners.loggers import ConsoleLogger, JSONLogger

    started = time.perf_counter()
    seed, contexts = cfg["seed"], cfg["contexts"]
    checkpoints = out / "checkpoints"
    if resume:
        _check_resumable(cfg, out)
    features = [
        build_feature(spec, i, allow_imports=allow_imports)
        for i, spec in enumerate(cfg["features"])
    ]
    moments = [float(s["moment"]) for s in cfg["features"]]
    names = [f.name for f in features]
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        shutil.rmtree(checkpoints, ignore_errors=True)  # never resume another run's policy
        _write_atomically(out / "config.json", json.dumps(cfg, indent=2))
    torch.manual_seed(seed)

    base = _lm(cfg["model"])
    report: dict[str, Any] = {
        "model": cfg["model"].get("path", "embedded KJV GPT-2"),
        "contexts": contexts,
        "features": names,
        "targets": moments,
        "seed": seed,
        "interrupted": False,
    }
    if resume:
        try:
            target = load_ebm(out / "ebm", allow_imports=allow_imports)
        except (ValueError, OSError) as err:
            raise UserError(f"cannot load the run's EBM: {err}", "--resume", "rerun it") from None
    else:
        target = _fit(cfg, base, features, moments)
        try:
            save_ebm(target, out / "ebm")
        except ValueError as err:
            raise UserError(str(err), "features", "use features that can be saved") from None
        checkpoint.kill_point("run: ebm saved")
    report["coefficients"] = _coefficients(target)
    torch.manual_seed(_stage_seed(seed, "base samples"))
    base_drawn = _draw(base, contexts, cfg["output"]["eval_samples"])
    report["base_rate"] = _rates(features, base_drawn)

    policy = _policy(cfg)
    config = TunerConfig(
        **cfg["tuner"],
        features=tuple(features),
        kl_from_base=True,
        checkpoint_dir=str(checkpoints),
    )
    loss = getattr(loss_module, LOSSES[cfg["loss"]])(
        baseline=config.baseline,
        baseline_window=config.baseline_window,
        max_log_t=config.max_log_t,
    )
    where: dict[str, Any] = (
        {"context": contexts[0]}
        if len(contexts) == 1
        else {"context_distribution": ContextDistribution(contexts, seed=seed)}
    )
    stopper = _StopBetweenSteps()
    tuner = Tuner(
        policy,
        target,
        loss,
        base=base,
        loggers=[ConsoleLogger(), JSONLogger(out / "metrics.jsonl", append=resume), stopper],
        config=config,
        **where,
    )
    if resume:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", checkpoint.CheckpointWarning)
            try:
                tuner.load_checkpoint(checkpoints)
            except checkpoint.CheckpointError as err:
                raise UserError(str(err), "--resume", "run again without --resume") from None
        for warning in caught:
            print(f"disco: warning: {warning.message}", file=sys.stderr)
        _keep_steps_up_to(out / "metrics.jsonl", tuner.step_count)
        print(f"disco: resuming after step {tuner.step_count}", file=sys.stderr)
    _write_report(out, {**report, "interrupted": True, "steps": tuner.step_count})
    try:
        with stopper:
            history = tuner.tune()
    except KeyboardInterrupt as interrupt:
        report["interrupted"] = True
        if isinstance(interrupt, _StoppedBetweenSteps):
            report["steps"] = tuner.step_count
            report["checkpoint"] = str(tuner.save_checkpoint())
        elif (latest := checkpoint.find(checkpoints)) is not None:  # stopped mid-step
            report["steps"] = int(latest.name.removeprefix("step-"))
            report["checkpoint"] = str(latest)
        else:
            report["steps"] = 0
        _write_report(out, report)
        raise TuningInterrupted from None
    except FeatureError as err:
        raise UserError(str(err), "features", "fix the feature's function") from None
    except OSError as err:
        raise UserError(
            f"cannot write to the run folder: {err}",
            "output.dir",
            "free some space; report.json and the last checkpoint are intact, and "
            "disco run CONFIG --out RUN_DIR --resume continues",
        ) from None
    except (ValueError, RuntimeError) as err:
        raise UserError(
            f"tuning failed: {str(err).strip().splitlines()[0] if str(err).strip() else err!r}",
            "tuner",
            "see the message; e.g. more samples_per_context, or a smaller learning_rate",
        ) from None
    policy.freeze()
    _save_policy(policy, out / "policy")
    checkpoint.kill_point("run: policy saved")
    _try_plot(lambda: _plot_tuning(history, names, moments, out / "tuning.png"), "tuning.png")

    torch.manual_seed(_stage_seed(seed, "tuned samples"))
    tuned_drawn = _draw(policy, contexts, cfg["output"]["eval_samples"])
    sampler_cfg = cfg["sampler"]
    estimator = QRSEstimator(
        target,
        policy,
        contexts=contexts,
        n_samples=sampler_cfg["estimation_samples"],
        progress=_interactive(),
    )
    # log beta throughout: an EBM's unnormalised scores can put beta past float range
    if "beta" in sampler_cfg:
        log_beta = math.log(sampler_cfg["beta"])
    else:
        log_beta = estimator.log_beta_for_acceptance_rate(sampler_cfg["acceptance_rate"])
    _try_plot(lambda: estimator.plot(out / "qrs.png"), "qrs.png")
    shares = _shares(sampler_cfg["n_samples"], contexts)
    rate = estimator.acceptance_rate_at_beta(log_beta=log_beta)
    _check_qrs_cost(rate, log_beta, max(n for _, n in shares))
    sampler = QuasiRejectionSampler(target, policy, beta=None, log_beta=log_beta, seed=seed)
    with torch.no_grad():
        qrs_drawn = [(c, _draw_exactly(sampler.sample_n, n, c, "QRS").samples) for c, n in shares]
    last = history[-1] if history else {}
    report.update(
        {
            "tuned_rate": _rates(features, tuned_drawn),
            "qrs_rate": _rates(features, qrs_drawn),
            "kl_policy_base": last.get("kl_policy_base", math.nan),
            "kl_target_policy": last.get("kl_target_policy", math.nan),
            "qrs_beta": sampler.beta,
            "qrs_log_beta": log_beta,
            "qrs_estimated_acceptance": rate,
            "qrs_acceptance": sampler.acceptance_rate,
            "qrs_estimated_kl": estimator.divergence_at_beta(divergence="kl", log_beta=log_beta),
            "qrs_estimated_tv": estimator.divergence_at_beta(divergence="tv", log_beta=log_beta),
            "steps": tuner.step_count,
            "seconds": time.perf_counter() - started,
        }
    )
    rows = [
        {
            "source": source,
            "context": c,
            "text": s.text,
            **{n: float(f.score([s], c)[0]) for n, f in zip(names, features)},
        }
        for source, drawn in (("base", base_drawn), ("tuned", tuned_drawn), ("qrs", qrs_drawn))
        for c, samples in drawn
        for s in samples
    ]
    _write_jsonl(out / "samples.jsonl", rows)
    checkpoint.kill_point("run: samples written")
    _write_report(out, report)
    print(format_table(report))
    print(f"\nreport folder: {out}")
    return report


def format_table(report: dict[str, Any]) -> str:
    """The before/after table printed at the end of a run (and by ``disco inspect``)."""

    def value(key: str, index: int | None = None) -> float:
        v = report.get(key, math.nan)
        return float(v[index] if index is not None and isinstance(v, list) else v)

    rows: list[tuple[str, str]] = []
    for i, name in enumerate(report["features"]):
        rows += [
            (f"{name}: base model", f"{value('base_rate', i):.3f}"),
            (f"{name}: target", f"{value('targets', i):.3f}"),
            (f"{name}: tuned policy", f"{value('tuned_rate', i):.3f}"),
            (f"{name}: QRS on the tuned policy", f"{value('qrs_rate', i):.3f}"),
        ]
    rows += [
        ("KL(policy || base), nats", f"{value('kl_policy_base'):.4f}"),
        ("KL(target || policy), nats", f"{value('kl_target_policy'):.4f}"),
        ("QRS beta", _beta_text(value("qrs_log_beta")) if "qrs_log_beta" in report else "nan"),
        ("QRS acceptance: estimated", f"{value('qrs_estimated_acceptance'):.3f}"),
        ("QRS acceptance: observed", f"{value('qrs_acceptance'):.3f}"),
        ("QRS KL(target || QRS), nats (est.)", f"{value('qrs_estimated_kl'):.4f}"),
        ("QRS TV(target, QRS) (est.)", f"{value('qrs_estimated_tv'):.4f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':{width}}  value", f"{'-' * width}  ------"]
    return "\n".join(lines + [f"{name:{width}}  {v}" for name, v in rows])


# ----------------------------------------------------------------------------------- commands


def _sample(args: argparse.Namespace) -> None:
    import torch

    from disco.features import ImportNotAllowedError
    from disco.io import load_ebm
    from disco.samplers import IMHSampler, QRSEstimator, QuasiRejectionSampler

    if not (Path(args.ebm) / "ebm.json").is_file():
        raise UserError(
            f"no saved EBM in {args.ebm}", "EBM_DIR", "give the ebm folder of a run (RUN_DIR/ebm)"
        )
    if args.n < 1:
        raise UserError(f"--n {args.n} is not positive", "--n", "ask for at least one sample")
    if args.beta is not None and not 0 < args.beta < math.inf:
        raise UserError(f"--beta {args.beta} is not positive", "--beta", "use beta > 0")
    if not 0 < args.acceptance_rate <= 1:
        raise UserError(
            f"--acceptance-rate {args.acceptance_rate} is outside (0, 1]",
            "--acceptance-rate",
            "use 0 < rate <= 1",
        )
    if args.length is not None and args.length < 1:
        raise UserError(f"--length {args.length} is not positive", "--length", "use 1 or more")
    try:
        target = load_ebm(
            args.ebm, trust_remote_code=args.trust_remote_code, allow_imports=args.allow_imports
        )
    except ImportNotAllowedError as err:
        raise UserError(
            f"cannot load the EBM: {str(err).split(': allow it')[0]}",
            "EBM_DIR",
            "pass --allow-imports if you trust that code",
        ) from None
    except (ValueError, OSError, KeyError) as err:
        raise UserError(f"cannot load the EBM: {err}", "EBM_DIR", "save it again") from None
    torch.manual_seed(args.seed)
    base = target.factors[0]
    if args.proposal is None:  # the EBM's own base model: same tokenizer, same length
        proposal = base
    else:
        length = args.length or getattr(base, "length", 30)
        proposal = _lm({"path": _model_path(args.proposal, None), "length": length})
    with torch.no_grad():
        if args.method == "imh":
            chain = IMHSampler(target, proposal, seed=args.seed)
            drawn = _draw_exactly(chain.sample_n, args.n, args.context, "IMH")
        else:
            if args.beta is not None:
                log_beta = math.log(args.beta)
            else:
                estimator = QRSEstimator(
                    target,
                    proposal,
                    context=args.context,
                    n_samples=args.estimation_samples,
                    progress=False,
                )
                log_beta = estimator.log_beta_for_acceptance_rate(args.acceptance_rate)
                rate = estimator.acceptance_rate_at_beta(log_beta=log_beta)
                _check_qrs_cost(rate, log_beta, args.n)
            sampler = QuasiRejectionSampler(
                target, proposal, beta=None, log_beta=log_beta, seed=args.seed
            )
            drawn = _draw_exactly(sampler.sample_n, args.n, args.context, "QRS")
    rows = [
        {"text": s.text, "target_log_score": float(lp)}
        for s, lp in zip(drawn.samples, drawn.target_log_scores.tolist())
    ]
    if args.output:
        _write_jsonl(Path(args.output), rows)
    else:
        for row in rows:
            print(json.dumps(row))


def _inspect(run_dir: Path) -> None:
    path = run_dir / "report.json"
    if not path.is_file():
        raise UserError(
            f"no report.json in {run_dir}", "RUN_DIR", "give a folder written by disco demo or run"
        )
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"unreadable report.json: {err}", "RUN_DIR", "rerun the command") from None
    print(f"run {run_dir}: model {report.get('model')}, contexts {len(report.get('contexts', []))}")
    if report.get("interrupted"):
        print(
            f"interrupted after {report.get('steps')} steps (partial report); "
            "continue it with: disco run CONFIG --out RUN_DIR --resume"
        )
    else:
        print(format_table(report))
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        from disco.tuners.loggers import read_jsonl

        steps = [r for r in read_jsonl(metrics) if "step" in r and "loss" in r]
        if steps:
            last = steps[-1]
            print(
                f"last step {last['step']}: loss {last['loss']:.4g}, "
                f"KL(target || policy) {last.get('kl_target_policy', math.nan):.4g}"
            )


ALLOW_IMPORTS_HELP = (
    "let 'function' features import their Python modules (importing runs them; only for code "
    "you trust)"
)


def _parser() -> argparse.ArgumentParser:
    from disco import __version__  # the Rust core's, i.e. Cargo.toml's: one source

    parser = argparse.ArgumentParser(
        prog="disco", description="Distributional control of generative models."
    )
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the whole path on the embedded model, offline")
    demo.add_argument("--quick", action="store_true", help="a sub-minute version (for tests)")
    demo.add_argument("--out", type=Path, default=Path("disco-demo"), help="report folder")
    demo.add_argument("--model", default=None, help="model folder or Hub name (default: embedded)")
    demo.add_argument("--seed", type=int, default=0)
    run = sub.add_parser("run", help="the whole path from a TOML configuration file")
    run.add_argument("config", type=Path)
    run.add_argument("--out", type=Path, default=None, help="report folder (overrides [output])")
    run.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its checkpoint"
    )
    run.add_argument("--allow-imports", action="store_true", help=ALLOW_IMPORTS_HELP)
    sample = sub.add_parser("sample", help="QRS or IMH samples from a saved EBM, as JSON lines")
    sample.add_argument("ebm", help="a folder written by save_ebm (a run's RUN_DIR/ebm)")
    sample.add_argument(
        "--proposal",
        default=None,
        help="proposal model folder, e.g. RUN_DIR/policy (default: the EBM's base model)",
    )
    sample.add_argument("--method", choices=("qrs", "imh"), default="qrs")
    sample.add_argument("--n", type=int, default=10, help="samples to output")
    group = sample.add_mutually_exclusive_group()
    group.add_argument("--beta", type=float, default=None, help="QRS beta")
    group.add_argument(
        "--acceptance-rate", type=float, default=0.5, help="QRS: choose beta for this rate"
    )
    sample.add_argument("--estimation-samples", type=int, default=1024)
    sample.add_argument("--context", default="")
    sample.add_argument(
        "--length",
        type=int,
        default=None,
        help="new tokens of --proposal (default: the EBM base's)",
    )
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--output", default=None, help="write the JSON lines here, not stdout")
    sample.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let the EBM's base model run its own Python code (only for a source you trust)",
    )
    sample.add_argument("--allow-imports", action="store_true", help=ALLOW_IMPORTS_HELP)
    inspect = sub.add_parser("inspect", help="print a run's summary")
    inspect.add_argument("run_dir", type=Path)
    return parser


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "demo":
        run_pipeline(demo_config(args.quick, args.model, args.seed), args.out)
    elif args.command == "run":
        cfg = load_config(args.config, allow_imports=args.allow_imports)
        out = args.out or Path(cfg["output"]["dir"])
        run_pipeline(cfg, out, resume=args.resume, allow_imports=args.allow_imports)
    elif args.command == "sample":
        _sample(args)
    else:
        _inspect(args.run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``disco`` command; returns the exit status."""
    from safetensors import SafetensorError

    from disco.features import FeatureError

    args = _parser().parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # loading bars would bury disco's own output
    try:
        with warnings.catch_warnings():
            # raised between peft and transformers versions; nothing a user can act on
            warnings.filterwarnings(
                "ignore",
                message="`is_gradient_checkpointing` is deprecated",
                category=FutureWarning,
            )
            _dispatch(args)
    except UserError as err:
        print(f"disco: error: {err}", file=sys.stderr)
        return 2
    except FeatureError as err:  # a function feature failed while scoring (fit, sampling)
        print(f"disco: error: {err} (features): fix the feature's function", file=sys.stderr)
        return 2
    except (OSError, SafetensorError) as err:  # a full disk, a folder that cannot be written
        print(f"disco: error: {err} (output): check the output folder", file=sys.stderr)
        return 2
    except TuningInterrupted:
        print(
            "disco: interrupted; report.json (partial) and the last checkpoint are in the run "
            "folder: disco run CONFIG --out RUN_DIR --resume continues it",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        print("disco: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
