"""Package namespaces that import their public names on first use.

A package whose ``__init__`` imports every submodule makes its lightest one (a settings
dataclass, a registry) cost torch; :func:`lazy_exports` gives the package a module-level
``__getattr__`` and ``__dir__`` instead, so ``from package import Name`` imports only the
submodule that defines ``Name``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name of ``where`` from its module.

    ``where`` maps a public name to the module defining it. A name is imported once, then kept
    in the package's namespace; any other missing name is an ``AttributeError`` as usual.
    """
    namespace = importlib.import_module(package).__dict__

    def attribute(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        namespace[name] = value
        return value

    def names() -> list[str]:
        return sorted({*namespace, *where})

    return attribute, names
