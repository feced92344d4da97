"""Run every benchmark and write BENCHMARKS.md at the repository root.

    python benches/run.py [--quick] [--ref-python /work/discoref-venv/bin/python] [--only NAME]

Each ``benches/bench_NAME.py`` exposes ``run(ctx) -> str`` (a markdown section); see
``benches/README.md``. With ``--only NAME`` just that section is rerun and replaced in an
existing BENCHMARKS.md, the others are kept as they were.
"""

from __future__ import annotations

import os

# Before numpy (or torch, which loads numpy) is imported anywhere in this process: OpenBLAS
# reads these once, when it loads. Unset here only, never in tests or CI.
_OPENBLAS_BEFORE = {
    name: os.environ.pop(name, None) for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
}

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# The package as built in this checkout (``maturin develop`` also builds into python/disco).
sys.path.insert(1, str(ROOT / "python"))

import _harness  # noqa: E402

DEFAULT_REF_PYTHON = "/work/discoref-venv/bin/python"
BEGIN = "<!-- bench:{name} -->"
END = "<!-- /bench:{name} -->"


def discover() -> list[str]:
    """Names of the benchmark modules, ``bench_NAME.py`` -> ``NAME``, sorted."""
    return sorted(p.stem[len("bench_") :] for p in HERE.glob("bench_*.py"))


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
    how = "VENV=/work/discoref-venv bash shared/reference/setup_ref_env.sh"
    return None, (
        f"disco-generation 1.1.1 rows skipped: no reference venv at `{candidate}` "
        f"(create it with `{how}` and pass `--ref-python`)."
    )


def block(name: str, body: str) -> str:
    return f"{BEGIN.format(name=name)}\n{body.strip()}\n{END.format(name=name)}"


def existing_blocks(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    text = path.read_text()
    pattern = re.compile(r"<!-- bench:(\w+) -->\n(.*?)\n<!-- /bench:\1 -->", re.S)
    return {m.group(1): m.group(2) for m in pattern.finditer(text)}


def main(argv: list[str]) -> int:
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
    machine = _harness.machine_info(_OPENBLAS_BEFORE)

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
    kept = existing_blocks(out) if args.only else {}
    kept.update(sections)
    ref = ", ".join(f"{k} {v}" for k, v in ctx.ref_versions.items()) or (
        ref_note or "not used by the benchmarks run"
    )
    machine.append(("reference venv", f"`{ref_python}`: {ref}" if ref_python else ref))
    header = [
        "# Benchmarks",
        "",
        "<!-- Generated by benches/run.py: edit the benchmarks, not this file. -->",
        "",
        f"Command: `{command}`  ",
        f"Date: {started.isoformat()}",
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
    parts = ["\n".join(header)] + [block(n, kept[n]) for n in names if n in kept]
    out.write_text("\n\n".join(parts) + "\n")
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
