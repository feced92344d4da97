"""Context distributions: single, list/file, and dataset column."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import require_extra
from disco.distributions import (
    ContextDistribution,
    DatasetContextDistribution,
    SingleContextDistribution,
)
from disco.distributions.contexts import draw_contexts, resolve_contexts


def test_single_context():
    dist = SingleContextDistribution("Once upon a time")
    contexts, log_probs = dist.sample(5)
    assert contexts == ["Once upon a time"] * 5
    assert log_probs.dtype == torch.float64 and torch.equal(
        log_probs, torch.zeros(5, dtype=torch.float64)
    )
    assert dist.contexts() == ["Once upon a time"] and len(dist) == 1
    assert dist.log_score(["Once upon a time", "other"]).tolist() == [0.0, -math.inf]
    assert SingleContextDistribution().sample(1)[0] == [""]


def test_list_contexts_are_uniform_over_entries():
    dist = ContextDistribution(["a", "b", "a", "c"], seed=0)
    assert len(dist) == 4 and dist.contexts() == ["a", "b", "a", "c"]
    expected = {"a": math.log(0.5), "b": math.log(0.25), "c": math.log(0.25)}
    contexts, log_probs = dist.sample(4000)
    assert len(contexts) == 4000 and log_probs.shape == (4000,)
    for context, lp in zip(contexts, log_probs.tolist(), strict=True):
        assert lp == pytest.approx(expected[context], abs=1e-15)
    counts = Counter(contexts)
    assert abs(counts["a"] / 4000 - 0.5) < 0.04  # 5 standard deviations
    assert abs(counts["c"] / 4000 - 0.25) < 0.035
    assert torch.isneginf(dist.log_score(["d"])).all()


def test_seed_makes_sampling_reproducible():
    first = ContextDistribution([str(i) for i in range(50)], seed=3).sample(20)[0]
    again = ContextDistribution([str(i) for i in range(50)], seed=3).sample(20)[0]
    other = ContextDistribution([str(i) for i in range(50)], seed=4).sample(20)[0]
    assert first == again and first != other
    torch.manual_seed(0)
    global_rng = ContextDistribution([str(i) for i in range(50)]).sample(20)[0]
    torch.manual_seed(0)
    assert ContextDistribution([str(i) for i in range(50)]).sample(20)[0] == global_rng


def test_text_file_one_context_a_line(tmp_path):
    path = tmp_path / "contexts.txt"
    path.write_bytes(b"first line\r\n  second, with spaces  \n\nlast\n")
    dist = ContextDistribution(path)
    assert dist.contexts() == ["first line", "  second, with spaces  ", "", "last"]
    assert ContextDistribution(path=str(path)).contexts() == dist.contexts()
    contexts, log_probs = dist.sample(10)
    assert set(contexts) <= set(dist.contexts())
    assert torch.allclose(log_probs, torch.full((10,), -math.log(4), dtype=torch.float64))
    no_final_newline = tmp_path / "b.txt"
    no_final_newline.write_text("x\ny", encoding="utf-8")
    assert ContextDistribution(no_final_newline).contexts() == ["x", "y"]


def test_context_distribution_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no contexts"):
        ContextDistribution(empty)
    with pytest.raises(ValueError, match="no contexts"):
        ContextDistribution([])
    with pytest.raises(FileNotFoundError, match="no context file"):
        ContextDistribution(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="either contexts"):
        ContextDistribution()
    with pytest.raises(ValueError, match="either contexts"):
        ContextDistribution(["a"], path=empty)
    with pytest.raises(ValueError, match="entry 1 is a list, which is not hashable"):
        ContextDistribution(["a", [3]])
    dist = ContextDistribution(["a"])
    for size in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="sampling_size"):
            dist.sample(size)
    with pytest.raises(ValueError, match="not a string"):
        dist.log_score("a")
    with pytest.raises(ValueError, match="entry 0 is a dict, which is not hashable"):
        SingleContextDistribution({})


class FakeDataset:
    """What the code needs from a `datasets.Dataset`: column_names and column access."""

    def __init__(self, columns):
        self._columns = columns
        self.column_names = list(columns)

    def __getitem__(self, key):
        return self._columns[key]


class FakeDatasetDict(dict):
    @property
    def column_names(self):
        return {split: ds.column_names for split, ds in self.items()}


def test_dataset_objects_and_tables():
    columns = {"text": ["x", "y", "x"], "label": [0, 1, 0]}
    for dataset in (
        columns,
        FakeDataset(columns),
        FakeDatasetDict(train=FakeDataset(columns)),
        {"train": columns, "test": {"text": ["z"]}},
        [{"text": t, "label": 0} for t in columns["text"]],
    ):
        dist = DatasetContextDistribution(dataset, prefix="Q: ")
        assert dist.contexts() == ["Q: x", "Q: y", "Q: x"]
        assert dist.log_score(["Q: x", "x"]).tolist() == [math.log(2 / 3), -math.inf]
    test_split = DatasetContextDistribution(
        {"train": columns, "test": {"text": ["z"]}}, split="test"
    )
    assert test_split.contexts() == ["z"]
    with pytest.raises(ValueError, match="no column 'prompt'"):
        DatasetContextDistribution(FakeDataset(columns), key="prompt")
    with pytest.raises(ValueError, match="no split 'validation'"):
        DatasetContextDistribution(FakeDatasetDict(train=FakeDataset(columns)), split="validation")
    with pytest.raises(ValueError, match="row 0 of column 'label' is not a string"):
        DatasetContextDistribution(columns, key="label")
    with pytest.raises(ValueError, match="row 0 has no column 'text'"):
        DatasetContextDistribution([{"prompt": "p"}])


def test_local_files_need_no_extra(tmp_path):
    rows = [{"prompt": "alpha, one", "id": 1}, {"prompt": "beta", "id": 2}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", "utf-8")
    (tmp_path / "d.json").write_text(json.dumps(rows), "utf-8")
    (tmp_path / "cols.json").write_text(json.dumps({"prompt": ["alpha, one", "beta"]}), "utf-8")
    (tmp_path / "d.csv").write_text('prompt,id\n"alpha, one",1\nbeta,2\n', "utf-8")
    (tmp_path / "d.tsv").write_text("prompt\tid\nalpha, one\t1\nbeta\t2\n", "utf-8")
    for name in ("d.jsonl", "d.json", "cols.json", "d.csv", "d.tsv"):
        dist = DatasetContextDistribution(tmp_path / name, key="prompt")
        assert dist.contexts() == ["alpha, one", "beta"], name
    (tmp_path / "d.txt").write_text("alpha\nbeta\n", "utf-8")
    assert DatasetContextDistribution(str(tmp_path / "d.txt")).contexts() == ["alpha", "beta"]
    with pytest.raises(ValueError, match="no column 'text'"):
        DatasetContextDistribution(tmp_path / "cols.json")


def test_hub_datasets_need_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(ImportError, match=r"disco-control\[datasets\]"):
        DatasetContextDistribution("someone/some-dataset")


def test_real_datasets_object():
    datasets = require_extra("datasets")
    table = datasets.Dataset.from_dict({"text": ["u", "v"]})
    assert DatasetContextDistribution(table).contexts() == ["u", "v"]
    both = datasets.DatasetDict(train=table, test=datasets.Dataset.from_dict({"text": ["w"]}))
    assert DatasetContextDistribution(both, split="test").contexts() == ["w"]


# ---------------------------------------------------------------- resolving contexts


class _Drawn:
    """A context distribution that only draws (lists nothing), counting its calls."""

    def __init__(self, returns_pair=True):
        self.calls = 0
        self.returns_pair = returns_pair

    def sample(self, n):
        self.calls += 1
        drawn = [f"c{self.calls}-{i}" for i in range(n)]
        return (drawn, torch.zeros(n)) if self.returns_pair else drawn


def test_resolve_contexts_prefers_distribution_then_list_then_context():
    assert resolve_contexts("only") == ["only"]
    assert resolve_contexts("ignored", ["a", "b"]) == ["a", "b"]
    assert resolve_contexts("x", ["y"], _Drawn(), 2) == ["c1-0", "c1-1"]
    assert resolve_contexts(context_distribution=_Drawn(False), n_contexts=1) == ["c1-0"]


def test_resolve_contexts_refuses_bad_input():
    with pytest.raises(ValueError, match="no contexts: give a context"):
        resolve_contexts(contexts=[])
    with pytest.raises(ValueError, match="not a string"):
        resolve_contexts(contexts="abc")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_contexts must be at least 1"):
            resolve_contexts(context_distribution=_Drawn(), n_contexts=bad)
    with pytest.raises(ValueError, match="lists no contexts"):
        draw_contexts(type("Empty", (), {"contexts": lambda self: []})(), 2)


def test_a_seeded_rng_picks_from_the_listing_without_replacement():
    pool = ContextDistribution(["a", "b", "c", "d", "e"], seed=0)
    picks = resolve_contexts(context_distribution=pool, n_contexts=5, rng=np.random.default_rng(3))
    assert sorted(picks) == ["a", "b", "c", "d", "e"]  # every entry once
    again = resolve_contexts(context_distribution=pool, n_contexts=5, rng=np.random.default_rng(3))
    assert again == picks
    expected = np.random.default_rng(3).choice(5, size=5, replace=False)
    assert picks == [["a", "b", "c", "d", "e"][i] for i in expected]
    # more picks than entries: with replacement
    many = resolve_contexts(context_distribution=pool, n_contexts=12, rng=np.random.default_rng(0))
    assert len(many) == 12 and set(many) <= set("abcde")


def test_without_rng_the_distribution_draws():
    torch.manual_seed(0)
    pool = ContextDistribution(["a", "b"], seed=7)
    expected = ContextDistribution(["a", "b"], seed=7).sample(6)[0]
    assert resolve_contexts(context_distribution=pool, n_contexts=6) == expected


def test_single_once_gives_a_one_context_distribution_once():
    single = SingleContextDistribution("x")
    assert resolve_contexts(context_distribution=single, n_contexts=4) == ["x"] * 4
    assert resolve_contexts(context_distribution=single, n_contexts=4, single_once=True) == ["x"]
    repeated = ContextDistribution(["y", "y", "y"])
    assert resolve_contexts(context_distribution=repeated, n_contexts=3, single_once=True) == ["y"]
    several = ContextDistribution(["y", "z"], seed=1)
    assert len(resolve_contexts(context_distribution=several, n_contexts=3, single_once=True)) == 3


def test_the_examples_in_the_docstrings_hold():
    import doctest

    import disco.distributions.contexts

    result = doctest.testmod(disco.distributions.contexts)
    assert result.attempted > 0 and result.failed == 0
