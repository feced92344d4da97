"""Writing the run folder: each file whole or not at all, so a kill or a full disk leaves the last good one."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from disco._atomic import write_text_atomically

__all__ = ["keep_steps_up_to", "save_policy", "write_atomically", "write_jsonl", "write_report"]


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` whole or not at all (a full disk leaves the previous version).

    Under torch.distributed only rank 0 writes: every rank holds the same contents.
    """
    from disco.distributed import current_world

    if current_world().is_main:
        write_text_atomically(path, text)


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as JSON lines, written atomically."""
    write_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))


def write_report(out: Path, report: dict[str, Any]) -> None:
    """``out/report.json``, written atomically."""
    write_atomically(out / "report.json", json.dumps(report, indent=2, default=float))


def keep_steps_up_to(metrics: Path, step: int) -> None:
    """Drop what a killed run logged after its checkpoint, so no step appears twice."""
    if not metrics.is_file():
        return
    kept = []
    for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        if (
            isinstance(record, dict)
            and isinstance(record.get("step"), int)
            and record["step"] > step
        ):
            continue
        kept.append(line + "\n")
    write_atomically(metrics, "".join(kept))


def save_policy(policy: Any, folder: Path, state_dict: dict[str, Any] | None = None) -> None:
    """Write the tuned policy whole or not at all: never a folder without its weights.

    ``state_dict``: the weights gathered whole when the parallel mode shards the model
    (:func:`disco.parallel.whole_state_dict`); by default the model's own.
    """
    from disco._atomic import replace_folder

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        policy.model.save_pretrained(tmp, state_dict=state_dict)
        policy.tokenizer.save_pretrained(tmp)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
