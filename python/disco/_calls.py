"""How disco calls a user's ``sample`` and ``log_score``: by keyword, whatever their order.

Users write distributions with ``sample(self, sampling_size=1, context=None)`` as readily as with
``sample(self, context="", sampling_size=32)``, and score with ``log_score(self, samples,
context)`` or ``log_score(self, xs, context=None)``; calling by name serves every one of them.
The samples go by name only where the method has a parameter called ``samples`` (a user may
name it anything), the context and the size always do.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["call_log_score", "call_sample"]


@functools.lru_cache(maxsize=512)
def _names_samples(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return "samples" in parameters and parameters["samples"].kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def call_sample(distribution: Any, context: Any, size: int) -> Any:
    """``distribution.sample(context=context, sampling_size=size)``."""
    return distribution.sample(context=context, sampling_size=size)


def call_log_score(scorer: Any, samples: Sequence[Any], context: Any, **options: Any) -> Any:
    """``scorer.log_score(samples, context=context, **options)``, ``samples=`` when so named."""
    method = scorer.log_score
    function = getattr(method, "__func__", method)
    try:
        by_name = _names_samples(function)
    except TypeError:  # an unhashable callable: call as most are written
        by_name = False
    if by_name:
        return method(samples=samples, context=context, **options)
    return method(samples, context=context, **options)
