"""The code the README and the documentation pages show runs as written, read from where it is.

Each example is found by page and heading (tests/markdown_pages.py), so text that moves takes
its test along or fails it; the README's quick start runs alone, as a newcomer would paste it,
and the pages' examples run in reading order in one namespace, as the pages build on each other.
"""

import re

import pytest

from markdown_pages import ROOT, fenced_blocks, own_text

README_LINES = 250

# (page, heading) in the order a reader meets them; each holds at least one python block.
DOCS_EXAMPLES = [
    ("docs/express.md", "Express a target"),
    ("docs/express.md", "Check it exactly"),
    ("docs/approximate.md", "Approximate it by tuning a model"),
    ("docs/approximate.md", "RLHF is a special case"),
    ("docs/sample.md", "Sample from the target"),
    ("docs/express.md", "Language models"),
    ("docs/sample.md", "The numerical core"),
]


def _run(blocks, names):
    namespace: dict = {}
    for block, name in zip(blocks, names, strict=True):
        try:
            exec(compile(block, name, "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message says which block failed
            raise AssertionError(f"{name} failed: {err!r}\n{block}") from err


@pytest.mark.slow
def test_readme_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = fenced_blocks("README.md", "Quick start", "python")
    assert len(blocks) == 1, "the quick start is one block, pasted as a whole"
    monkeypatch.chdir(tmp_path)
    _run(blocks, ["README.md, Quick start"])
    out = capsys.readouterr().out
    for line in (
        "base rate",
        "target rate",
        "tuned rate",
        "KL(p || policy)",
        "estimated:",
        "QRS rate",
    ):
        assert line in out, line
    assert " ± " in out, "the estimates print with their standard errors"


@pytest.mark.slow
def test_docs_examples_run_in_reading_order(tmp_path, monkeypatch, capsys):
    blocks, names = [], []
    for page, heading in DOCS_EXAMPLES:
        found = fenced_blocks(page, heading, "python")
        blocks += found
        names += [f"{page}, {heading!r}, block {i}" for i in range(len(found))]
    monkeypatch.chdir(tmp_path)
    _run(blocks, names)
    out = capsys.readouterr().out
    assert "target rate" in out and "tuned rate" in out and "QRS rate" in out


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_LINES
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "the README links to the documentation"
    for link in local:
        path, _, anchor = link.partition("#")
        assert (ROOT / path).is_file(), link
        if anchor:
            headings = re.findall(r"^#+ (.*)$", (ROOT / path).read_text(), flags=re.M)
            slugs = {
                re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", h).strip().lower()) for h in headings
            }
            assert anchor in slugs, link


def test_own_text_ends_at_the_next_heading_and_skips_code():
    text = "# T\nintro\n## A\na1\n```bash\n# not a heading\n```\n### A.1\nsub\n## B\nb\n"
    assert own_text(text, "T") == "intro\n"
    assert own_text(text, "A") == "a1\n```bash\n# not a heading\n```\n"
    assert own_text(text, "A.1") == "sub\n"
    assert own_text(text, "B") == "b\n"
    with pytest.raises(ValueError, match=r"page\.md has no heading 'C'"):
        own_text(text, "C", where="page.md")
    with pytest.raises(ValueError, match="has 2 heading 'A'"):
        own_text(text + "## A\n", "A")
