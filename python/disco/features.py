"""Built-in features that can be written down: in a config file, or saved with an EBM.

Each builder returns a scorer carrying a ``spec`` (a JSON-friendly dict) from which
:func:`feature` rebuilds it, so an EBM saves as data, never as pickled code. Any Python
function can still be a feature through its import path (``"package.module:function"``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from disco import numerics
from disco.scorers import BooleanScorer, PipelineScorer, PositiveScorer, Scorer

__all__ = [
    "classifier_probability",
    "feature",
    "from_import_path",
    "length_between",
    "phrase_present",
    "regex_match",
    "word_present",
]

FEATURE_TYPES = ("word", "phrase", "regex", "length", "classifier", "function", "not")


def _text(sample: Any) -> str:
    return sample.text if hasattr(sample, "text") else str(sample)


_S = TypeVar("_S", bound=Scorer)


def _with_spec(scorer: _S, spec: dict[str, Any]) -> _S:
    scorer.spec = spec
    return scorer


def word_present(word: str, case_sensitive: bool = False) -> BooleanScorer:
    """True when ``word`` occurs as a whole word in the sample's text."""
    if not word or not word.strip():
        raise ValueError("word must be a non-empty string")
    flags = 0 if case_sensitive else re.IGNORECASE
    pattern = re.compile(r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)", flags)
    scorer = BooleanScorer(
        lambda s, c: pattern.search(_text(s)) is not None, name=f"word:{word.strip()}"
    )
    return _with_spec(scorer, {"type": "word", "word": word, "case_sensitive": case_sensitive})


def phrase_present(phrase: str, case_sensitive: bool = False) -> BooleanScorer:
    """True when ``phrase`` occurs in the sample's text (whitespace-normalised substring)."""
    if not phrase or not phrase.strip():
        raise ValueError("phrase must be a non-empty string")
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


def classifier_probability(model: str, label: str | int, batch_size: int = 32) -> PipelineScorer:
    """The probability a local (or Hub) text-classification model gives ``label``."""
    scorer = PipelineScorer(label, model, batch_size=batch_size)
    return _with_spec(
        scorer, {"type": "classifier", "model": model, "label": label, "batch_size": batch_size}
    )


def _import(path: str) -> Callable[..., Any]:
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"import path {path!r} must look like 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import module {module_name!r} for feature {path!r}: {err}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(
                f"module {module_name!r} has no attribute {attribute!r} (feature {path!r})"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{path!r} is not callable")
    return target


def from_import_path(path: str, kind: str = "boolean", batched: bool = False) -> Scorer:
    """A feature from any function ``f(sample, context)`` named by ``"package.module:function"``.

    ``kind`` is ``"boolean"`` (a predicate), ``"real"`` (any real value) or ``"positive"``
    (a non-negative factor).
    """
    classes = {"boolean": BooleanScorer, "real": Scorer, "positive": PositiveScorer}
    if kind not in classes:
        raise ValueError(f"kind must be one of {sorted(classes)}, got {kind!r}")
    scorer = classes[kind](_import(path), batched=batched, name=path)
    return _with_spec(scorer, {"type": "function", "path": path, "kind": kind, "batched": batched})


def feature(spec: Mapping[str, Any]) -> Scorer:
    """Build a feature from its specification, e.g. ``{"type": "word", "word": "amazing"}``."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"a feature specification is a table with a 'type' key, got {spec!r}")
    kind = spec["type"]
    params = {k: v for k, v in spec.items() if k not in ("type", "moment", "name")}
    builders: dict[str, Callable[..., Scorer]] = {
        "word": word_present,
        "phrase": phrase_present,
        "regex": regex_match,
        "length": lambda min=0, max=None: length_between(min, max),
        "classifier": classifier_probability,
        "function": from_import_path,
    }
    if kind == "not":
        if not isinstance(spec.get("feature"), Mapping):
            raise ValueError(
                "a 'not' feature needs feature = { type = ..., ... }: the one it negates"
            )
        unknown = sorted(set(params) - {"feature"})
        if unknown:
            raise ValueError(f"bad settings for a 'not' feature: unknown {unknown}")
        inner = feature(spec["feature"])
        if not isinstance(inner, BooleanScorer):
            raise ValueError("'not' applies to boolean features only")
        scorer: Scorer = inner.negation()
    elif kind not in builders:
        raise ValueError(
            f"unknown feature type {kind!r}: expected one of {', '.join(FEATURE_TYPES)}"
        )
    else:
        try:
            scorer = builders[kind](**params)
        except TypeError as err:
            raise ValueError(f"bad settings for a {kind!r} feature {dict(params)}: {err}") from None
    if "name" in spec:
        scorer.name = str(spec["name"])
        scorer.spec = {**(scorer.spec or {}), "name": scorer.name}
    return scorer
