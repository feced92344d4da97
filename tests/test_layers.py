"""Imports flow one way, from the numerics up to the original disco's aliases.

An AST walk of ``python/disco`` that sees every import, those inside functions included, gives
each module's imports; each module has a declared layer (:data:`LAYERS`). An import may go to
the same layer or a lower one. The only references up to the alias layer are the lazy ones that
``disco._aliases.UPWARD_REFERENCES`` lists, and no two packages import each other, directly or
around a circle.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from disco._aliases import ORIGINAL_MODULES, UPWARD_REFERENCES

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "disco"

#: Each module's layer, by the longest matching prefix, from the bottom (0) up.
LAYERS: dict[str, int] = {
    # the Rust core, the numerics over it, and the beta check they share
    "disco._core": 0,
    "disco.numerics": 0,
    "disco._beta": 0,
    # small helpers: atomic writes, locks, calling a user's methods, processes and chunks
    "disco._atomic": 1,
    "disco._lock": 1,
    "disco._lazy": 1,
    "disco._fields": 1,
    "disco._safetensors": 1,
    "disco._crash_points": 1,
    "disco._torch_modules": 1,
    "disco._calls": 1,
    "disco.distributed": 1,
    "disco.registry": 1,
    "disco.models": 1,
    # what a target is made of
    "disco.distributions": 2,
    "disco.scorers": 2,
    "disco.features": 2,
    "disco.exact": 2,
    # drawing from it and tuning towards it
    "disco.samplers": 3,
    "disco.tuners": 3,
    "disco.parallel": 3,
    # what a user runs
    "disco.evaluation": 4,
    "disco.io": 4,
    "disco.cli": 4,
    "disco.__main__": 4,
    # the original disco's spellings and module paths, and the package's front door
    "disco.compat": 5,
    "disco.metrics": 5,  # the original's divergence classes, at its module path
    "disco._compat_observer": 5,
    "disco._aliases": 5,
    "disco": 5,
}

#: Edges other branches remove, allowed here until they are merged (then this is emptied).
KNOWN_UNTIL_MERGED: dict[tuple[str, str], str] = {}


#: The names the package itself (``disco/__init__.py``) gives, and the module each comes from.
ROOT_NAMES = {
    "__version__": "disco._core",
    "ConvergenceError": "disco._core",
    "evaluate": "disco.evaluation",
}


@dataclass(frozen=True)
class Import:
    """One import statement's target module, where it is, and whether it runs on first use."""

    importer: str
    target: str
    line: int
    lazy: bool  # inside a function: runs when called, not when the module is imported


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _known(name: str, modules: Iterable[str]) -> str | None:
    """The module (or package) ``name`` runs: itself, or the longest prefix that exists."""
    while name and name not in modules and name != "disco._core":
        name = name.rpartition(".")[0]
    return name or None


class _Walker(ast.NodeVisitor):
    def __init__(self, module: str, package: bool, modules: Mapping[str, object]) -> None:
        self.module, self.package, self.modules = module, package, modules
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, name: str, node: ast.stmt) -> None:
        target = _known(name, self.modules)
        if target and target != self.module and target.startswith("disco"):
            self.found.append(Import(self.module, target, node.lineno, self.depth > 0))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".")[: None if self.package else -1]
            base = base[: len(base) - node.level + 1]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        for alias in node.names:
            # `from pkg import sub` imports the module pkg.sub; `from pkg import name`, pkg
            sub = f"{prefix}.{alias.name}"
            if prefix == "disco" and alias.name in ROOT_NAMES:
                sub = ROOT_NAMES[alias.name]
            self._add(sub if sub in self.modules or sub == "disco._core" else prefix, node)


def imports(root: Path = PACKAGE) -> list[Import]:
    """Every import of a disco module by a module of the package at ``root``."""
    modules = _modules(root)
    found = []
    for name, (path, package) in modules.items():
        walker = _Walker(name, package, modules)
        walker.visit(ast.parse(path.read_text(), str(path)))
        found += walker.found
    return found


def layer(module: str) -> int:
    """The declared layer of ``module`` (KeyError when none is)."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise KeyError(module)


def _allowed(edge: Import) -> bool:
    pair = (edge.importer, edge.target)
    return pair in KNOWN_UNTIL_MERGED or (edge.lazy and pair in _upward())


def _upward() -> set[tuple[str, str]]:
    return {(below, above) for below, above, _ in UPWARD_REFERENCES}


def upward_imports(found: Iterable[Import]) -> list[str]:
    """Imports from a lower layer to a higher one, other than the allowed ones."""
    return [
        f"{e.importer}:{e.line} imports {e.target} (layer {layer(e.importer)} -> {layer(e.target)})"
        for e in found
        if layer(e.target) > layer(e.importer) and not _allowed(e)
    ]


def unit(module: str) -> str:
    """The package a module belongs to for the cycle check: ``disco.<first part>``."""
    return ".".join(module.split(".")[:2])


def package_cycles(found: Iterable[Import]) -> list[list[str]]:
    """Circles of packages importing one another (each as a list of packages), allowed edges aside."""
    edges: dict[str, set[str]] = {}
    for e in found:
        if unit(e.importer) != unit(e.target) and not _allowed(e) and e.importer != "disco":
            edges.setdefault(unit(e.importer), set()).add(unit(e.target))
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


# --- the package as it is ---------------------------------------------------------------------


def test_every_module_has_a_layer():
    undeclared = [m for m in _modules(PACKAGE) if not _has_layer(m)]
    assert not undeclared, f"declare these modules' layer in LAYERS: {undeclared}"


def _has_layer(module: str) -> bool:
    try:
        layer(module)
    except KeyError:
        return False
    return True


def test_no_import_runs_upward():
    assert upward_imports(imports()) == []


def test_no_cycle_between_packages():
    assert package_cycles(imports()) == []


def test_the_upward_references_are_lazy_and_each_one_is_used():
    found = imports()
    for below, above, why in UPWARD_REFERENCES:
        assert layer(above) > layer(below), (below, above)
        uses = [e for e in found if (e.importer, e.target) == (below, above)]
        assert uses, f"{below} no longer refers to {above} ({why}): remove it from the list"
        eager = [e.line for e in uses if not e.lazy]
        assert not eager, f"{below}:{eager} imports {above} at import time"


def test_the_known_edges_are_still_there():
    # Once another branch removes one, its line goes, so the list cannot hide a new edge.
    pairs = {(e.importer, e.target) for e in imports()}
    assert [edge for edge in KNOWN_UNTIL_MERGED if edge not in pairs] == []


def test_import_disco_loads_neither_the_alias_layer_nor_torch():
    code = (
        "import sys, disco; "
        "print(sorted(m for m in sys.modules if m in ('torch', 'disco.compat') "
        "or m.startswith('disco.') and m not in ('disco._core', 'disco._aliases')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_originals_module_paths_hold_their_names():
    import importlib

    for path, names in ORIGINAL_MODULES.items():
        module = importlib.import_module(path)
        assert module.__all__ == list(names)
        for name, home in names.items():
            assert getattr(module, name) is getattr(importlib.import_module(home), name)
        assert not (PACKAGE.parent / (path.replace(".", "/") + ".py")).exists()


# --- the check itself fails on what it forbids ------------------------------------------------


@pytest.fixture
def copy_of_the_package(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "disco", ignore=shutil.ignore_patterns("*.so", "*.pyd"))
    return tmp_path / "disco"


def _plant(path: Path, line: str) -> int:
    """Insert ``line`` after the ``__future__`` import of ``path``; return its line number."""
    text = path.read_text()
    anchor = "from __future__ import annotations\n"
    assert anchor in text
    path.write_text(text.replace(anchor, anchor + line + "\n", 1))
    return text[: text.index(anchor)].count("\n") + 2


def test_a_planted_back_edge_to_the_alias_layer_fails(copy_of_the_package):
    assert upward_imports(imports(copy_of_the_package)) == []
    line = _plant(copy_of_the_package / "distributions" / "base.py", "import disco.compat")
    assert upward_imports(imports(copy_of_the_package)) == [
        f"disco.distributions.base:{line} imports disco.compat (layer 2 -> 5)"
    ]


def test_a_planted_lazy_back_edge_fails_unless_listed(copy_of_the_package):
    path = copy_of_the_package / "samplers" / "qrs.py"
    path.write_text(path.read_text() + "\n\ndef _f():\n    from disco import evaluation\n")
    [message] = upward_imports(imports(copy_of_the_package))
    assert (
        message.startswith("disco.samplers.qrs:") and "disco.evaluation (layer 3 -> 4)" in message
    )


def test_a_planted_cycle_between_packages_fails(copy_of_the_package):
    assert package_cycles(imports(copy_of_the_package)) == []
    # the same layer, so only the cycle check can see it
    _plant(copy_of_the_package / "scorers" / "base.py", "from disco.features import Feature")
    _plant(copy_of_the_package / "features.py", "from disco.scorers import Scorer")
    cycles = package_cycles(imports(copy_of_the_package))
    assert any({"disco.features", "disco.scorers"} <= set(cycle) for cycle in cycles), cycles
