"""Runs reference-implementation tasks under the reference venv's Python and reports timings.

Started by the harness as ``REF_PYTHON benches/_ref_runner.py WORKDIR``; never imported by
disco or its tests. ``WORKDIR/tasks.json`` says which companion module to load (a
``benches/ref_*.py`` file with a ``build(fn, arrays, params)`` function) and lists the tasks;
each task's inputs are ``.npy`` files in ``WORKDIR``. For every task the runner builds the
callable, computes its result once, checks it against the expected value sent by the harness
and, only if it agrees, times it (``_timing.measure``). It writes ``WORKDIR/results.json`` and
prints the same JSON on its last line of standard output.

Packaging defects of disco-generation 1.1.1 worked around here (see ``benches/README.md``,
"The reference environment"): the wheel lacks ``disco/tuners/losses/misc/ema_baseline.py``,
so a small module of ours is registered under that name before anything imports
``disco.tuners``; ``disco.tuners.loggers.json`` needs ``DISCO_SAVE_PATH`` at import time.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _timing  # noqa: E402


class EMABaseline:
    """Stand-in for the baseline missing from the 1.1.1 wheel (our code, same contract).

    ``advantage(rewards)`` moves the baseline towards the batch mean,
    ``b <- w * b + (1 - w) * mean(rewards)``, and returns ``rewards - b``.
    """

    def __init__(self, ema_weight: float = 0.99) -> None:
        self.ema_weight = ema_weight
        self.baseline = 0.0

    def advantage(self, rewards):  # type: ignore[no-untyped-def]
        mean = (
            float(rewards.detach().mean()) if hasattr(rewards, "detach") else float(rewards.mean())
        )
        self.baseline = self.ema_weight * self.baseline + (1.0 - self.ema_weight) * mean
        return rewards - self.baseline


def install_disco_shims(workdir: Path) -> None:
    """Registers the modules and settings the 1.1.1 wheel needs but does not ship."""
    os.environ.setdefault("DISCO_SAVE_PATH", str(workdir / "disco_save"))
    package = types.ModuleType("disco.tuners.losses.misc")
    package.__path__ = []  # a namespace for the submodule below
    module = types.ModuleType("disco.tuners.losses.misc.ema_baseline")
    module.EMABaseline = EMABaseline  # type: ignore[attr-defined]
    package.ema_baseline = module  # type: ignore[attr-defined]
    sys.modules.setdefault("disco.tuners.losses.misc", package)
    sys.modules.setdefault("disco.tuners.losses.misc.ema_baseline", module)


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in ("disco", "numpy", "torch", "transformers"):
        try:
            out[name] = importlib.import_module(name).__version__
        except Exception as err:  # reported, not fatal
            out[name] = f"unavailable ({type(err).__name__})"
    return out


def main(workdir: Path) -> dict:
    import numpy as np

    install_disco_shims(workdir)
    spec = json.loads((workdir / "tasks.json").read_text())
    module = importlib.import_module(spec["module"])
    threads = spec.get("torch_threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    results = []
    cache: dict[str, object] = {}
    for task in spec["tasks"]:
        entry: dict[str, object] = {"id": task["id"], "value": None, "error": None, "timing": None}
        try:
            # Keep only this task's inputs in memory (the largest are hundreds of MB).
            needed = set(task["inputs"].values())
            cache = {f: a for f, a in cache.items() if f in needed}
            for filename in needed - cache.keys():
                cache[filename] = np.load(workdir / filename)
            arrays = {key: cache[f] for key, f in task["inputs"].items()}
            fn = module.build(task["fn"], arrays, task.get("params", {}))
            if fn is None:
                entry["error"] = "no equivalent"
            else:
                value = fn()
                entry["value"] = _timing.as_floats(value)
                problem = _timing.mismatch(value, task["expect"], task["rtol"], task["atol"])
                if problem is not None:
                    entry["error"] = f"check failed: {problem}"
                else:
                    timing = _timing.measure(
                        {task["id"]: fn},
                        repeats=task.get("repeats", spec["repeats"]),
                        batch_s=spec["batch_s"],
                        warmup=spec.get("warmup", 2),
                    )[task["id"]]
                    entry["timing"] = timing.as_dict()
        except Exception as err:  # one failing task must not hide the others
            entry["error"] = f"{type(err).__name__}: {err}"
            traceback.print_exc(file=sys.stderr)
        results.append(entry)
    import torch

    return {"versions": versions(), "torch_threads": torch.get_num_threads(), "results": results}


if __name__ == "__main__":
    work = Path(sys.argv[1])
    report = main(work)
    text = json.dumps(report)
    (work / "results.json").write_text(text)
    print(text)
