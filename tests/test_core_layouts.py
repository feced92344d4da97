"""Every binding of ``disco._core`` against every array layout numpy can produce.

The table below lists each function and method of the extension with a builder of valid
arguments; a test fails when the module gains a callable the table does not cover, so new
kernels are covered automatically once they have a row. For each row, hypothesis draws the
sizes (empty ones included), the values, one array argument and a layout for it:

- layouts that keep the values (C, Fortran, strided and negative-stride views, read-only)
  must give exactly the result of the C-contiguous call (or the same error);
- layouts that change what the array is (0-d, an extra dimension, another dtype or byte
  order, a Python list) and shapes that disagree with the other arguments must raise
  ``ValueError``, never another exception and never a result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from disco import _core


@dataclass(frozen=True)
class Arg:
    """One array argument: its name in ``kwargs`` and whether its length must match others."""

    name: str
    aligned: bool = True


@dataclass(frozen=True)
class Row:
    """How to call one binding: build valid kwargs, call, list the array arguments."""

    build: Callable[[np.random.Generator, int, int, int], dict[str, Any]]
    call: Callable[[dict[str, Any]], Any]
    arrays: tuple[Arg, ...]


def log_scores(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(size=shape)


def index_of(kw: dict[str, Any]) -> Any:
    return _core.QrsIndex(kw["log_ratios"], kw.get("log_weights"))


def fit_problem(rng: np.random.Generator, n: int, c: int, k: int) -> dict[str, Any]:
    n = max(n, 2)
    features = rng.normal(size=(n, k))
    # Targets strictly inside each feature's range (and jointly attainable: the sample mean).
    return {
        "features": features,
        "target_moments": features.mean(axis=0),
        "log_weights": np.zeros(n),
        "groups": np.zeros(n, dtype=np.int64),
    }


def index_summary(index: Any) -> tuple[Any, ...]:
    return (index.n, index.log_z, index.max_log_ratio, index.min_log_ratio)


TABLE: dict[str, Row] = {
    "logsumexp": Row(
        lambda r, n, c, k: {"x": log_scores(r, n)},
        lambda kw: _core.logsumexp(**kw),
        (Arg("x", aligned=False),),
    ),
    "logmeanexp": Row(
        lambda r, n, c, k: {"x": log_scores(r, n)},
        lambda kw: _core.logmeanexp(**kw),
        (Arg("x", aligned=False),),
    ),
    "normalized_weights": Row(
        lambda r, n, c, k: {"log_weights": log_scores(r, n)},
        lambda kw: _core.normalized_weights(**kw),
        (Arg("log_weights", aligned=False),),
    ),
    "effective_sample_size": Row(
        lambda r, n, c, k: {"log_weights": log_scores(r, n)},
        lambda kw: _core.effective_sample_size(**kw),
        (Arg("log_weights", aligned=False),),
    ),
    "weighted_moments": Row(
        lambda r, n, c, k: {"log_weights": log_scores(r, n), "features": r.normal(size=(n, k))},
        lambda kw: _core.weighted_moments(**kw),
        (Arg("log_weights"), Arg("features")),
    ),
    "estimate_log_z": Row(
        lambda r, n, c, k: {
            "target_log_scores": log_scores(r, n),
            "proposal_log_probs": log_scores(r, n),
        },
        lambda kw: _core.estimate_log_z(**kw),
        (Arg("target_log_scores"), Arg("proposal_log_probs")),
    ),
    "divergence": Row(
        lambda r, n, c, k: {
            "target_log_scores": log_scores(r, n),
            "model_log_probs": log_scores(r, n),
            "proposal_log_probs": log_scores(r, n),
        },
        lambda kw: _core.divergence("js", **kw),
        (Arg("target_log_scores"), Arg("model_log_probs"), Arg("proposal_log_probs")),
    ),
    "divergence_grouped": Row(
        lambda r, n, c, k: {
            "target_log_scores": log_scores(r, c, n),
            "model_log_probs": log_scores(r, c, n),
            "proposal_log_probs": log_scores(r, c, n),
            "log_z": r.normal(size=c),
        },
        lambda kw: _core.divergence_grouped("kl", **kw),
        (
            Arg("target_log_scores"),
            Arg("model_log_probs"),
            Arg("proposal_log_probs"),
            Arg("log_z"),
        ),
    ),
    "qrs_accept": Row(
        lambda r, n, c, k: {"log_ratios": log_scores(r, n), "uniforms": r.random(n)},
        lambda kw: _core.qrs_accept(kw["log_ratios"], kw["uniforms"], 0.3),
        (Arg("log_ratios"), Arg("uniforms")),
    ),
    "imh_chain": Row(
        lambda r, n, c, k: {"log_ratios": log_scores(r, n), "uniforms": r.random(n)},
        lambda kw: _core.imh_chain(kw["log_ratios"], kw["uniforms"], -math.inf),
        (Arg("log_ratios"), Arg("uniforms")),
    ),
    "f_pseudo_rewards": Row(
        lambda r, n, c, k: {
            "policy_log_probs": log_scores(r, n),
            "target_log_scores": log_scores(r, n),
            "proposal_log_probs": log_scores(r, n),
        },
        lambda kw: _core.f_pseudo_rewards("reverse_kl", **kw, log_z=0.0, max_log_t=30.0),
        (Arg("policy_log_probs"), Arg("target_log_scores"), Arg("proposal_log_probs")),
    ),
    "f_divergence": Row(
        lambda r, n, c, k: {
            "policy_log_probs": log_scores(r, n),
            "target_log_scores": log_scores(r, n),
            "proposal_log_probs": log_scores(r, n),
        },
        lambda kw: _core.f_divergence("tv", **kw, log_z=0.0),
        (Arg("policy_log_probs"), Arg("target_log_scores"), Arg("proposal_log_probs")),
    ),
    "tuner_metrics": Row(
        lambda r, n, c, k: {
            "target_log_scores": log_scores(r, n),
            "policy_log_probs": log_scores(r, n),
            "proposal_log_probs": log_scores(r, n),
            "features": r.normal(size=(n, k)),
            "base_log_probs": log_scores(r, n),
        },
        lambda kw: _core.tuner_metrics("js", **kw, log_z=0.0),
        (
            Arg("target_log_scores"),
            Arg("policy_log_probs"),
            Arg("proposal_log_probs"),
            Arg("features"),
            Arg("base_log_probs"),
        ),
    ),
    "divergence_stderr": Row(
        lambda r, n, c, k: {
            "target_log_scores": log_scores(r, n),
            "model_log_probs": log_scores(r, n),
            "proposal_log_probs": log_scores(r, n),
        },
        lambda kw: _core.divergence_stderr("js", **kw),
        (Arg("target_log_scores"), Arg("model_log_probs"), Arg("proposal_log_probs")),
    ),
    "weighted_moments_stderr": Row(
        lambda r, n, c, k: {"log_weights": log_scores(r, n), "features": r.normal(size=(n, k))},
        lambda kw: _core.weighted_moments_stderr(**kw),
        (Arg("log_weights"), Arg("features")),
    ),
    "effective_sample_size_stderr": Row(
        lambda r, n, c, k: {"log_weights": log_scores(r, n)},
        lambda kw: _core.effective_sample_size_stderr(**kw),
        (Arg("log_weights", aligned=False),),
    ),
    "qrs_point_stderr": Row(
        lambda r, n, c, k: {"log_ratios": log_scores(r, n), "features": r.normal(size=(n, k))},
        lambda kw: _core.qrs_point_stderr(kw["log_ratios"], 0.3, kw["features"]),
        (Arg("log_ratios"), Arg("features")),
    ),
    "fit_coefficients": Row(
        fit_problem,
        lambda kw: _core.fit_coefficients(**kw),
        (Arg("features"), Arg("target_moments"), Arg("log_weights"), Arg("groups")),
    ),
    "QrsIndex": Row(
        lambda r, n, c, k: {"log_ratios": log_scores(r, n), "log_weights": log_scores(r, n)},
        lambda kw: index_summary(index_of(kw)),
        (Arg("log_ratios"), Arg("log_weights")),
    ),
    "QrsIndex.curve": Row(
        lambda r, n, c, k: {"log_ratios": log_scores(r, n + 1), "log_betas": log_scores(r, c)},
        lambda kw: index_of(kw).curve(kw["log_betas"], True),
        (Arg("log_betas", aligned=False),),
    ),
    "QrsIndex.feature_moments": Row(
        lambda r, n, c, k: {
            "log_ratios": log_scores(r, n + 1),
            "features": r.normal(size=(n + 1, k)),
            "log_betas": log_scores(r, c),
        },
        lambda kw: index_of(kw).feature_moments(kw["features"], kw["log_betas"]),
        (Arg("features"), Arg("log_betas", aligned=False), Arg("log_ratios")),
    ),
    "QrsIndex.log_beta_for_acceptance_rate": Row(
        lambda r, n, c, k: {
            "log_ratios": log_scores(r, n + 1),
            "rates": r.uniform(0.05, 1.0, c),
        },
        lambda kw: index_of(kw).log_beta_for_acceptance_rate(kw["rates"]),
        (Arg("rates", aligned=False),),
    ),
}

# Callables whose arguments are not numeric arrays: tested on their own below.
NOT_ARRAYS = {"TextPattern", "TextPattern.search"}


def core_callables() -> set[str]:
    """Every public function, class and method (not property) of the extension module."""
    names = set()
    for name in dir(_core):
        obj = getattr(_core, name)
        if name.startswith("_") or not callable(obj):
            continue
        if isinstance(obj, type) and issubclass(obj, BaseException):
            continue
        names.add(name)
        if isinstance(obj, type):
            names |= {f"{name}.{m}" for m, v in vars(obj).items() if callable(v) and m[0] != "_"}
    return names


def test_the_table_covers_every_binding():
    missing = core_callables() - set(TABLE) - NOT_ARRAYS
    assert not missing, f"add a row to TABLE for {sorted(missing)}"
    assert "QrsIndex.curve" in core_callables()  # methods are seen


# --- layouts ---------------------------------------------------------------------------------


def _all(ndim: int, step: int) -> tuple[slice, ...]:
    return (slice(None, None, step),) * ndim


def strided(a: np.ndarray) -> np.ndarray:
    if a.ndim == 0:
        return a
    big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def negative(a: np.ndarray) -> np.ndarray:
    return a[_all(a.ndim, -1)].copy()[_all(a.ndim, -1)]


def read_only(a: np.ndarray) -> np.ndarray:
    b = a.copy()
    b.flags.writeable = False
    return b


def strided_fortran(a: np.ndarray) -> np.ndarray:
    return np.asfortranarray(strided(a)) if a.ndim else a


SAME_VALUES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "C": np.ascontiguousarray,
    "F": np.asfortranarray,
    "strided": strided,
    "negative": negative,
    "read-only": read_only,
    "strided F": strided_fortran,
}


def other_dtype(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32 if a.dtype == np.float64 else np.float64)


def other_integer(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int32)


WRONG: dict[str, Callable[[np.ndarray], Any]] = {
    "0-d": lambda a: np.asarray(a.flat[0] if a.size else a.dtype.type(0)),
    "extra dimension": lambda a: a[..., None],
    "other dtype": other_dtype,
    "int32": other_integer,
    "byte-swapped": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "list": lambda a: a.tolist(),
    "None-like str": lambda a: "1.0",
}


def outcome(row: Row, kw: dict[str, Any]) -> tuple[Any, ...]:
    try:
        return ("ok", row.call(kw))
    except ValueError as err:
        return ("ValueError", str(err))
    except _core.ConvergenceError as err:
        return ("ConvergenceError", str(err))


def same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray | float | int | np.floating):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    return a == b


sizes = st.tuples(st.integers(0, 7), st.integers(1, 3), st.integers(1, 3))


@pytest.mark.parametrize("name", sorted(TABLE))
@given(
    seed=st.integers(0, 2**32 - 1),
    size=sizes,
    which=st.integers(0, 3),
    layout=st.sampled_from(sorted(SAME_VALUES)),
)
def test_layouts_that_keep_the_values_give_the_same_answer(name, seed, size, which, layout):
    row = TABLE[name]
    kw = row.build(np.random.default_rng(seed), *size)
    arg = row.arrays[which % len(row.arrays)].name
    want = outcome(row, kw)
    got = outcome(row, {**kw, arg: SAME_VALUES[layout](kw[arg])})
    assert got[0] == want[0] and same(got[1], want[1]), (arg, layout, want, got)


@pytest.mark.parametrize("name", sorted(TABLE))
@given(
    seed=st.integers(0, 2**32 - 1),
    size=sizes,
    which=st.integers(0, 3),
    layout=st.sampled_from(sorted(WRONG)),
)
def test_wrong_arrays_raise_value_error(name, seed, size, which, layout):
    row = TABLE[name]
    kw = row.build(np.random.default_rng(seed), *size)
    arg = row.arrays[which % len(row.arrays)].name
    with pytest.raises(ValueError, match=arg):
        row.call({**kw, arg: WRONG[layout](kw[arg])})


@pytest.mark.parametrize("name", sorted(TABLE))
@given(seed=st.integers(0, 2**32 - 1), size=sizes, which=st.integers(0, 3))
def test_mismatched_lengths_raise_value_error(name, seed, size, which):
    row = TABLE[name]
    aligned = [a.name for a in row.arrays if a.aligned]
    if len(aligned) < 2:
        return
    kw = row.build(np.random.default_rng(seed), *size)
    arg = aligned[which % len(aligned)]
    if kw[arg].shape[0] == 0:
        return
    with pytest.raises(ValueError):
        row.call({**kw, arg: kw[arg][:-1]})


def test_text_pattern_refuses_what_is_not_a_list_of_str():
    pattern = _core.TextPattern("a+")
    assert pattern.search(["baa", "b", ""]).tolist() == [True, False, False]
    assert pattern.search([]).tolist() == []
    for bad, where in (("aaa", "texts"), (["a", 3], "texts\\[1\\]"), (5, "texts")):
        with pytest.raises(ValueError, match=where):
            pattern.search(bad)
    for bad_pattern in (r"(a)\1", r"(?=a)", r"(?<!a)b", "(", "a{99999999}"):
        with pytest.raises(ValueError, match="invalid regular expression"):
            _core.TextPattern(bad_pattern)
    with pytest.raises(ValueError, match="flag"):
        _core.TextPattern("a", "q")
