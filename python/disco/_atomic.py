"""Files and folders replaced whole or not at all: a killed process or a full disk leaves the old one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["replace_folder", "write_text_atomically"]


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and one rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_folder(new: Path, final: Path) -> None:
    """Rename the finished folder ``new`` to ``final``, replacing what was there."""
    if final.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, aside / final.name)
        os.replace(new, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(new, final)
