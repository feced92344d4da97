"""Hostile and careless ``disco run`` inputs: each ends in one line ``disco: error: ...``, exit 2.

The fixed cases are the ones found by hand; the generated probe mutates a valid configuration
(hypothesis) and checks every outcome is a normalised configuration or a one-line
:class:`~disco.cli.UserError`: never another exception, a hang, or a wrong value accepted.
"""

from __future__ import annotations

import collections
import copy
import math
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from disco import cli

SMALL = """
seed = 3
context = "And the LORD said"
[model]
length = 6
[[features]]
type = "word"
word = "the"
moment = 0.5
[fit]
n_samples = 32
[tuner]
n_steps = 2
samples_per_context = 8
[sampler]
beta = 1.0
n_samples = 2
estimation_samples = 16
[output]
eval_samples = 8
"""


def one_line_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], key: str | None = None
) -> str:
    """Exit status 2, no traceback, and the last line ``disco: error: ... (key): ...``."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("disco: error: "), err
    if key is not None:
        assert f"({key})" in last, last
    return last


def run_config(tmp_path: Path, text: str | bytes) -> list[str]:
    config = tmp_path / "run.toml"
    if isinstance(text, bytes):
        config.write_bytes(text)
    else:
        config.write_text(text)
    return ["run", str(config), "--out", str(tmp_path / "out")]


FEATURE_MODULES = {
    "wrong_arity": "def f(sample):\n    return 1.0\n",
    "raises": "def f(sample, context):\n    raise RuntimeError('boom')\n",
    "syntax": "def f(sample, context)\n    return 1.0\n",
    "not_a_number": "def f(sample, context):\n    return 'yes'\n",
}


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("wrong_arity", "must take two arguments"),
        ("syntax", "SyntaxError"),
    ],
)
def test_broken_function_features_are_refused_at_config_time(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    message: str,
) -> None:
    name = f"probe_{module}_{id(tmp_path)}"
    (tmp_path / f"{name}.py").write_text(FEATURE_MODULES[module])
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    text = SMALL.replace(
        'type = "word"\nword = "the"',
        f'type = "function"\npath = "{name}:f"\nkind = "real"',
    )
    argv = [*run_config(tmp_path, text), "--allow-imports"]
    assert message in one_line_error(capsys, argv, "features[0]")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "message"),
    [("raises", "raised RuntimeError: boom"), ("not_a_number", "not a number")],
)
def test_function_features_that_fail_while_scoring_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    message: str,
) -> None:
    name = f"probe_{module}_{id(tmp_path)}"
    (tmp_path / f"{name}.py").write_text(FEATURE_MODULES[module])
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    text = SMALL.replace(
        'type = "word"\nword = "the"', f'type = "function"\npath = "{name}:f"\nkind = "real"'
    )
    argv = [*run_config(tmp_path, text), "--allow-imports"]
    assert message in one_line_error(capsys, argv, "features")


LONG_CONTEXT = "And " * 5000  # 20,000 characters


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("length = 6", "length = 1e9"), "model.length"),
        (("length = 6", "length = 1000000000"), "model.length"),
        (("length = 6", "length = 128"), "model.length"),  # the embedded model has 128 positions
        (('context = "And the LORD said"', f'context = "{LONG_CONTEXT}"'), "context"),
        (("length = 6", "length = 6\ntemperature = 1e-300"), "model"),
        (("n_steps = 2", "n_steps = 2\nlearning_rate = 1e300"), "tuner.learning_rate"),
        (("n_steps = 2", "n_steps = 2\nweight_decay = -1"), "tuner.weight_decay"),
        (("n_steps = 2", "n_steps = 2\nweight_decay = nan"), "tuner.weight_decay"),
        (("n_steps = 2", 'n_steps = 2\noptimizer = "sgd"\nmomentum = -1'), "tuner.momentum"),
        (("n_steps = 2", "n_steps = 2\nseed = -1"), "tuner.seed"),
        (("n_steps = 2", "n_steps = 2\nmax_log_t = nan"), "tuner.max_log_t"),
        (
            ("samples_per_context = 8", "samples_per_context = 1000000000"),
            "tuner.samples_per_context",
        ),
        (("beta = 1.0", "beta = inf"), "sampler.beta"),
        (("beta = 1.0", "beta = 1e309"), "sampler.beta"),
        (("beta = 1.0", "beta = nan"), "sampler.beta"),
        (("n_samples = 32", "n_samples = 1000000000000"), "fit.n_samples"),
        (("estimation_samples = 16", "estimation_samples = 1000000000000"), "sampler"),
        (("eval_samples = 8", "eval_samples = 1000000000000"), "output.eval_samples"),
        (('word = "the"', 'word = "the"\ncase_sensitive = "no"'), "features[0]"),
        (('word = "the"', 'word = ["the"]'), "features[0]"),
        (("seed = 3", "seed = 100000000000000000000"), "seed"),
        (("seed = 3", "seed = 9223372036854775807"), None),  # the largest: fine
    ],
)
def test_values_that_cannot_work_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], key: str | None
) -> None:
    old, new = change
    assert old in SMALL
    argv = run_config(tmp_path, SMALL.replace(old, new, 1))
    if key is None:
        assert cli.load_config(argv[1])["seed"] == 2**63 - 1
        return
    last = one_line_error(capsys, argv)
    assert f"({key}" in last, last
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 autocast is valid on this machine")
def test_bf16_autocast_without_a_gpu_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = run_config(tmp_path, SMALL.replace("n_steps = 2", 'n_steps = 2\nautocast = "bf16"'))
    one_line_error(capsys, argv, "tuner.autocast")


@pytest.mark.parametrize(
    "content",
    [
        SMALL.encode("utf-16"),
        SMALL.encode() + b"\nx = '\xff\xfe'\n",
        b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
        b"x = 1\n" * 300_000,  # 1.8 MB: larger than any configuration
    ],
    ids=["utf-16", "non-utf-8", "deeply-nested", "huge"],
)
def test_unreadable_toml_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    one_line_error(capsys, run_config(tmp_path, content), "CONFIG")


def test_bad_context_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SMALL.replace('context = "And the LORD said"', 'context_file = "contexts.txt"')
    (tmp_path / "contexts.txt").write_bytes(b"In the beginning\n\xff\xfe caf\xe9\n")
    assert "not UTF-8" in one_line_error(capsys, run_config(tmp_path, text), "context_file")
    (tmp_path / "contexts.txt").write_text("In the beginning\n" + LONG_CONTEXT + "\n")
    assert "context 1 is" in one_line_error(capsys, run_config(tmp_path, text), "context_file")


# ----------------------------------------------------------------------------- the generated probe

VALID: dict[str, Any] = {
    "seed": 3,
    "context": "And the LORD said",
    "model": {"length": 6, "temperature": 1.0, "top_k": 0, "top_p": 1.0},
    "features": [
        {"type": "word", "word": "the", "case_sensitive": False, "moment": 0.5},
        {"type": "length", "min": 2, "max": 5, "moment": 0.5},
    ],
    "fit": {"n_samples": 32},
    "tuner": {
        "loss": "kl",
        "n_steps": 2,
        "samples_per_context": 8,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "optimizer": "adam",
        "baseline": True,
        "max_log_t": 30.0,
        "seed": 0,
        "autocast": "auto",
    },
    "sampler": {"beta": 1.0, "n_samples": 2, "estimation_samples": 16},
    "output": {"dir": "out", "eval_samples": 8},
}

# What each key must be: a wrong type there accepted is a wrong success.
BOOLEAN, INTEGER, REAL, TEXT = "boolean", "integer", "real", "text"
KINDS: dict[tuple[Any, ...], str] = {
    ("seed",): INTEGER,
    ("context",): TEXT,
    ("model", "length"): INTEGER,
    ("model", "temperature"): REAL,
    ("model", "top_k"): INTEGER,
    ("model", "top_p"): REAL,
    ("features", 0, "word"): TEXT,
    ("features", 0, "case_sensitive"): BOOLEAN,
    ("features", 0, "moment"): REAL,
    ("features", 1, "min"): INTEGER,
    ("features", 1, "max"): INTEGER,
    ("features", 1, "moment"): REAL,
    ("fit", "n_samples"): INTEGER,
    ("tuner", "n_steps"): INTEGER,
    ("tuner", "samples_per_context"): INTEGER,
    ("tuner", "learning_rate"): REAL,
    ("tuner", "weight_decay"): REAL,
    ("tuner", "momentum"): REAL,
    ("tuner", "baseline"): BOOLEAN,
    ("tuner", "max_log_t"): REAL,
    ("tuner", "seed"): INTEGER,
    ("sampler", "beta"): REAL,
    ("sampler", "n_samples"): INTEGER,
    ("sampler", "estimation_samples"): INTEGER,
    ("output", "eval_samples"): INTEGER,
}
# Where infinity means "no limit" rather than a mistake.
INFINITY_ALLOWED = {("tuner", "max_log_t")}

HOSTILE = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 10**12, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, 1e300, -0.0, 5e-324, float("nan"), float("inf"), 1e9, 0.5]),
    st.text(max_size=30),
    st.sampled_from(["no", "yes", "true", "1", "", "nan", "adam", "../..", "x" * 20_000]),
    st.lists(st.integers(), max_size=3),
    st.recursive(st.integers(), lambda inner: st.lists(inner, max_size=2), max_leaves=40),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


PATHS = sorted(_paths(VALID), key=repr)


@st.composite
def mutated_configs(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """A copy of :data:`VALID` with one to three keys set to hostile values, removed or added."""
    raw = copy.deepcopy(VALID)
    changed = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = raw
        try:
            for part in path[:-1]:
                parent = parent[part]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced this branch
        if not isinstance(parent, dict | list):
            continue
        action = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent, dict):
            parent[
                draw(st.sampled_from(["colour", "device", "tokenizer", "trust_remote_code"]))
            ] = draw(HOSTILE)
        else:
            try:
                parent[path[-1]] = draw(HOSTILE)
            except (IndexError, TypeError):
                continue
        changed.append(path)
    return raw, changed


def _wrong_kind(kind: str, value: Any, path: tuple[Any, ...]) -> bool:
    """Whether ``value`` cannot be a ``kind`` (so accepting it would be a wrong success)."""
    if kind == BOOLEAN:
        return not isinstance(value, bool)
    if kind == INTEGER:
        return isinstance(value, bool) or not isinstance(value, int)
    if kind == REAL:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return True
        return math.isnan(value) or (math.isinf(value) and path not in INFINITY_ALLOWED)
    return not isinstance(value, str)


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (as a hang) when the block runs longer than ``seconds``."""

    def hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


PROBE_COUNTS: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_probe_counts() -> Iterator[None]:
    """The probe's tally, shown with ``pytest -s`` (configurations tried, clear errors, ...)."""
    yield
    if PROBE_COUNTS:
        print(f"\nconfiguration probe: {dict(PROBE_COUNTS)}")


def probe(raw: dict[str, Any], changed: list[tuple[Any, ...]]) -> str:
    """Check one configuration; returns ``"ok"`` or ``"error"``, or fails the test."""
    try:
        with deadline(60):
            cfg = cli.check_config(copy.deepcopy(raw))
    except cli.UserError as err:
        message = str(err)
        assert "\n" not in message and message.strip(), repr(message)
        return "error"
    for path in changed:
        value: Any = raw
        try:
            for part in path:
                value = value[part]
        except (KeyError, IndexError, TypeError):
            continue  # removed: the default applies
        if path in KINDS and _wrong_kind(KINDS[path], value, path):
            pytest.fail(f"wrong success: {path} = {value!r:.80} accepted as {cfg!r:.200}")
    return "ok"


@given(mutated_configs())
def test_generated_configurations_end_in_a_normalised_config_or_one_line_error(
    case: tuple[dict[str, Any], list[tuple[Any, ...]]],
) -> None:
    raw, changed = case
    PROBE_COUNTS["tried"] += 1
    PROBE_COUNTS[probe(raw, changed)] += 1


def test_the_unmutated_probe_configuration_is_valid() -> None:
    assert probe(copy.deepcopy(VALID), list(KINDS)) == "ok"


@pytest.mark.slow
@pytest.mark.parametrize(
    "mutation",
    [
        {"model": {"length": 4, "top_k": 3}},
        {"tuner": {**VALID["tuner"], "optimizer": "sgd", "momentum": 0.5, "loss": "tv"}},
        {"features": [{"type": "not", "feature": {"type": "word", "word": "the"}, "moment": 0.5}]},
    ],
)
def test_generated_style_configurations_run_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutation: dict[str, Any]
) -> None:
    """A few real runs: what the probe accepts runs to a report (or a one-line error)."""
    raw = {**copy.deepcopy(VALID), **mutation, "output": {"dir": str(tmp_path / "out")}}
    cfg = cli.check_config(raw)
    with deadline(300):
        try:
            report = cli.run_pipeline(cfg, tmp_path / "out")
        except cli.UserError as err:
            assert "\n" not in str(err)
            return
    assert report["steps"] == cfg["tuner"]["n_steps"] and not report["interrupted"]
