"""MkDocs hook: pages quote the README instead of copying it, so the two cannot drift apart.

A line ``<!-- readme: HEADING -->`` in a page becomes the README section under that heading (its
body down to the next heading of the same or a higher level, without the heading line itself; the
title's section ends at the first ``##`` heading).
A heading that is not in the README stops the build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"^<!-- readme: (.+?) -->$", flags=re.M)


def readme_section(heading: str, text: str) -> str:
    """The body of the section of ``text`` (Markdown) under ``heading``; headings in code skipped."""
    lines = text.splitlines()
    fenced = False
    start = level = None
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"(#+) (.*)$", line)
        if match is None:
            continue
        if start is None and match.group(2).strip() == heading:
            start, level = i + 1, len(match.group(1))
        elif start is not None and level is not None and len(match.group(1)) <= max(level, 2):
            return "\n".join(lines[start:i]).strip() + "\n"
    if start is None:
        raise ValueError(f"docs: README.md has no section {heading!r}")
    return "\n".join(lines[start:]).strip() + "\n"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each README marker by its section; the README's docs/ links point next door."""
    text = README.read_text(encoding="utf-8")

    def quote(match: re.Match[str]) -> str:
        return readme_section(match.group(1), text).replace("](docs/", "](")

    return MARKER.sub(quote, markdown)
