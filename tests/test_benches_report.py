"""benches/run.py rewrites only its own blocks of BENCHMARKS.md: hand-written notes survive.

No benchmark is timed here: a stand-in ``bench_*`` module returns a fixed section, and the
machine description is stubbed, so each case takes milliseconds.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"
if not (BENCHES / "run.py").exists():  # the sdist ships tests/ but not the benchmarks
    pytest.skip("benches/ is not in this tree", allow_module_level=True)

HAND_TOP = "Notes written by hand, above every block.\n"
HAND_MIDDLE = "## A/B by hand\n\n| kernel | before | after |\n| :-- | --: | --: |\n| kl | 1 | 2 |\n"
HAND_END = "### Diagnosis\n\nCommands: `python benches/diagnosis/x.py`.\n"


@pytest.fixture(autouse=True)
def _forget_bench_modules():
    """The bench modules are top-level names (``run``, ``_harness``): drop them afterwards."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if (
            getattr(sys.modules[name], "__file__", "")
            and Path(sys.modules[name].__file__).parent == BENCHES
        ):
            del sys.modules[name]


@pytest.fixture
def run_module(monkeypatch):
    """``benches/run.py`` imported with two stand-in benchmarks, ``alpha`` and ``beta``."""
    monkeypatch.syspath_prepend(str(BENCHES))
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        monkeypatch.delenv(name, raising=False)
    run = importlib.import_module("run")
    harness = importlib.import_module("_harness")
    calls: list[str] = []
    for name in ("alpha", "beta"):
        module = types.ModuleType(f"bench_{name}")

        def bench(ctx, name=name):
            calls.append(name)
            return f"## {name}\n\nfresh {name} numbers"

        module.run = bench  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, f"bench_{name}", module)
    monkeypatch.setattr(run, "discover", lambda: ["alpha", "beta"])
    monkeypatch.setattr(harness, "machine_info", lambda before: [("CPU", "stub")])
    run.calls = calls
    return run


def existing_file(report) -> str:
    """A BENCHMARKS.md with hand-written text before, between and after two old blocks."""
    return (
        "# Benchmarks\n\n"
        + HAND_TOP
        + "\n"
        + report.block("run", "old header")
        + "\n\n"
        + report.block("alpha", "## alpha\n\nold alpha numbers")
        + "\n\n"
        + HAND_MIDDLE
        + "\n"
        + report.block("beta", "## beta\n\nold beta numbers")
        + "\n\n"
        + HAND_END
    )


def outside_blocks(report, text: str) -> str:
    """``text`` with every generated block cut down to its markers."""
    return report._BLOCK.sub(lambda m: f"[{m.group(1)}]", text)


def test_only_rewrites_its_own_block_and_keeps_hand_written_text(run_module, tmp_path):
    report = importlib.import_module("_report")
    path = tmp_path / "BENCHMARKS.md"
    before = existing_file(report)
    path.write_text(before)

    assert run_module.main(["--only", "alpha", "--output", str(path)]) == 0

    after = path.read_text()
    assert run_module.calls == ["alpha"]
    assert outside_blocks(report, after) == outside_blocks(report, before)
    old, new = report.blocks(before), report.blocks(after)
    assert new["beta"] == old["beta"]
    assert new["alpha"].startswith("## alpha\n\nfresh alpha numbers\n\n_Measured ")
    assert "--only alpha" in new["alpha"]
    assert new["run"] != old["run"] and "| CPU | stub |" in new["run"]
    # Nothing hand-written was duplicated or moved either.
    for text in (HAND_TOP, HAND_MIDDLE, HAND_END):
        assert after.count(text) == 1


def test_full_run_keeps_hand_written_text_and_order(run_module, tmp_path):
    report = importlib.import_module("_report")
    path = tmp_path / "BENCHMARKS.md"
    before = existing_file(report)
    path.write_text(before)

    assert run_module.main(["--output", str(path)]) == 0

    after = path.read_text()
    assert run_module.calls == ["alpha", "beta"]
    assert outside_blocks(report, after) == outside_blocks(report, before)
    new = report.blocks(after)
    assert "fresh alpha numbers" in new["alpha"] and "fresh beta numbers" in new["beta"]
    # Regenerating twice changes only the blocks again.
    assert run_module.main(["--output", str(path)]) == 0
    assert outside_blocks(report, path.read_text()) == outside_blocks(report, before)


def test_new_block_is_appended_and_new_file_is_created(run_module, tmp_path):
    report = importlib.import_module("_report")
    path = tmp_path / "BENCHMARKS.md"
    without_beta = existing_file(report).replace(
        report.block("beta", "## beta\n\nold beta numbers") + "\n\n", ""
    )
    path.write_text(without_beta)
    assert run_module.main(["--only", "beta", "--output", str(path)]) == 0
    after = path.read_text()
    assert after.startswith(outside_blocks(report, without_beta).rstrip("\n").split("[run]")[0])
    assert after.rstrip("\n").endswith(report.END.format(name="beta"))
    assert HAND_END in after and "fresh beta numbers" in report.blocks(after)["beta"]

    fresh = tmp_path / "new.md"
    assert run_module.main(["--output", str(fresh)]) == 0
    text = fresh.read_text()
    assert text.startswith("# Benchmarks\n\n<!-- bench:run -->")
    assert list(report.blocks(text)) == ["run", "alpha", "beta"]


def test_header_block_goes_under_the_title_when_missing(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHES))
    report = importlib.import_module("_report")
    text = "# Benchmarks\n\nhand text\n"
    out = report.update(text, {"run": "machine"}, ["run"], "# Benchmarks")
    assert out == "# Benchmarks\n\n<!-- bench:run -->\nmachine\n<!-- /bench:run -->\n\nhand text\n"


@pytest.mark.parametrize(
    "broken",
    [
        "<!-- bench:alpha -->\nno end marker\n\nhand text\n",
        "<!-- bench:alpha -->\na\n<!-- /bench:alpha -->\n<!-- bench:alpha -->\nb\n"
        "<!-- /bench:alpha -->\n",
    ],
)
def test_broken_markers_refuse_to_write(run_module, tmp_path, broken):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(broken)
    with pytest.raises(ValueError, match="alpha"):
        run_module.main(["--only", "alpha", "--output", str(path)])
    assert path.read_text() == broken
