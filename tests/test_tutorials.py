"""The tutorials (docs/tutorials/*.md) run when the site is built, and a broken one fails that build.

markdown-exec executes their ```python exec="on" blocks during `mkdocs build`; on its own it
reports a block that raises as a warning, which a build run with `--quiet` never counts.
docs/tutorials/hooks.py turns those reports into errors. The build test below makes a site of
one tutorial's opening (tests/docs_site.py: with mkdocs.yml's own hooks, plugins and Markdown
extensions), builds it as .ci/run does, and checks that it passes as written and fails once an
error is injected into its executed code.
"""

import re

import pytest

from docs_site import ROOT, build, docs_tools, one_page_site

TUTORIALS = ROOT / "docs" / "tutorials"
PAGES = ["quick-tour.md", "preferences.md", "tuning.md", "conditional.md", "sampling.md"]
EXECUTED = re.compile(r'^```python exec="on"[^\n]*\n(.*?)^```\n', flags=re.S | re.M)
INJECTED = "an error injected into the tutorial"


def test_every_tutorial_is_in_the_nav_executed_and_ends_with_what_to_try_next():
    yaml = docs_tools()
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (section,) = [entry["Tutorials"] for entry in config["nav"] if "Tutorials" in entry]
    assert [next(iter(page.values())) for page in section] == [f"tutorials/{p}" for p in PAGES]
    assert sorted(p.name for p in TUTORIALS.glob("*.md")) == sorted(PAGES)
    for name in PAGES:
        text = (TUTORIALS / name).read_text()
        assert "assert " in "".join(EXECUTED.findall(text)), f"{name} checks nothing"
        last = text.split("\n## ")[-1]
        assert last.startswith("What to try next"), name
        # The Hub example is shown, not run: a plain block, never an executed one.
        assert "```python\n" in last and 'exec="on"' not in last, name


@pytest.mark.slow
def test_a_tutorial_that_raises_fails_the_build(tmp_path):
    docs_tools()
    page = "preferences.md"  # its opening block builds an EnumerableLM: a few seconds
    text = (TUTORIALS / page).read_text()
    first = EXECUTED.search(text)
    assert first is not None
    opening = text[: first.end()]  # the title, the introduction and the first executed block

    as_written = build(one_page_site(tmp_path / "as-written", page, opening))
    assert as_written.returncode == 0, as_written.stdout + as_written.stderr
    html = (
        tmp_path / "as-written" / "site" / "tutorials" / "preferences" / "index.html"
    ).read_text()
    assert "sequences; the likeliest:" in html  # the block's printed output is in the page

    body = first.group(1)
    broken = opening.replace(body, body + f"raise RuntimeError({INJECTED!r})\n")
    failed = build(one_page_site(tmp_path / "broken", page, broken))
    assert failed.returncode != 0
    assert INJECTED in failed.stdout + failed.stderr
