"""Steps per second of a DPG step on 1 and 2 processes (torchrun, gloo, CPU).

Each configuration runs ``_scaling_worker.py`` under ``torchrun``; the first step's log Z, KL
and ESS must be equal (to the bit) across world sizes before any time is reported.
"""

from __future__ import annotations

import importlib.util
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


# name -> (processes, threads, parallel, averaging, the row its speed-up is measured against)
RUNS = {
    "1 process, 1 thread": (1, 1, "none", "ema", None),
    "1 process, 2 threads": (1, 2, "none", "ema", "1 process, 1 thread"),
    "2 processes, 1 thread each, parallel='none'": (2, 1, "none", "ema", "1 process, 1 thread"),
    "2 processes, 1 thread each, parallel='ddp'": (2, 1, "ddp", "ema", "1 process, 1 thread"),
    "2 processes, 1 thread each, parallel='deepspeed'": (
        2,
        1,
        "deepspeed",
        "ema",
        "1 process, 1 thread",
    ),
    "1 process, 1 thread, averaging='none'": (1, 1, "none", "none", None),
    "2 processes, 1 thread each, parallel='fsdp', averaging='none'": (
        2,
        1,
        "fsdp",
        "none",
        "1 process, 1 thread, averaging='none'",
    ),
}


def run(ctx: Any) -> str:
    settings = {"samples": 128 if ctx.quick else 256, "steps": 2 if ctx.quick else 4}
    # DeepSpeed is an optional extra (disco-control[deepspeed]): its row needs it.
    deepspeed = importlib.util.find_spec("deepspeed") is not None
    runs = {
        name: _launch(processes, threads, {**settings, "parallel": parallel, "averaging": avg})
        for name, (processes, threads, parallel, avg, _) in RUNS.items()
        if deepspeed or parallel != "deepspeed"
    }
    reference = runs["1 process, 1 thread"]
    for name, got in runs.items():
        if not got["finite"]:
            raise RuntimeError(f"{name}: non-finite loss")
        if got["gradients"] != RUNS[name][2]:
            raise RuntimeError(f"{name}: the tuner used parallel={got['gradients']!r}")
        # One thread per process: the same arithmetic, equal to the bit; two threads split
        # the model's float32 reductions differently. The first step is before any update.
        exact = RUNS[name][1] == 1
        keys = sorted(reference["first"])
        ctx.check(
            f"{name}: first step",
            [got["first"][k] for k in keys],
            [reference["first"][k] for k in keys],
            rtol=0.0 if exact else 1e-4,
        )
    rows = []
    for name, got in runs.items():
        step = got["time/step"]
        base = runs[RUNS[name][4] or name]["time/step"]
        rows.append(
            f"| {name} | {seconds(step)} | {1 / step:.3g} | {base / step:.2f}\u00d7 | "
            f"{seconds(got['time/sample'])} | {seconds(got['time/score'] + got['time/backward'])} | "
            f"{seconds(got['time/collectives'])} |"
        )
    table = (
        "| run | seconds per step | steps per second | speed-up | sampling + target | "
        "policy forward + backward | gradient exchange |\n"
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
        "more hardware. Sampling and scoring columns are rank 0's own share; the exchange "
        "column is the gradient sum (`time/collectives`: the per-parameter all-reduce for "
        "`parallel='none'`, DDP's one-token synchronising pass and bucketed all-reduce, "
        "FSDP's synchronising pass and reduce-scatter, DeepSpeed ZeRO-2's one reduction into "
        "the partitions; FSDP's all-gather of the whole model at the start of a step and "
        "ZeRO's all-gather of the updated partitions after it are in the step time only; the "
        "per-chunk gathers of log-scores are inside the sampling and scoring times). Each "
        "speed-up is against the one-thread, one-process run with the same averaging (FSDP "
        "tunes without it)."
        + ("" if deepspeed else " DeepSpeed is not installed here: no row for it.")
        + "\n\n"
        + table
        + "\n"
    )
