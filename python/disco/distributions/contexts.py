"""Distributions over contexts (prompts), for conditional targets (docs/design.md §2.3, §6.2).

Every context distribution here has finite support: ``sample(sampling_size)`` returns contexts
and their log-probabilities, ``log_score(contexts)`` scores given ones, and ``contexts()`` and
``len()`` enumerate the entries. Entries are drawn uniformly with replacement; a string that
appears k times among N entries has probability k / N.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import numbers
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from disco.distributed import (
    Chunk,
    World,
    chunk_seed,
    current_world,
    keyed_random,
    plan_chunks,
    shared_seed,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "ContextDistribution",
    "DatasetContextDistribution",
    "SingleContextDistribution",
    "draw_contexts",
    "resolve_contexts",
]

_DATASETS_HINT = (
    "DatasetContextDistribution needs the optional dependency `datasets` to load this dataset: "
    "pip install 'disco-control[datasets]'"
)


class _FiniteContexts:
    """Uniform over a list of contexts (with repetitions), each a hashable value."""

    def __init__(self, entries: Sequence[Any], seed: int | None, what: str) -> None:
        if not entries:
            raise ValueError(f"{what} holds no contexts")
        for i, entry in enumerate(entries):
            try:
                hash(entry)
            except TypeError:
                raise ValueError(
                    f"{what}: entry {i} is a {type(entry).__name__}, which is not hashable; a "
                    "context must be a string for a language model, else any hashable value"
                ) from None
        self._entries = list(entries)
        self._counts = Counter(self._entries)
        self._generator: torch.Generator | None = None
        if seed is not None:
            import torch

            self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self._entries)

    def contexts(self) -> list[str]:
        """Every entry, in order (repetitions included)."""
        return list(self._entries)

    def sample(self, sampling_size: int = 32) -> tuple[list[str], torch.Tensor]:
        """Draw ``sampling_size`` contexts uniformly; return them and their log-probabilities."""
        if isinstance(sampling_size, bool) or not isinstance(sampling_size, int):
            raise ValueError(f"sampling_size must be a positive integer; got {sampling_size!r}")
        if sampling_size < 1:
            raise ValueError(f"sampling_size must be a positive integer; got {sampling_size}")
        import torch

        index = torch.randint(len(self._entries), (sampling_size,), generator=self._generator)
        drawn = [self._entries[i] for i in index.tolist()]
        return drawn, self.log_score(drawn)

    def log_score(self, contexts: Sequence[str]) -> torch.Tensor:
        """Log-probabilities (1-D float64) of ``contexts``; ``-inf`` outside the support."""
        if isinstance(contexts, str):
            raise ValueError("contexts must be a sequence of strings, not a string")
        total = len(self._entries)
        values = [
            math.log(self._counts[c] / total) if self._counts.get(c) else -math.inf
            for c in contexts
        ]
        import torch

        return torch.tensor(values, dtype=torch.float64)


class SingleContextDistribution(_FiniteContexts):
    """All probability on one context (by default the empty one: unconditional generation).

    The context is any hashable value (``None``, a number, a tuple) for distributions that are
    not language models; a language model needs a string.
    """

    def __init__(self, context: Any = "") -> None:
        super().__init__([context], None, "SingleContextDistribution")
        self.context = context


def _read_lines(path: Path) -> list[str]:
    """Read one context per line, stripping the newline (LF or CRLF) and nothing else."""
    text = path.read_text(encoding="utf-8")
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":  # a final newline ends the last line; it does not start a new one
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


class ContextDistribution(_FiniteContexts):
    """Uniform over a list of contexts or the lines of a text file.

    Parameters
    ----------
    contexts
        A list of strings, or the path of a UTF-8 text file holding one context a line (the
        newline is stripped; every line counts, empty ones included, so the log-probabilities
        are uniform over the whole file).
    path
        The same as passing a path as ``contexts`` (the keyword the original disco used).
    seed
        Seed of this distribution's own random generator (default: torch's global one).
    """

    def __init__(
        self,
        contexts: Sequence[str] | str | os.PathLike[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        seed: int | None = None,
    ) -> None:
        if (contexts is None) == (path is None):
            raise ValueError("pass either contexts (a list of strings or a file) or path")
        source = contexts if contexts is not None else path
        if isinstance(source, (str, os.PathLike)):
            file = Path(source).expanduser()
            if not file.is_file():
                raise FileNotFoundError(f"no context file {os.fspath(source)!r}")
            entries = _read_lines(file)
            what = f"context file {os.fspath(source)!r}"
        else:
            entries = list(source)  # type: ignore[arg-type]
            what = "contexts"
        super().__init__(entries, seed, what)


_LOCAL_FORMATS = (".txt", ".csv", ".tsv", ".json", ".jsonl")


def _read_local_table(path: Path, key: str) -> list[Any]:
    """Read the ``key`` column of a local text/CSV/TSV/JSON/JSON-lines file (stdlib only)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if key != "text":
            raise ValueError(f"a .txt file has the single column 'text'; got key={key!r}")
        return list(_read_lines(path))
    with path.open(encoding="utf-8", newline="") as handle:
        if suffix in (".csv", ".tsv"):
            rows: list[Any] = list(
                csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            )
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in handle if line.strip()]
        else:
            data = json.load(handle)
            if isinstance(data, Mapping):  # columns: {"text": [...], ...}
                if key not in data:
                    raise ValueError(f"{os.fspath(path)}: no column {key!r}")
                return list(data[key])
            rows = list(data)  # rows: [{"text": ...}, ...]
    return _column(rows, key, os.fspath(path))


def _column(rows: Iterable[Any], key: str, what: str) -> list[Any]:
    values = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or key not in row:
            raise ValueError(f"{what}: row {i} has no column {key!r}")
        values.append(row[key])
    return values


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(_DATASETS_HINT) from err
    return datasets


class DatasetContextDistribution(_FiniteContexts):
    """Uniform over the values of one column of a dataset.

    Parameters
    ----------
    dataset
        A Hugging Face ``datasets`` dataset (or ``DatasetDict``, or any table indexable by
        column name), a local ``.txt``/``.csv``/``.tsv``/``.json``/``.jsonl`` file (read without
        extra dependencies), or a Hub name / other local dataset that ``datasets.load_dataset``
        loads (needs the optional extra ``disco-control[datasets]``, imported only then).
    subset
        The dataset configuration (``load_dataset``'s ``name``), if any.
    split
        The split to use.
    key
        The column holding the contexts.
    prefix
        A string put in front of every context.
    seed
        Seed of this distribution's own random generator (default: torch's global one).
    **load_kwargs
        Passed on to ``datasets.load_dataset``.
    """

    def __init__(
        self,
        dataset: Any,
        subset: str | None = None,
        split: str = "train",
        key: str = "text",
        prefix: str = "",
        *,
        seed: int | None = None,
        **load_kwargs: Any,
    ) -> None:
        what = f"dataset {dataset!r}" if isinstance(dataset, (str, os.PathLike)) else "dataset"
        if isinstance(dataset, (str, os.PathLike)):
            path = Path(dataset).expanduser()
            if path.is_file() and path.suffix.lower() in _LOCAL_FORMATS and not load_kwargs:
                values = _read_local_table(path, key)
            else:
                datasets = _import_datasets()
                table = datasets.load_dataset(
                    os.fspath(dataset), subset, split=split, **load_kwargs
                )
                values = list(table[key])
        else:
            values = self._values(dataset, split, key)
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string; got {type(prefix).__name__}")
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise ValueError(f"{what}: row {i} of column {key!r} is not a string: {value!r}")
        super().__init__([prefix + v for v in values], seed, what)

    @staticmethod
    def _values(dataset: Any, split: str, key: str) -> list[Any]:
        column_names = getattr(dataset, "column_names", None)
        if isinstance(column_names, Mapping) or (
            isinstance(dataset, Mapping) and key not in dataset and split in dataset
        ):
            if split not in dataset:
                raise ValueError(f"the dataset has no split {split!r}")
            dataset = dataset[split]
            column_names = getattr(dataset, "column_names", None)
        if isinstance(dataset, Mapping) or column_names is not None:
            names = list(column_names) if column_names is not None else list(dataset)
            if key not in names:
                raise ValueError(f"the dataset has no column {key!r} (columns: {names})")
            return list(dataset[key])
        return _column(dataset, key, "dataset")


def _support(context_distribution: Any) -> list[Any] | None:
    """The entries a context distribution lists (``contexts()`` or a ``contexts`` list), if any."""
    listing = getattr(context_distribution, "contexts", None)
    pool = listing() if callable(listing) else listing
    return None if pool is None else list(pool)


def draw_contexts(
    context_distribution: Any,
    n_contexts: int,
    *,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
    single_once: bool = False,
) -> list[Any]:
    """``n_contexts`` contexts from ``context_distribution``.

    With ``rng`` and a distribution that lists its entries (``contexts()``), ``rng`` picks them,
    without replacement unless there are fewer entries than ``n_contexts``: a seeded caller then
    reproduces its contexts whatever the distribution's own generator. Otherwise the distribution
    draws them (``sample(n_contexts)`` returning ``(contexts, log_probs)`` or just the contexts),
    keyed by a seed taken from ``rng`` when there is one.
    ``seed`` (instead of ``rng``) keys the whole draw: the picks come from a numpy generator
    seeded with it, and a distribution that only samples does so under
    :func:`~disco.distributed.keyed_random`, so one seed gives the same contexts whatever torch's
    global generator has done before.
    With ``single_once``, a distribution whose entries are all one context gives it once: for a
    caller that splits a fixed budget of samples over the contexts, n copies of one context would
    be n separately normalised groups, a noisier answer to the same one-context question.
    """
    if (
        isinstance(n_contexts, bool)
        or not isinstance(n_contexts, numbers.Integral)
        or n_contexts < 1
    ):
        raise ValueError(f"n_contexts must be at least 1, got {n_contexts!r}")
    n_contexts = int(n_contexts)
    if rng is not None and seed is not None:
        raise ValueError("draw_contexts takes rng or seed, not both")
    if seed is not None:
        rng = np.random.default_rng(seed)
    pool = _support(context_distribution)
    if pool is not None and not pool:
        raise ValueError("the context distribution lists no contexts")
    if pool is not None and single_once and all(c == pool[0] for c in pool):
        return [pool[0]]
    if pool is not None and rng is not None:
        picks = rng.choice(len(pool), size=n_contexts, replace=len(pool) < n_contexts)
        return [pool[int(i)] for i in picks]
    if seed is None and rng is not None:
        # a seeded caller's generator keys a distribution that only samples, too
        seed = int(rng.integers(2**62))
    keyed = contextlib.nullcontext() if seed is None else keyed_random(context_distribution, seed)
    with keyed:
        drawn = context_distribution.sample(n_contexts)  # by position, as the original did
    return list(drawn[0] if isinstance(drawn, tuple) else drawn)


def resolve_contexts(
    context: Any = "",
    contexts: Sequence[Any] | None = None,
    context_distribution: Any = None,
    n_contexts: int = 1,
    *,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
    single_once: bool = False,
) -> list[Any]:
    """The contexts to work on: drawn, else the list ``contexts``, else ``[context]``.

    The one rule every sampler, ``constrain`` and the tuners follow. Drawing is
    :func:`draw_contexts` (``rng``, ``seed`` and ``single_once`` are its). The result is never
    empty.

    >>> resolve_contexts("once"), resolve_contexts(contexts=["a", "b"])
    (['once'], ['a', 'b'])
    >>> resolve_contexts(context_distribution=SingleContextDistribution("x"), n_contexts=3)
    ['x', 'x', 'x']
    """
    if context_distribution is not None:
        chosen = draw_contexts(
            context_distribution, n_contexts, rng=rng, seed=seed, single_once=single_once
        )
    elif contexts is not None:
        if isinstance(contexts, str):
            raise ValueError("contexts must be a list of contexts, not a string")
        chosen = list(contexts)
    else:
        chosen = [context]
    if not chosen:
        raise ValueError("no contexts: give a context, a non-empty list or a context distribution")
    return chosen


def plan_over_contexts(
    purpose: str,
    seed: int | None,
    n_samples: int,
    sampling_size: int,
    *,
    context: Any = "",
    contexts: Sequence[Any] | None = None,
    context_distribution: Any = None,
    n_contexts: int = 1,
    single_once: bool = False,
    world: World | None = None,
) -> tuple[list[Any], list[Chunk]]:
    """The contexts of a seeded job and its chunks: ``n_samples`` split evenly over them.

    One key for the whole job: ``seed`` (or one drawn on rank 0), shared by every rank. The
    contexts are resolved as :func:`resolve_contexts` does, those drawn from
    ``context_distribution`` keyed by ``(key, purpose, "contexts")``, and every rank takes rank
    0's; the chunks are keyed by ``(key, purpose, position, chunk)``. So the same seed gives the
    same contexts and samples whatever the number of processes and whatever ran before.
    """
    world = world or current_world()
    key = shared_seed(seed, world)
    chosen = resolve_contexts(
        context,
        contexts,
        context_distribution,
        n_contexts,
        seed=chunk_seed(key, purpose, "contexts"),
        single_once=single_once,
    )
    chosen = world.broadcast(chosen)
    per_context = max(1, int(n_samples) // len(chosen))
    return chosen, plan_chunks(chosen, per_context, int(sampling_size), key, purpose)
