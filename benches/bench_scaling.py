"""Steps per second of a DPG step on 1 and 2 processes (torchrun, gloo, CPU).

Each configuration runs ``_scaling_worker.py`` under ``torchrun``; the first step's log Z, KL
and ESS must be equal (to the bit) across world sizes before any time is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from _models import seconds

HERE = Path(__file__).resolve().parent


def _launch(processes: int, threads: int, settings: dict[str, Any]) -> dict[str, Any]:
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            str(processes),
            str(HERE / "_scaling_worker.py"),
            json.dumps({**settings, "threads": threads}),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(ctx: Any) -> str:
    settings = {"samples": 128 if ctx.quick else 256, "steps": 2 if ctx.quick else 4}
    runs = {
        "1 process, 1 thread": _launch(1, 1, settings),
        "1 process, 2 threads": _launch(1, 2, settings),
        "2 processes, 1 thread each": _launch(2, 1, settings),
    }
    reference = runs["1 process, 1 thread"]
    for name, got in runs.items():
        if not got["finite"]:
            raise RuntimeError(f"{name}: non-finite loss")
        # One thread per process: the same arithmetic, equal to the bit; two threads split
        # the model's float32 reductions differently.
        exact = name.endswith("1 thread") or name.endswith("1 thread each")
        keys = sorted(reference["first"])
        ctx.check(
            f"{name}: first step",
            [got["first"][k] for k in keys],
            [reference["first"][k] for k in keys],
            rtol=0.0 if exact else 1e-4,
        )
    base = reference["time/step"]
    rows = []
    for name, got in runs.items():
        step = got["time/step"]
        rows.append(
            f"| {name} | {seconds(step)} | {1 / step:.3g} | {base / step:.2f}\u00d7 | "
            f"{seconds(got['time/sample'])} | {seconds(got['time/score'] + got['time/backward'])} | "
            f"{seconds(got['time/collectives'])} |"
        )
    table = (
        "| run | seconds per step | steps per second | speed-up | sampling + target | "
        "policy forward + backward | gradient all-reduce |\n"
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows)
    )
    return (
        "## Scaling: one DPG step on 1 and 2 processes\n\n"
        f"The embedded KJV GPT-2 (2.6M parameters), 40-token samples, {settings['samples']} "
        "samples per step in chunks of 64 dealt round-robin to the ranks, Adam; "
        f"`torchrun --standalone --nproc_per_node N` on CPU (gloo); median over {settings['steps']} "
        "steps after one warm-up step. The first step's log Z, KL and ESS are checked equal to the "
        "bit between the one-thread runs (to 1e-4 with two threads, which split float32 sums "
        "differently). The machine has 2 cores: two processes of one thread use the same "
        "cores as one process of two threads, so this measures how well the work splits, not "
        "more hardware. Sampling and scoring columns are rank 0's own share; the all-reduce "
        "column is the gradient sum (the per-chunk gathers of log-scores are inside the "
        "sampling and scoring times).\n\n" + table + "\n"
    )
