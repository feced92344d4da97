"""Nested state as JSON plus named tensors: what a checkpoint's ``state.json`` holds.

Values may be JSON types, tuples, dicts with non-string keys and tensors, nested freely;
:func:`encode` stores the tensors apart (in a safetensors file) and :func:`decode` puts them back.
Nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["decode", "encode"]


def encode(value: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """``value`` as JSON, its tensors moved into ``tensors`` (named ``prefix.N``).

    Tuples and dicts whose keys are not all strings are tagged so :func:`decode` restores them.
    """
    if isinstance(value, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {"$tensor": key}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, tensors, prefix) for v in value]}
    if isinstance(value, list):
        return [encode(v, tensors, prefix) for v in value]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v, tensors, prefix) for k, v in value.items()}
        return {
            "$items": [
                [encode(k, tensors, prefix), encode(v, tensors, prefix)] for k, v in value.items()
            ]
        }
    raise TypeError(f"a checkpoint cannot hold a {type(value).__name__} ({value!r:.80})")


def decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Invert :func:`encode`."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "$tensor":
            return tensors[inner]
        if tag == "$tuple":
            return tuple(decode(v, tensors) for v in inner)
        if tag == "$items":
            return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in inner}
    return {k: decode(v, tensors) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key
