"""Named points where the fault and signal tests crash or pause a process (inert otherwise).

The tuner, its checkpoints and the ``disco`` command call :func:`kill_point` at each I/O step
worth interrupting; nothing happens unless a test sets the variables below in the process's
environment before it starts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

__all__ = ["kill_point"]

_KILL_AT = os.environ.get("DISCO_TEST_KILL_AT")
_PAUSE_AT = os.environ.get("DISCO_TEST_PAUSE_AT")
_PAUSE_DIR = os.environ.get("DISCO_TEST_PAUSE_DIR")
_kill_count = 0
_passed: dict[str, int] = {}


def kill_point(label: str) -> None:
    """Test hook for the crash and signal harnesses; does nothing unless a variable below is set.

    With ``DISCO_TEST_KILL_AT=N`` the process names each point it passes on stderr and SIGKILLs
    itself at the N-th (``0``: never), so a test can crash it at a chosen I/O step. With
    ``DISCO_TEST_PAUSE_AT=LABEL#K`` and ``DISCO_TEST_PAUSE_DIR=DIR`` it waits at the K-th pass of
    that point, having written ``DIR/paused-PID`` (its PID, rank and the label), until
    ``DIR/release`` exists, so a test can signal it or start a second run meanwhile.
    """
    global _kill_count
    if _PAUSE_AT is not None and _PAUSE_DIR is not None:
        _passed[label] = _passed.get(label, 0) + 1
        if f"{label}#{_passed[label]}" == _PAUSE_AT:
            _pause(label, Path(_PAUSE_DIR))
    if _KILL_AT is None:
        return
    _kill_count += 1
    print(f"disco-kill-point {_kill_count} {label}", file=sys.stderr, flush=True)
    if _kill_count == int(_KILL_AT):
        os.kill(os.getpid(), signal.SIGKILL)


def _pause(label: str, folder: Path) -> None:
    note = {"pid": os.getpid(), "rank": int(os.environ.get("RANK", "0")), "label": label}
    (folder / f".paused-{os.getpid()}").write_text(json.dumps(note))
    os.replace(folder / f".paused-{os.getpid()}", folder / f"paused-{os.getpid()}")
    while not (folder / "release").exists():
        time.sleep(0.02)
