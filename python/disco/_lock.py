"""One writer per folder: an exclusive OS lock on a file in it, released by the OS when the process ends.

``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows. The OS drops the lock with the process, so
a ``kill -9`` leaves none behind (at most the file, which locks nothing). The holder's PID is
written into the file, so a refused writer can name it. Within one process the lock is
re-entrant: a tuner's checkpoint write inside its own ``tune()`` takes it again for free.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "FolderInUseError", "exclusive"]

LOCK_NAME = ".lock"
# Windows locks byte ranges and a locked range cannot be read by others: lock a byte past the
# PID text, which stays readable.
_WINDOWS_LOCK_OFFSET = 4096


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock: it is writing there now."""

    def __init__(self, folder: str | os.PathLike[str], pid: int | None) -> None:
        self.folder = str(folder)
        self.pid = pid
        super().__init__(f"{self.folder} is being written by {self.holder} (one writer per folder)")

    @property
    def holder(self) -> str:
        """``process PID``, or ``another process`` when it has not written its PID yet."""
        return f"process {self.pid}" if self.pid is not None else "another process"

    def __reduce__(self) -> tuple[type[FolderInUseError], tuple[str, int | None]]:
        return FolderInUseError, (self.folder, self.pid)  # survives pickling between ranks


# lock file (resolved) -> [descriptor, depth]
_held: dict[str, list[int]] = {}


def _holder(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _acquire(folder: Path, path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            pid = _holder(fd)
            os.close(fd)
            raise FolderInUseError(folder, pid)
        if sys.platform == "win32":
            break
        # The previous holder unlinks the file before it unlocks: a lock taken on the unlinked
        # file guards nothing, so take the one now at the path instead.
        try:
            here = os.stat(path)
        except FileNotFoundError:
            here = None
        mine = os.fstat(fd)
        if here is not None and (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev):
            break
        os.close(fd)
    with contextlib.suppress(OSError):  # the PID is a courtesy: a full disk must not refuse
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


def _release(path: Path, fd: int) -> None:
    if sys.platform != "win32":
        with contextlib.suppress(OSError):  # a clean exit leaves the folder as it was
            path.unlink()
    os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) for the ``with`` block.

    Raises :class:`FolderInUseError`, naming the folder and the holder's PID, when another process
    holds it. Nested use in one process only counts.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    key = str(path.resolve())
    if key in _held:
        _held[key][1] += 1
    else:
        _held[key] = [_acquire(root, path), 1]
    try:
        yield
    finally:
        entry = _held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            _release(path, entry[0])
