"""How disco calls a user's ``sample`` and ``log_score``: by keyword, whatever their order.

Users write distributions with ``sample(self, sampling_size=1, context=None)`` as readily as with
``sample(self, context="", sampling_size=32)``, and score with ``log_score(self, samples,
context)`` or ``log_score(self, xs, context=None)``; calling by name serves every one of them.
The samples go by name only where the method has a parameter called ``samples`` (a user may
name it anything), the context and the size always do. What comes back is checked here too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from disco import numerics

__all__ = ["FloatArray", "call_log_score", "call_sample", "draw_batch", "log_scores"]

FloatArray = npt.NDArray[np.float64]


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


def log_scores(values: Any, name: str, n: int, who: str) -> FloatArray:
    """``values`` as float64 numpy of length ``n``; NaN and ``+inf`` refused, naming ``name[i]``."""
    array = numerics.as_vector(values, name)
    if array.shape[0] != n:
        raise ValueError(f"length mismatch: {who} gave {array.shape[0]} {name} for {n} samples")
    bad = np.flatnonzero(np.isnan(array) | (array == np.inf))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] is {array[i]} ({who}): log-scores must be finite or -inf")
    return array


def draw_batch(proposal: Any, context: Any, size: int) -> tuple[list[Any], FloatArray]:
    """One batch from ``proposal.sample``, checked: non-empty and one log-probability per sample."""
    samples, log_q = call_sample(proposal, context, size)
    samples = list(samples)
    if not samples:
        raise ValueError(
            f"the proposal returned an empty batch for context {context!r} (asked for {size})"
        )
    return samples, log_scores(log_q, "proposal_log_scores", len(samples), "the proposal")
