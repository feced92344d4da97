"""The benchmark harness: the context handed to every ``bench_*.py`` module, machine facts,
the reference-venv subprocess, and markdown helpers. See ``benches/README.md``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _timing
from _timing import Timing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Variables that slow a current numpy's OpenBLAS down on this machine (see the env README);
#: ``run.py`` removes them from its own process (and the reference subprocess) before numpy loads.
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


class CheckError(AssertionError):
    """A contestant's result disagreed with the reference value: it is not timed."""


@dataclass
class RefTask:
    """One task for the reference environment: ``fn`` of a ``benches/ref_*.py`` module."""

    id: str
    fn: str
    inputs: Mapping[str, Any]  # name -> numpy array (written to .npy for the subprocess)
    expect: Any
    rtol: float
    atol: float = 0.0
    params: Mapping[str, Any] = field(default_factory=dict)
    repeats: int | None = None  # default: the context's


@dataclass
class RefResult:
    """What the reference environment reported for one task."""

    id: str
    value: list[float] | None
    error: str | None
    timing: Timing | None


@dataclass
class Context:
    """Everything a benchmark module needs; ``run(ctx) -> str`` receives one."""

    quick: bool
    ref_python: Path | None
    ref_note: str
    repeats: int
    batch_s: float
    warmup: int = 2
    ref_versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # -- checking and timing -------------------------------------------------------------

    def check(self, name: str, got: Any, want: Any, rtol: float, atol: float = 0.0) -> None:
        """Raises ``CheckError`` unless ``got`` matches ``want`` to the tolerance."""
        problem = _timing.mismatch(got, want, rtol, atol)
        if problem is not None:
            raise CheckError(f"{name}: {problem}")

    def measure(
        self,
        contestants: Mapping[str, Callable[[], Any]],
        *,
        batch_s: float | None = None,
        repeats: int | None = None,
        warmup: int | None = None,
        loops: int | None = None,
    ) -> dict[str, Timing]:
        """Median seconds per call of each contestant, batches interleaved (``_timing``)."""
        return _timing.measure(
            contestants,
            repeats=self.repeats if repeats is None else repeats,
            batch_s=self.batch_s if batch_s is None else batch_s,
            warmup=self.warmup if warmup is None else warmup,
            loops=loops,
        )

    # -- the reference environment -------------------------------------------------------

    def reference(
        self, module: str, tasks: Sequence[RefTask], *, timeout_s: float = 3600
    ) -> dict[str, RefResult] | None:
        """Runs ``tasks`` of ``benches/{module}.py`` under the reference venv's Python.

        Returns ``None`` (and the caller prints ``ctx.ref_note``) when there is no reference
        venv. Inputs travel as ``.npy`` files in a temporary folder; the subprocess checks
        each result against ``expect`` before timing it, with the same timing method.
        """
        if self.ref_python is None:
            return None
        import numpy as np

        with tempfile.TemporaryDirectory(prefix="disco-bench-") as tmp:
            work = Path(tmp)
            written: dict[int, str] = {}
            spec_tasks = []
            for task in tasks:
                inputs = {}
                for key, array in task.inputs.items():
                    if id(array) not in written:
                        filename = f"in{len(written)}.npy"
                        np.save(work / filename, np.asarray(array))
                        written[id(array)] = filename
                    inputs[key] = written[id(array)]
                spec_tasks.append(
                    {
                        "id": task.id,
                        "fn": task.fn,
                        "inputs": inputs,
                        "params": dict(task.params),
                        "expect": _timing.as_floats(task.expect),
                        "rtol": task.rtol,
                        "atol": task.atol,
                        "repeats": task.repeats or self.repeats,
                    }
                )
            spec = {
                "module": module,
                "repeats": self.repeats,
                "batch_s": self.batch_s,
                "warmup": self.warmup,
                "torch_threads": _torch_threads(),
                "tasks": spec_tasks,
            }
            (work / "tasks.json").write_text(json.dumps(spec))
            env = reference_env()
            proc = subprocess.run(
                [str(self.ref_python), str(HERE / "_ref_runner.py"), str(work)],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
            results_file = work / "results.json"
            if proc.returncode != 0 or not results_file.exists():
                tail = (proc.stderr or proc.stdout)[-2000:]
                raise RuntimeError(f"the reference runner failed (exit {proc.returncode}):\n{tail}")
            report = json.loads(results_file.read_text())
        self.ref_versions = dict(report["versions"])
        self.ref_versions["torch threads"] = str(report["torch_threads"])
        out = {}
        for entry in report["results"]:
            timing = entry["timing"]
            out[entry["id"]] = RefResult(
                id=entry["id"],
                value=entry["value"],
                error=entry["error"],
                timing=None
                if timing is None
                else Timing(
                    median=timing["median"],
                    minimum=timing["minimum"],
                    loops=int(timing["loops"]),
                    repeats=int(timing["repeats"]),
                ),
            )
        return out


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def reference_env() -> dict[str, str]:
    """The environment of the reference subprocess: no PYTHONPATH (it would put *our* disco
    first on its path), none of the OpenBLAS overrides."""
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env


# -- machine facts -------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ["avx2", "fma", "avx512f", "avx512dq"]
                return ", ".join(f for f in wanted if f in flags) or "none of avx2/fma/avx512"
    except OSError:
        pass
    return "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    return "unknown"


def _git_commit() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"{rev}{' (with uncommitted changes)' if dirty else ''}" if rev else "unknown"
    except OSError:
        return "unknown"


def _openblas_runtime(np: Any) -> str:
    """Core type and threads of the OpenBLAS numpy loaded (what threadpoolctl would report)."""
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
            for prefix, suffix in (
                ("scipy_openblas_", "64_"),
                ("scipy_openblas_", ""),
                ("openblas_", ""),
            ):
                corename = getattr(lib, f"{prefix}get_corename{suffix}", None)
                threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                if corename is not None and threads is not None:
                    corename.restype = ctypes.c_char_p
                    threads.restype = ctypes.c_int
                    return f"OpenBLAS core {corename().decode()}, {threads()} threads"
        except OSError:
            continue
    return "OpenBLAS core not read"


def _numpy_runtime() -> str:
    """numpy's SIMD dispatch (as ``numpy.show_runtime()`` lists it) and its BLAS."""
    import numpy as np

    try:
        from numpy._core._multiarray_umath import (  # type: ignore[attr-defined]
            __cpu_baseline__,
            __cpu_dispatch__,
            __cpu_features__,
        )

        found = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
        simd = f"SIMD baseline {', '.join(__cpu_baseline__)}, dispatched {', '.join(found)}"
    except ImportError:
        simd = "SIMD: see numpy.show_runtime()"
    blas = "unknown BLAS"
    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{deps.get('name')} {deps.get('version')}"
    except Exception:  # informational only
        pass
    return f"{simd}; BLAS {blas}, {_openblas_runtime(np)}"


def machine_info(openblas_before: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """(label, value) pairs describing the machine and the software under test."""
    import numpy as np

    rows = [
        ("CPU", f"{_cpu_model()} ({_cpu_flags()})"),
        (
            "cores",
            f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable; memory {_memory()}",
        ),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("numpy", f"{np.__version__}: {_numpy_runtime()}"),
    ]
    for name in ("scipy", "torch"):
        try:
            mod = __import__(name)
            extra = ""
            if name == "torch":
                extra = f" (CPU, {mod.get_num_threads()} intra-op threads)"
            rows.append((name, f"{mod.__version__}{extra}"))
        except ImportError:
            rows.append((name, "not installed"))
    try:
        import disco
        from disco import _core

        rows.append(
            (
                "disco (ours)",
                f"{disco.__version__}, extension {Path(_core.__file__).name}, "
                f"git {_git_commit()}; rayon threads "
                f"{os.environ.get('RAYON_NUM_THREADS', os.cpu_count())}",
            )
        )
    except ImportError as err:
        rows.append(("disco (ours)", f"not importable: {err}"))
    env = ", ".join(f"{k}={'unset' if v is None else v!r}" for k, v in openblas_before.items())
    rows.append(("OpenBLAS overrides", f"{env} in the caller's environment; unset for this run"))
    load = os.getloadavg()
    rows.append(("load average at start", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"))
    return rows


# -- markdown ----------------------------------------------------------------------------


def fmt_time(seconds: float | None) -> str:
    """3 significant digits in ns, µs, ms or s."""
    if seconds is None:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            value = seconds / scale
            digits = 0 if value >= 100 else 1 if value >= 10 else 2
            return f"{value:.{digits}f} {unit}"
    raise AssertionError("unreachable")


#: The multiplication sign, for ratios.
TIMES = "\u00d7"


def fmt_ratio(ratio: float) -> str:
    """A ratio as ``12x``, ``3.4x`` or ``0.56x`` (with a multiplication sign)."""
    if ratio >= 10:
        return f"{ratio:.0f}{TIMES}"
    if ratio >= 1:
        return f"{ratio:.1f}{TIMES}"
    return f"{ratio:.2f}{TIMES}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A markdown table; ``align`` has one of ``l``/``r`` per column (default: first left)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_n(n: int) -> str:
    """``100`` -> ``1e2``; other values as they are."""
    text = f"{n:.0e}".replace("e+0", "e").replace("e+", "e")
    return text if float(text) == n else str(n)
