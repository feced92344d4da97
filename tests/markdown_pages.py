"""The text of the repository's Markdown pages, found by heading, for the tests that run it.

A test that executes a page's code, or compares a page's file with the one shipped, reads it from
under a named heading of a named page: moving or renaming that text then fails the test with
the page and heading it looked for, instead of silently testing less.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADING = re.compile(r"(#+) (.*)$")


def own_text(text: str, heading: str, *, where: str = "the text") -> str:
    """The lines of ``text`` (Markdown) under ``heading``, down to the next heading of any level.

    Lines inside fenced code are never headings. A heading that is not there (or is there twice)
    is a ``ValueError`` naming ``where``.
    """
    lines = text.splitlines()
    starts, fenced = [], False
    heading_lines = []
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match is not None:
            heading_lines.append(i)
            if match.group(2).strip() == heading:
                starts.append(i + 1)
    if len(starts) != 1:
        found = "no" if not starts else f"{len(starts)}"
        raise ValueError(f"{where} has {found} heading {heading!r}")
    end = next((i for i in heading_lines if i >= starts[0]), len(lines))
    return "\n".join(lines[starts[0] : end]).strip() + "\n"


def fenced_blocks(page: str, heading: str, language: str) -> list[str]:
    """The ```` ```language ```` blocks under ``heading`` of ``page`` (a path from the repository
    root), in order; at least one, else a ``ValueError`` naming the page and the heading."""
    text = own_text((ROOT / page).read_text(encoding="utf-8"), heading, where=page)
    blocks = re.findall(rf"^```{re.escape(language)}\n(.*?)^```$", text, flags=re.S | re.M)
    if not blocks:
        raise ValueError(f"{page} has no ```{language} block under {heading!r}")
    return blocks
