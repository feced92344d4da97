"""Writing BENCHMARKS.md without touching what people wrote in it.

The file mixes generated sections with hand-written notes (A/B comparisons, the convergence
diagnosis) that the docs site publishes too. Each generated section sits between markers,
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; :func:`update` replaces the inside of the
blocks it is given, in place, and leaves every other byte of the file as it was. A block the
file does not hold yet is appended at its end. The run's own header (command, date, machine)
is one more block, named :data:`HEADER`.

Standard library only, and no side effects on import: the tests load it directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

#: The block holding the last run's command, date and machine table.
HEADER = "run"
BEGIN = "<!-- bench:{name} -->"
END = "<!-- /bench:{name} -->"
_BLOCK = re.compile(r"<!-- bench:(\w+) -->\n(.*?)\n<!-- /bench:\1 -->", re.S)
_OPENING = re.compile(r"<!-- bench:(\w+) -->")


def block(name: str, body: str) -> str:
    """One generated section wrapped in its markers."""
    return f"{BEGIN.format(name=name)}\n{body.strip()}\n{END.format(name=name)}"


def blocks(text: str) -> dict[str, str]:
    """The bodies of the generated blocks in ``text``, by name.

    Raises ``ValueError`` when a block opens without closing, or a name appears twice: writing
    over such a file could swallow the text after the broken marker.
    """
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        name = match.group(1)
        if name in found:
            raise ValueError(f"BENCHMARKS.md holds two blocks named {name!r}")
        found[name] = match.group(2)
    opened = _OPENING.findall(text)
    unclosed = sorted(set(opened) - found.keys())
    if unclosed or len(opened) != len(found):
        which = unclosed or sorted(n for n in set(opened) if opened.count(n) > 1)
        raise ValueError(
            f"BENCHMARKS.md has a bench block that does not close: {which} "
            "(each '<!-- bench:NAME -->' needs its own '<!-- /bench:NAME -->' line)"
        )
    return found


def update(text: str | None, sections: Mapping[str, str], order: Sequence[str], title: str) -> str:
    """``text`` with the blocks named in ``sections`` replaced; everything else kept.

    ``text`` is the file's current content (``None`` when there is none: then the result is
    ``title``, then the blocks in ``order``). Blocks ``text`` lacks are appended in ``order``
    (the header block, when new, goes right under the first line if that is the title).
    """
    if text is None:
        parts = [title] + [block(n, sections[n]) for n in order if n in sections]
        return "\n\n".join(parts) + "\n"
    present = blocks(text)

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return block(name, sections[name]) if name in sections else match.group(0)

    out = _BLOCK.sub(replace, text)
    missing = [n for n in order if n in sections and n not in present]
    if HEADER in missing:
        missing.remove(HEADER)
        first, _, rest = out.partition("\n")
        header = block(HEADER, sections[HEADER])
        if first.strip() == title.strip():
            out = f"{first}\n\n{header}\n\n" + rest.lstrip("\n")
        else:
            out = f"{header}\n\n{out}"
    for name in missing:
        out = out.rstrip("\n") + "\n\n" + block(name, sections[name]) + "\n"
    return out
