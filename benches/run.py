"""Run the benchmarks and write their sections into BENCHMARKS.md at the repository root.

    python benches/run.py [--quick] [--ref-python /tmp/discoref-venv/bin/python] [--only NAME]

Each ``benches/bench_NAME.py`` exposes ``run(ctx) -> str`` (a markdown section); see
``benches/README.md``. Every section lives in BENCHMARKS.md between its own markers and only
those blocks are rewritten (``_report.update``): hand-written notes around them stay as they
are, and ``--only NAME`` rewrites just that block (and the run's header block).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# The package as built in this checkout (``maturin develop`` also builds into python/disco).
sys.path.insert(1, str(ROOT / "python"))

import _harness  # noqa: E402
import _report  # noqa: E402

DEFAULT_REF_PYTHON = "/tmp/discoref-venv/bin/python"
TITLE = "# Benchmarks"


def discover() -> list[str]:
    """Names of the benchmark modules, ``bench_NAME.py`` -> ``NAME``, sorted."""
    names = sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))
    if _report.HEADER in names:
        raise RuntimeError(f"bench_{_report.HEADER}.py would collide with the header block")
    return names


def unset_openblas_overrides() -> dict[str, str | None]:
    """Removes the OpenBLAS overrides from this process; returns what they were.

    Called before numpy (or torch, which loads numpy) is imported in this process: OpenBLAS
    reads them once, when it loads, and they slow a current numpy down on this machine.
    """
    return {name: os.environ.pop(name, None) for name in _harness.OPENBLAS_VARS}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer sizes and repeats: a smoke run (minutes)"
    )
    parser.add_argument(
        "--ref-python",
        default=None,
        help=f"Python of the venv holding disco-generation 1.1.1 (default {DEFAULT_REF_PYTHON} "
        "when it exists); reference rows are skipped with a note when it is absent",
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only bench_NAME.py (repeatable)"
    )
    parser.add_argument(
        "--output", default=str(ROOT / "BENCHMARKS.md"), help="where to write (BENCHMARKS.md)"
    )
    return parser.parse_args(argv)


def resolve_ref_python(arg: str | None) -> tuple[Path | None, str]:
    """The reference interpreter, or ``None`` and the note to print in its place."""
    candidate = Path(arg or DEFAULT_REF_PYTHON)
    if candidate.exists():
        return candidate, ""
    how = "VENV=/tmp/discoref-venv bash benches/setup_reference_env.sh"
    return None, (
        f"disco-generation 1.1.1 rows skipped: no reference venv at `{candidate}` "
        f"(create it with `{how}` and pass `--ref-python`)."
    )


def main(argv: list[str]) -> int:
    openblas_before = unset_openblas_overrides()
    args = parse_args(argv)
    names = discover()
    selected = names if not args.only else [n for n in names if n in args.only]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {names}", file=sys.stderr)
        return 2
    ref_python, ref_note = resolve_ref_python(args.ref_python)
    ctx = _harness.Context(
        quick=args.quick,
        ref_python=ref_python,
        ref_note=ref_note,
        repeats=5 if args.quick else 11,
        batch_s=0.005 if args.quick else 0.02,
    )
    command = "python benches/run.py" + "".join(f" {shlex.quote(a)}" for a in argv)
    started = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    machine = _harness.machine_info(openblas_before)

    sections: dict[str, str] = {}
    failed = False
    for name in selected:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"bench_{name}")
            body = module.run(ctx)
        except Exception:  # reported in the output, exit code says it failed
            failed = True
            body = f"## {name}\n\n**Failed:**\n\n```\n{traceback.format_exc()}```"
        elapsed = time.perf_counter() - t0
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
        stamp = (
            f"_Measured {started.isoformat()} by `{command}` in {elapsed:.0f} s; "
            f"load average after: {load}._"
        )
        sections[name] = f"{body.strip()}\n\n{stamp}"
        print(f"[bench] {name} done in {elapsed:.0f} s", file=sys.stderr, flush=True)

    out = Path(args.output)
    ref = ", ".join(f"{k} {v}" for k, v in ctx.ref_versions.items()) or (
        ref_note or "not used by the benchmarks run"
    )
    machine.append(("reference venv", f"`{ref_python}`: {ref}" if ref_python else ref))
    header = [
        "<!-- Written by benches/run.py, which rewrites only the bench blocks: text outside "
        "them is kept. -->",
        "",
        f"Last run: `{command}`, {started.isoformat()} (each section says when it was measured).",
        "",
        "Method: every contestant's result is checked against a reference before it is timed; "
        "times are medians over repeated, interleaved batches after warm-up, all measured in "
        "the same run; ratios are the contestant's time over ours (above 1: ours is faster). "
        "See `benches/README.md`.",
        "",
        "## Machine",
        "",
        _harness.table(["", ""], [(k, v) for k, v in machine], align="ll"),
    ]
    sections[_report.HEADER] = "\n".join(header)
    current = out.read_text() if out.exists() else None
    out.write_text(_report.update(current, sections, [_report.HEADER, *names], TITLE))
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
