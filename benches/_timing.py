"""Timing and checking primitives shared by the harness and the reference-environment runner.

Standard library only: this file is imported both by the bench process (our venv) and by
``_ref_runner.py`` under the reference venv's Python, so both sides time the same way.

Method: every contestant is first called once and its result checked; then each is warmed
up, a loop count is calibrated so that one timed batch lasts at least ``batch_s``, and the
batches of all contestants are *interleaved* (repeat 1 of A, B, C, then repeat 2 of A, B, C,
...), so a burst of load from another process hits every contestant alike. The reported time
per call is the median over the repeats of (batch time / loops). The garbage collector is
off while a batch runs, as in ``timeit``.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one contestant: the median of ``repeats`` batches of ``loops`` calls."""

    median: float
    minimum: float
    loops: int
    repeats: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "median": self.median,
            "minimum": self.minimum,
            "loops": self.loops,
            "repeats": self.repeats,
        }


Clock = Callable[[], float]


def _nothing() -> None:
    return None


def _batch(
    fn: Callable[[], Any],
    loops: int,
    clock: Clock = time.perf_counter,
    sync: Callable[[], Any] = _nothing,
) -> float:
    enabled = gc.isenabled()
    gc.disable()
    try:
        sync()
        start = clock()
        for _ in range(loops):
            fn()
        sync()
        return clock() - start
    finally:
        if enabled:
            gc.enable()


def calibrate(
    fn: Callable[[], Any],
    batch_s: float,
    max_loops: int = 1_000_000,
    clock: Clock = time.perf_counter,
    sync: Callable[[], Any] = _nothing,
) -> int:
    """Smallest power-of-ten-ish loop count whose batch lasts at least ``batch_s``."""
    loops = 1
    while True:
        elapsed = _batch(fn, loops, clock, sync)
        if elapsed >= batch_s or loops >= max_loops:
            return loops
        # Aim a little past the target so that one more try usually suffices.
        factor = 10 if elapsed <= 0 else min(10.0, max(2.0, 1.2 * batch_s / elapsed))
        loops = min(max_loops, math.ceil(loops * factor))


def measure(
    contestants: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    batch_s: float,
    warmup: int = 2,
    loops: int | None = None,
    clock: Clock = time.perf_counter,
    sync: Callable[[], Any] = _nothing,
) -> dict[str, Timing]:
    """Times every contestant with interleaved batches; returns the median seconds per call.

    ``loops`` fixes the calls per batch (for work of seconds a call, where calibrating would
    cost more calls); ``clock`` is the timer (``time.process_time`` for CPU time); ``sync``
    runs before and after each batch (e.g. ``torch.cuda.synchronize``, so a batch includes
    the device's queued work).
    """
    names = list(contestants)
    for name in names:
        for _ in range(warmup):
            contestants[name]()
    counts = {
        name: loops
        if loops is not None
        else calibrate(contestants[name], batch_s, clock=clock, sync=sync)
        for name in names
    }
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            samples[name].append(
                _batch(contestants[name], counts[name], clock, sync) / counts[name]
            )
    return {
        name: Timing(
            median=statistics.median(samples[name]),
            minimum=min(samples[name]),
            loops=counts[name],
            repeats=repeats,
        )
        for name in names
    }


def as_floats(value: Any) -> list[float]:
    """Flattens a scalar, a sequence, a numpy array or a torch tensor into plain floats."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().double().reshape(-1).tolist()
    elif hasattr(value, "tolist"):  # a numpy array or scalar
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        out: list[float] = []
        for v in value:
            out.extend(as_floats(v))
        return out
    return [float(value)]


def mismatch(got: Any, want: Any, rtol: float, atol: float) -> str | None:
    """``None`` when ``|got - want| <= atol + rtol * |want|`` elementwise, else a description."""
    g, w = as_floats(got), as_floats(want)
    if len(g) != len(w):
        return f"{len(g)} values where {len(w)} were expected"
    worst = None
    for i, (a, b) in enumerate(zip(g, w)):
        if a == b:  # covers equal infinities
            continue
        err = abs(a - b)
        bound = atol + rtol * abs(b)
        if not err <= bound:  # also catches NaN
            rel = err / abs(b) if b else math.inf
            if worst is None or not rel <= worst[0]:
                worst = (rel, i, a, b)
    if worst is None:
        return None
    rel, i, a, b = worst
    return f"value[{i}] = {a!r}, expected {b!r} (relative error {rel:.2e} > rtol {rtol:g})"
