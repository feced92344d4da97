"""Dataclass fields that carry their meaning: the settings' ``help`` texts, written once."""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["described"]


def described(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose ``metadata["help"]`` is ``text`` (``kwargs``: as for ``field``)."""
    return field(metadata={"help": text}, **kwargs)
