"""Jobs in processes forked from a prepared interpreter: the harness of the crash and signal tests.

A fresh interpreter imports everything the jobs use but runs nothing, then forks one child per
job: forking the test process itself could deadlock a child in the Rust core's thread pool, which
does not survive a fork once started. A child sets the crash and pause points of
:func:`~disco._crash_points.kill_point` for its job, sends its output to its own log file and
runs the job; the test may signal it meanwhile and later collect its exit code.

A job's ``kind`` is ``"disco"`` (the command, its arguments after the kind) or
``"module:function"`` (a function of a module under tests/, called with the arguments).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

POINTS = "disco._crash_points"
"""The module whose ``_KILL_AT``, ``_PAUSE_AT`` and ``_PAUSE_DIR`` drive ``kill_point``."""

ZYGOTE = r"""
import importlib, json, os, sys, traceback
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from disco import cli
points = importlib.import_module(sys.argv[2])
for module in sys.argv[3:]:
    importlib.import_module(module)
# warm up what every job would import on first use (pure torch: nothing of the Rust core)
weight = torch.zeros(2, requires_grad=True)
torch.optim.Adam([weight]).step()
import safetensors.torch, transformers
from transformers import AutoConfig, AutoTokenizer, GPT2LMHeadModel


def run(kind, args):
    if kind == "disco":
        return cli.main(list(args))
    module, name = kind.split(":")
    return getattr(importlib.import_module(module), name)(*args)


for line in sys.stdin:
    job = json.loads(line)
    if job["op"] == "wait":
        _, status = os.waitpid(job["pid"], 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = 1
        try:
            points._KILL_AT = None if job["kill_at"] is None else str(job["kill_at"])
            points._PAUSE_AT, points._PAUSE_DIR = job["pause_at"], job["pause_dir"]
            code = run(job["kind"], job["args"]) or 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
"""


class Forked:
    """Runs jobs in children of one zygote; ``preload`` names modules it imports before forking."""

    def __init__(self, logs: Path, preload: Sequence[str] = ()) -> None:
        self.logs = logs
        self.count = 0
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, str(Path(__file__).parent), POINTS, *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    def _ask(self, job: dict[str, object]) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def start(
        self,
        kind: str,
        *args: str,
        kill_at: int | None = None,
        pause_at: str | None = None,
        pause_dir: Path | None = None,
    ) -> tuple[int, Path]:
        """Start a job in the background: killed at the ``kill_at``-th point it passes (``0``:
        never, but name each point), or paused at ``pause_at`` (``LABEL#K``) with its note in
        ``pause_dir``. Returns its PID and log file."""
        self.count += 1
        log = self.logs / f"job-{self.count}.log"
        job = {"op": "start", "kind": kind, "args": list(args), "log": str(log)}
        job |= {"kill_at": kill_at, "pause_at": pause_at}
        job["pause_dir"] = None if pause_dir is None else str(pause_dir)
        return self._ask(job), log

    def wait(self, pid: int) -> int:
        """The job's exit code (negative: killed by that signal)."""
        return self._ask({"op": "wait", "pid": pid})

    def run(self, kind: str, *args: str, kill_at: int | None = None) -> tuple[int, str]:
        """Run a job to its end: its exit code (``-9``: killed) and its output."""
        pid, log = self.start(kind, *args, kill_at=kill_at)
        return self.wait(pid), log.read_text(errors="replace")

    def labels(self, kind: str, *args: str) -> list[str]:
        """The kill points an uninterrupted job passes, in order."""
        code, output = self.run(kind, *args, kill_at=0)
        assert code == 0, output
        lines = output.splitlines()
        return [line.split(" ", 2)[2] for line in lines if line.startswith("disco-kill-point ")]

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        # Every job has answered by now; the server only has to exit. A starved machine (the soak
        # ran this at nice 19 under a load of 10) can take minutes to do so, and no claim rests on
        # it: a slow exit is killed rather than failing the module's last test.
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
