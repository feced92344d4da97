"""Regular expressions searched in linear time (Rust's ``regex`` crate)."""

from __future__ import annotations

from collections.abc import Sequence

from disco import _core
from disco.numerics._convert import BoolArray


class TextPattern:
    r"""A regular expression searched in linear time (Rust's ``regex`` crate), in batches.

    Unlike Python's backtracking ``re``, no pattern can make a search slow (``^(\w+\s?)*$``
    hangs ``re`` on one sentence): the cost is linear in the text. The price is the syntax an
    automaton cannot express: backreferences (``\1``) and look-around (``(?=``, ``(?<!`` ...)
    are refused here, when the pattern is compiled, with a ``ValueError``.

    ``flags`` is a string of ``i`` (ignore case), ``m`` (``^``/``$`` at line breaks) and ``s``
    (``.`` also matches a newline), as ``re.IGNORECASE``, ``re.MULTILINE`` and ``re.DOTALL``.
    Differences from ``re`` worth knowing: ``$`` without ``m`` matches only at the very end
    (``re`` also matches before a final newline); ``\Z`` is written ``\z``; ``\w``, ``\d``,
    ``\s`` and ``\b`` are Unicode-aware in both (``re.ASCII`` has no equivalent flag: write
    ``(?-u:\w)`` or ``[0-9]``); inside brackets ``&&``, ``--`` and ``~~`` are set operations
    and must be escaped to mean themselves.

    >>> TextPattern(r"\bgod\b", "i").search(["And God said", "godly"]).tolist()
    [True, False]
    """

    def __init__(self, pattern: str, flags: str = "") -> None:
        if not isinstance(pattern, str):
            raise ValueError(f"pattern is {type(pattern).__name__}: a str is expected")
        if not isinstance(flags, str):
            raise ValueError(f"flags is {type(flags).__name__}: a str of 'i', 'm', 's' is expected")
        self.pattern = pattern
        self.flags = flags
        self._core = _core.TextPattern(pattern, flags)

    def __repr__(self) -> str:
        return f"TextPattern({self.pattern!r}, {self.flags!r})"

    def search(self, texts: Sequence[str]) -> BoolArray:
        """Whether the pattern matches somewhere in each text (as ``re.search(...) is not None``)."""
        return self._core.search(texts if isinstance(texts, list) else list(texts))
