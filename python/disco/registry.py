"""Named entries of an extension point: losses, feature types, loggers, samplers.

Each extension point keeps one :class:`Registry` next to what it registers
(``disco.tuners.losses.LOSSES``, ``disco.features.FEATURE_TYPES``,
``disco.tuners.loggers.LOGGERS``, ``disco.samplers.SAMPLERS``), so a new entry is one class
or function plus one registration line, and the ``disco`` command (``disco list``, the
configuration's checks, the ``--help`` texts) learns of it from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry"]

T = TypeVar("T")


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0].strip()


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping from names to entries, filled by :meth:`register`.

    Parameters
    ----------
    what:
        What an entry is, for messages (``"loss"``, ``"feature type"``).
    key:
        How an entry names itself when :meth:`register` is given no name (e.g. a loss class's
        ``kind``).

    Examples
    --------
    >>> shapes: Registry[type] = Registry("shape")
    >>> @shapes.register(name="square")
    ... class Square:
    ...     '''Four equal sides.'''
    >>> list(shapes), shapes.about("square")
    (['square'], 'Four equal sides.')
    >>> shapes.lookup("circle")
    Traceback (most recent call last):
    ...
    ValueError: unknown shape 'circle': expected one of square
    """

    def __init__(self, what: str, key: Callable[[T], str] | None = None) -> None:
        self.what = what
        self._key = key
        self._entries: dict[str, T] = {}
        self._about: dict[str, str] = {}

    @overload
    def register(self, entry: T, *, name: str | None = None, about: str | None = None) -> T: ...

    @overload
    def register(
        self, entry: None = None, *, name: str | None = None, about: str | None = None
    ) -> Callable[[T], T]: ...

    def register(
        self, entry: T | None = None, *, name: str | None = None, about: str | None = None
    ) -> Any:
        """Add ``entry`` under ``name`` (default: its ``key``); without ``entry``, a decorator.

        ``about`` is the one line :meth:`about` gives (default: the first line of the entry's
        docstring). A name already taken is an error: entries never replace each other silently.
        """

        def add(item: T) -> T:
            if name is not None:
                label = name
            elif self._key is not None:
                label = self._key(item)
            else:
                raise TypeError(f"registering a {self.what} needs a name")
            if label in self._entries:
                raise ValueError(f"{self.what} {label!r} is registered already")
            self._entries[label] = item
            self._about[label] = about if about is not None else _first_line(item.__doc__)
            return item

        return add if entry is None else add(entry)

    def lookup(self, name: Any) -> T:
        """The entry called ``name``; an unknown name is a ``ValueError`` listing the known ones."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"unknown {self.what} {name!r}: expected one of {', '.join(self)}")
        return self._entries[name]

    def about(self, name: str) -> str:
        """One line saying what the entry ``name`` is."""
        return self._about[name]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self)})"
