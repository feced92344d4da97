"""Shared pieces of the model-level benchmarks (bench_constrain, bench_tuner)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _timing

HERE = Path(__file__).resolve().parent


def default_model() -> str:
    from disco.models import default_model_path

    return str(default_model_path())


def run_reference(ctx: Any, mode: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Run ``ref_models.py MODE`` under the reference venv; ``None`` (with a note) if absent."""
    if ctx.ref_python is None:
        return None
    args = [mode, default_model(), json.dumps(params)]
    return reference_script(ctx, "ref_models.py", args, what=mode, timeout=1800)


def reference_script(
    ctx: Any, script: str, args: list[str], *, what: str, timeout: float
) -> dict[str, Any]:
    """Runs ``benches/SCRIPT ARGS`` under the reference venv's Python (without our
    PYTHONPATH) and returns the JSON object on its last line of output, whose ``versions``
    go to ``ctx.ref_versions``; a failure raises with the end of its stderr, naming ``what``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(ctx.ref_python), str(HERE / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"disco 1.1.1 {what} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    ctx.ref_versions.update(result.pop("versions", {}))
    return result


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of one call over ``repeats`` calls, one call a batch and no warm-up: for
    work of a second or more, where calibrating a loop count would cost more calls."""
    return _timing.measure({"fn": fn}, repeats=repeats, batch_s=0.0, warmup=0, loops=1)["fn"].median


def seconds(t: float) -> str:
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"
