"""Check a built wheel's name, metadata and file list; print a summary. Exit 1 on any problem.

Usage: python scripts/check_wheel.py dist/disco_control-*.whl
       python scripts/check_wheel.py --cargo-version   (prints the package version)

The wheel must hold the package's Python sources, the compiled core, its type stubs and
``py.typed``, the embedded default model, and the metadata (name, the version from Cargo.toml,
the ``disco`` command) and nothing else: no tests, Rust sources, caches or build leftovers.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "disco-control"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)
REQUIRED = (
    "disco/__init__.py",
    "disco/cli/__init__.py",
    "disco/cli/__main__.py",
    "disco/py.typed",
    "disco/_core.pyi",
    *(f"disco/models/default/{name}" for name in MODEL_FILES),
)
# The compiled core: one abi3 library, named per platform.
CORE = re.compile(r"disco/_core(\.abi3\.so|\.pyd)$")
ALLOWED_IN_PACKAGE = re.compile(r"\.(py|pyi|typed|json|safetensors|md|so|pyd)$")
FORBIDDEN = re.compile(r"(__pycache__|\.pyc$|(^|/)tests?/|(^|/)rust/|\.rs$|\.lock$|/\.)")


def cargo_version() -> str:
    """The version in Cargo.toml's [package] table: the one source of the package's version."""
    text = (ROOT / "Cargo.toml").read_text()
    package = text.split("[package]", 1)[1].split("\n[", 1)[0]
    match = re.search(r'^version\s*=\s*"([^"]+)"', package, flags=re.M)
    if match is None:
        raise ValueError("Cargo.toml: no version in [package]")
    return match.group(1)


def wheel_problems(path: Path, version: str) -> list[str]:
    """Everything wrong with the wheel at ``path`` for package version ``version``."""
    problems = []
    match = re.fullmatch(r"disco_control-([^-]+)-(cp\d+)-(abi3)-(.+)\.whl", path.name)
    if match is None:
        return [f"{path.name}: not a disco_control abi3 wheel name"]
    if match.group(1) != version:
        problems.append(f"{path.name}: version {match.group(1)}, Cargo.toml says {version}")
    if match.group(2) != "cp310":
        problems.append(f"{path.name}: built for {match.group(2)}, not the abi3 floor cp310")
    platform = match.group(4)
    if platform.startswith("linux_"):
        problems.append(f"{path.name}: plain linux tag; PyPI needs a manylinux one")
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        dist_info = f"disco_control-{version}.dist-info"
        for name in (*REQUIRED, f"{dist_info}/licenses/LICENSE"):
            if name not in names:
                problems.append(f"missing {name}")
        cores = [n for n in names if CORE.match(n)]
        if len(cores) != 1:
            problems.append(f"expected one compiled core disco/_core.*, found {cores}")
        for name in names:
            if FORBIDDEN.search(name):
                problems.append(f"should not ship: {name}")
            elif name.startswith("disco/"):
                if not ALLOWED_IN_PACKAGE.search(name):
                    problems.append(f"unexpected file type in the package: {name}")
            elif not name.startswith(f"{dist_info}/"):
                problems.append(f"outside the package and its metadata: {name}")
        try:
            metadata = wheel.read(f"{dist_info}/METADATA").decode()
            entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
        except KeyError as err:
            return [*problems, f"missing metadata: {err}"]
    if f"\nName: {DISTRIBUTION}\n" not in metadata:
        problems.append(f"METADATA: the name is not {DISTRIBUTION}")
    if f"\nVersion: {version}\n" not in metadata:
        problems.append(f"METADATA: the version is not {version}")
    if "\nLicense-Expression: Apache-2.0\n" not in metadata:
        problems.append("METADATA: the licence is not declared as Apache-2.0")
    if "\nRequires-Python: >=3.10" not in metadata:
        problems.append("METADATA: Requires-Python is not >=3.10")
    if not re.search(r"^disco\s*=\s*disco\.cli:main$", entry_points, flags=re.M):
        problems.append("entry_points.txt: no `disco = disco.cli:main` console script")
    return problems


def summary(path: Path) -> str:
    """Size, tag and a grouped file list of the wheel at ``path``."""
    with zipfile.ZipFile(path) as wheel:
        infos = wheel.infolist()
    groups: dict[str, list[int]] = {}
    for info in infos:
        name = info.filename
        if name.startswith("disco/models/"):
            group = "disco/models/default/ (the embedded model)"
        elif CORE.match(name):
            group = "disco/_core (compiled Rust core)"
        elif name.startswith("disco/"):
            group = "disco/ Python sources, stubs, py.typed"
        else:
            group = name.split("/", 1)[0] + "/"
        count_size = groups.setdefault(group, [0, 0])
        count_size[0] += 1
        count_size[1] += info.file_size
    lines = [
        f"{path.name}: {path.stat().st_size / 2**20:.2f} MiB compressed, "
        f"{sum(i.file_size for i in infos) / 2**20:.2f} MiB unpacked, {len(infos)} files"
    ]
    lines += [f"  {g}: {c} files, {s / 2**20:.2f} MiB" for g, (c, s) in sorted(groups.items())]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    version = cargo_version()
    if argv == ["--cargo-version"]:
        print(version)
        return 0
    failed = False
    for arg in argv:
        path = Path(arg)
        print(summary(path))
        for problem in wheel_problems(path, version):
            print(f"check_wheel: {path.name}: {problem}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
