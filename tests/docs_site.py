"""One-page copies of the documentation site, built the way .ci/run builds the real one.

A page is put alone in a site configured as mkdocs.yml is (its hooks, theme, Markdown
extensions and plugins, minus the API reference, which this site has not), and :func:`build`
runs ``mkdocs build`` with exactly the flags .ci/run's documentation step passes, read from
.ci/run itself: a test of what a build lets through then tests what CI lets through.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI_RUN = ROOT / ".ci" / "run"


def docs_tools() -> Any:
    """Skip unless the docs extra is installed and the docs are here (the sdist leaves them out).

    Returns the ``yaml`` module.
    """
    reason = "needs the 'docs' extra: pip install 'disco-control[docs]'"
    for module in ("mkdocs", "markdown_exec", "material", "yaml"):
        pytest.importorskip(module, reason=reason)
    if not (ROOT / "docs" / "tutorials").is_dir():
        pytest.skip("needs the repository's docs/ folder (the sdist leaves it out)")
    import yaml

    return yaml


def one_page_site(folder: Path, page: str, text: str) -> Path:
    """A site of ``text`` as ``tutorials/page``, configured as mkdocs.yml is, minus the API pages."""
    yaml = docs_tools()
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    site = {
        "site_name": "one page",
        "docs_dir": "docs",
        "exclude_docs": config["exclude_docs"],
        "strict": config["strict"],
        "hooks": [str(ROOT / hook) for hook in config["hooks"]],
        "nav": [{"page": f"tutorials/{page}"}],
        "theme": config["theme"],
        "markdown_extensions": config["markdown_extensions"],
        # mkdocstrings only serves the API reference, which this site has not.
        "plugins": [
            p for p in config["plugins"] if not (isinstance(p, dict) and "mkdocstrings" in p)
        ],
    }
    assert "markdown-exec" in site["plugins"]
    (folder / "docs" / "tutorials").mkdir(parents=True)
    (folder / "docs" / "tutorials" / page).write_text(text)
    (folder / "mkdocs.yml").write_text(yaml.safe_dump(site))
    return folder


def ci_build_arguments() -> list[str]:
    """The arguments after ``mkdocs`` on .ci/run's documentation line, the site dir ``site``."""
    if not CI_RUN.is_file():
        pytest.skip("needs the repository's .ci/run (the sdist leaves it out)")
    lines = [
        line for line in CI_RUN.read_text().splitlines() if line.lstrip().startswith("mkdocs ")
    ]
    assert len(lines) == 1, f".ci/run should call mkdocs once, found {lines}"
    words = shlex.split(lines[0])[1:]
    assert words[0] == "build" and "--site-dir" in words, lines[0]
    at = words.index("--site-dir") + 1
    return [*words[:at], "site", *words[at + 1 :]]


def build(folder: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs`` run in ``folder`` with .ci/run's arguments (the site goes to ``folder/site``)."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", *ci_build_arguments()],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
