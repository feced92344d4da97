"""Helpers shared by the loggers: lazy imports, config flattening, JSON-safe values."""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["exit_status", "flatten", "jsonable", "metric_value", "require"]


def require(module: str, extra: str, who: str, package: str | None = None) -> Any:
    """Import ``module`` or raise an ImportError naming the package and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = package or module.split(".")[0]
        raise ImportError(
            f'{who} needs the {name!r} package; install it with: pip install "disco-control[{extra}]"'
        ) from exc


def metric_value(key: str, value: Any) -> float | int:
    """A metric as a Python number (bools and ints stay ints; numpy and 0-d tensors unwrap)."""
    if isinstance(value, (bool, int)):
        return int(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"metric {key!r} is not a number: got {type(value).__name__} {value!r}"
        ) from None


def flatten(config: Mapping[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level, keys joined by ``sep`` (``{"a": {"b": 1}} -> {"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, sep, name + sep))
        else:
            out[name] = value
    return out


def jsonable(value: Any) -> Any:
    """``value`` made of JSON types only, with non-finite floats as ``"NaN"``/``"Infinity"``/``"-Infinity"``.

    Mappings get string keys, sequences become lists, numpy and torch scalars and arrays become
    numbers and lists (through ``.tolist()``), anything else becomes its ``str``.
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        try:
            return jsonable(tolist())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def exit_status() -> str:
    """``"killed"`` while a KeyboardInterrupt propagates, ``"failed"`` for another exception, else ``"ok"``.

    Called from ``close()``, which the tuner runs in a ``finally`` block, so the exception being
    propagated (if any) is visible through :func:`sys.exc_info`.
    """
    exc = sys.exc_info()[1]
    if exc is None:
        return "ok"
    return "killed" if isinstance(exc, KeyboardInterrupt) else "failed"
