"""Built-in features that can be written down: in a config file, or saved with an EBM.

Each builder returns a scorer carrying a ``spec`` (a JSON-friendly dict) from which
:func:`feature` rebuilds it, so an EBM saves as data, never as pickled code. Any Python
function can still be a feature through its import path (``"package.module:function"``);
importing a module runs it, so :func:`feature` builds such a specification only when the
caller passes ``allow_imports=True`` (built-in features need no opt-in).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import numbers
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from disco import numerics
from disco.registry import Registry
from disco.scorers.base import BooleanScorer, PositiveScorer, Scorer

if TYPE_CHECKING:  # a classifier's scorer is torch's: imported when one is built
    from disco.scorers.pipeline import PipelineScorer

__all__ = [
    "FEATURE_TYPES",
    "FeatureError",
    "ImportNotAllowedError",
    "classifier_probability",
    "feature",
    "from_import_path",
    "length_between",
    "negated",
    "phrase_present",
    "regex_match",
    "word_present",
]

# Each ``type`` of a feature specification and the builder taking the rest of it as keywords:
# a new type is a builder plus its registration line.
FEATURE_TYPES: Registry[Callable[..., Scorer]] = Registry("feature type")


class ImportNotAllowedError(ValueError):
    """A feature specification names a module to import, and imports were not allowed.

    ``what`` says which module would be imported from where; ``fix`` how to allow it.
    """

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what}: {fix}")
        self.what = what
        self.fix = fix


class FeatureError(RuntimeError):
    """A feature's own function raised while scoring (the message names the feature)."""


def _flag(value: Any, name: str) -> bool:
    """``value`` if it is a boolean; anything else (the string "no" included) is refused."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _text(sample: Any) -> str:
    return sample.text if hasattr(sample, "text") else str(sample)


_S = TypeVar("_S", bound=Scorer)


def _with_spec(scorer: _S, spec: dict[str, Any]) -> _S:
    scorer.spec = spec
    return scorer


@FEATURE_TYPES.register(name="word")
def word_present(word: str, case_sensitive: bool = False) -> BooleanScorer:
    """True when ``word`` occurs as a whole word in the sample's text."""
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"word must be a non-empty string, got {word!r}")
    _flag(case_sensitive, "case_sensitive")
    flags = 0 if case_sensitive else re.IGNORECASE
    pattern = re.compile(r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)", flags)
    scorer = BooleanScorer(
        lambda s, c: pattern.search(_text(s)) is not None, name=f"word:{word.strip()}"
    )
    return _with_spec(scorer, {"type": "word", "word": word, "case_sensitive": case_sensitive})


@FEATURE_TYPES.register(name="phrase")
def phrase_present(phrase: str, case_sensitive: bool = False) -> BooleanScorer:
    """True when ``phrase`` occurs in the sample's text (whitespace-normalised substring)."""
    if not isinstance(phrase, str) or not phrase.strip():
        raise ValueError(f"phrase must be a non-empty string, got {phrase!r}")
    _flag(case_sensitive, "case_sensitive")
    needle = " ".join(phrase.split())
    if not case_sensitive:
        needle = needle.lower()

    def present(sample: Any, context: Any) -> bool:
        text = " ".join(_text(sample).split())
        return needle in (text if case_sensitive else text.lower())

    scorer = BooleanScorer(present, name=f"phrase:{needle}")
    return _with_spec(
        scorer, {"type": "phrase", "phrase": phrase, "case_sensitive": case_sensitive}
    )


@FEATURE_TYPES.register(name="regex")
def regex_match(pattern: str, flags: str = "") -> BooleanScorer:
    """True when the regular expression matches somewhere in the sample's text.

    ``flags`` is a string of ``i`` (ignore case), ``m`` (multi-line) and ``s`` (dot matches all).
    The search runs in linear time (Rust's ``regex`` crate, see :class:`disco.numerics.TextPattern`
    for the few differences from Python's ``re``): backreferences and look-around are refused
    here, when the feature is built, with a ``ValueError``.
    """
    compiled = numerics.TextPattern(pattern, flags)
    scorer = BooleanScorer(
        lambda samples, c: compiled.search([_text(s) for s in samples]),
        batched=True,
        name=f"regex:{pattern}",
    )
    return _with_spec(scorer, {"type": "regex", "pattern": pattern, "flags": flags})


def length_between(min_tokens: int = 0, max_tokens: int | None = None) -> BooleanScorer:
    """True when the sample has between ``min_tokens`` and ``max_tokens`` tokens (EOS included)."""
    for name, value in (("min", min_tokens), ("max", max_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if min_tokens < 0 or (max_tokens is not None and max_tokens < min_tokens):
        raise ValueError(f"need 0 <= min_tokens <= max_tokens, got {min_tokens} and {max_tokens}")
    upper = float("inf") if max_tokens is None else max_tokens

    def within(sample: Any, context: Any) -> bool:
        n = len(sample.token_ids) if hasattr(sample, "token_ids") else len(_text(sample).split())
        return min_tokens <= n <= upper

    scorer = BooleanScorer(
        within, name=f"length:{min_tokens}-{'' if max_tokens is None else max_tokens}"
    )
    return _with_spec(scorer, {"type": "length", "min": min_tokens, "max": max_tokens})


FEATURE_TYPES.register(
    lambda min=0, max=None: length_between(min, max),
    name="length",
    about="True when the sample has between min and max tokens (EOS included).",
)


@FEATURE_TYPES.register(name="classifier")
def classifier_probability(model: str, label: str | int, batch_size: int = 32) -> PipelineScorer:
    """The probability a local (or Hub) text-classification model gives ``label``."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a folder or Hub name, got {model!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    from disco.scorers.pipeline import PipelineScorer

    scorer = PipelineScorer(label, model, batch_size=batch_size)
    return _with_spec(
        scorer, {"type": "classifier", "model": model, "label": label, "batch_size": batch_size}
    )


def _split(path: Any) -> tuple[str, str]:
    if not isinstance(path, str):
        raise ValueError(f"an import path is a string 'package.module:function', got {path!r}")
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"import path {path!r} must look like 'package.module:function'")
    return module_name, attribute


def module_origin(module_name: str, extra_paths: Sequence[str] = ()) -> str:
    """Where ``module_name`` would be imported from, found without running any of its code.

    ``extra_paths`` are searched after ``sys.path`` (folders a caller would add). Parent
    packages are searched, not imported (``importlib.util.find_spec`` would run their
    ``__init__``); an already imported module reports its file.
    """
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return str(getattr(loaded, "__file__", None) or "an already imported module")
    parts = module_name.split(".")
    search: list[str] | None = [*sys.path, *extra_paths]
    spec = None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
            if spec is None and i == 0:
                spec = importlib.util.find_spec(name)  # built-in and frozen modules
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return "nowhere on sys.path (no such module)"
        search = list(spec.submodule_search_locations or [])
    assert spec is not None
    return str(spec.origin or "a namespace package")


def _import(path: str) -> Callable[..., Any]:
    module_name, attribute = _split(path)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import module {module_name!r} for feature {path!r}: {err}"
        ) from None
    except Exception as err:  # the module's own code failed: a syntax error, a raise, ...
        where = f" ({err.filename}, line {err.lineno})" if isinstance(err, SyntaxError) else ""
        raise ValueError(
            f"importing module {module_name!r} for feature {path!r} failed: "
            f"{type(err).__name__}: {getattr(err, 'msg', err)}{where}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(
                f"module {module_name!r} has no attribute {attribute!r} (feature {path!r})"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{path!r} is not callable")
    try:
        inspect.signature(target).bind(None, None)
    except TypeError:
        raise ValueError(
            f"{path!r} must take two arguments, (sample, context), but its signature is "
            f"{inspect.signature(target)}"
        ) from None
    except ValueError:  # builtins without a signature: trust them
        pass
    return target


def _guarded(function: Callable[..., Any], path: str, batched: bool) -> Callable[..., Any]:
    """``function``, with its failures reported as a :class:`FeatureError` naming the feature."""

    def call(sample: Any, context: Any) -> Any:
        try:
            value = function(sample, context)
        except Exception as err:
            raise FeatureError(f"feature {path!r} raised {type(err).__name__}: {err}") from err
        if not batched and not isinstance(value, numbers.Real | np.generic):
            raise FeatureError(f"feature {path!r} returned {value!r:.60}, not a number")
        return value

    return call


@FEATURE_TYPES.register(name="function")
def from_import_path(path: str, kind: str = "boolean", batched: bool = False) -> Scorer:
    """A feature from any function ``f(sample, context)`` named by ``"package.module:function"``.

    ``kind`` is ``"boolean"`` (a predicate), ``"real"`` (any real value) or ``"positive"``
    (a non-negative factor).
    """
    classes = {"boolean": BooleanScorer, "real": Scorer, "positive": PositiveScorer}
    if kind not in classes:
        raise ValueError(f"kind must be one of {sorted(classes)}, got {kind!r}")
    _flag(batched, "batched")
    function = _guarded(_import(path), path, batched)
    scorer = classes[kind](function, batched=batched, name=path)
    return _with_spec(scorer, {"type": "function", "path": path, "kind": kind, "batched": batched})


def feature(
    spec: Mapping[str, Any], *, allow_imports: bool = False, import_paths: Sequence[str] = ()
) -> Scorer:
    """Build a feature from its specification, e.g. ``{"type": "word", "word": "amazing"}``.

    A ``function`` specification imports (runs) a module: it is refused with
    :class:`ImportNotAllowedError`, naming the module and where it would come from, unless
    ``allow_imports`` is true (``import_paths``: folders the caller would add to ``sys.path``,
    for the message).
    """
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"a feature specification is a table with a 'type' key, got {spec!r}")
    kind = spec["type"]
    if not isinstance(kind, str):
        raise ValueError(f"a feature's type is a string, got {kind!r}")
    params = {k: v for k, v in spec.items() if k not in ("type", "moment", "name")}
    builder = FEATURE_TYPES.lookup(kind)
    unknown = sorted(set(params) - set(inspect.signature(builder).parameters))
    if unknown:
        raise ValueError(f"bad settings for a {kind!r} feature: unknown {unknown}")
    if kind == "function" and not allow_imports:
        module_name, _ = _split(params.get("path"))
        raise ImportNotAllowedError(
            f"feature {params.get('path')!r} would import (run) module {module_name!r} from "
            f"{module_origin(module_name, import_paths)}",
            fix="allow it with allow_imports=True (disco: --allow-imports) if you trust that code",
        )
    if isinstance(params.get("feature"), Mapping):  # a combinator ('not') of a feature's table
        params["feature"] = feature(
            params["feature"], allow_imports=allow_imports, import_paths=import_paths
        )
    try:
        scorer = builder(**params)
    except TypeError as err:
        raise ValueError(f"bad settings for a {kind!r} feature {dict(params)}: {err}") from None
    if "name" in spec:
        scorer.name = str(spec["name"])
        scorer.spec = {**(scorer.spec or {}), "name": scorer.name}
    return scorer


@FEATURE_TYPES.register(name="not")
def negated(feature: Scorer | None = None) -> BooleanScorer:
    """The negation of a boolean feature, given as its own table (``feature = {...}``)."""
    if not isinstance(feature, Scorer):
        raise ValueError("a 'not' feature needs feature = { type = ..., ... }: the one it negates")
    if not isinstance(feature, BooleanScorer):
        raise ValueError("'not' applies to boolean features only")
    return feature.negation()
