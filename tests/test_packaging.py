"""Packaging: one version from Cargo.toml, `disco --version`, the wheel check.

.ci/run builds the real wheel and runs scripts/check_wheel.py on it; these tests check that the
check itself catches what it should, on small synthetic wheels.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

import disco
from disco import cli

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "disco-control"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_wheel = _load(ROOT / "scripts" / "check_wheel.py")


def _toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # a dependency of disco-control on 3.10
        import tomli as tomllib
    return tomllib.loads(path.read_text())


def test_one_version_from_cargo_toml() -> None:
    cargo = _toml(ROOT / "Cargo.toml")["package"]["version"]
    assert check_wheel.cargo_version() == cargo
    assert disco.__version__ == cargo
    assert importlib.metadata.version(DISTRIBUTION) == cargo
    assert "version" in _toml(ROOT / "pyproject.toml")["project"]["dynamic"]


def test_version_flag_prints_the_distribution_and_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"{DISTRIBUTION} {disco.__version__}"


def test_a_plain_install_brings_what_the_demo_and_the_configs_need() -> None:
    project = _toml(ROOT / "pyproject.toml")["project"]
    assert project["name"] == DISTRIBUTION
    names = {re.split(r"[<>=;\s]", dep, maxsplit=1)[0] for dep in project["dependencies"]}
    # the demo's plots, and TOML configs on CPython 3.10
    assert {"torch", "transformers", "matplotlib", "tomli"} <= names
    # every runtime dependency has a tested lower and an upper bound
    for dep in project["dependencies"]:
        assert ">=" in dep and ("<" in dep.split(";")[0] or "python_version" in dep), dep


# --- scripts/check_wheel.py on synthetic wheels ------------------------------------------------

VERSION = "1.2.3"
GOOD_NAME = f"disco_control-{VERSION}-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"


def _wheel(
    tmp_path: Path, *, name: str = GOOD_NAME, drop: str = "", add: str = "", version: str = VERSION
) -> Path:
    files = {name: b"x" for name in check_wheel.REQUIRED}
    files["disco/_core.abi3.so"] = b"\x7fELF"
    info = f"disco_control-{version}.dist-info"
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.4\nName: disco-control\nVersion: {version}\n"
        "License-Expression: Apache-2.0\nRequires-Python: >=3.10\n"
    ).encode()
    files[f"{info}/licenses/LICENSE"] = b"Apache License"
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\ndisco=disco.cli:main\n"
    files.pop(drop, None)
    if add:
        files[add] = b"x"
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as wheel:
        for file, data in files.items():
            wheel.writestr(file, data)
    return path


def test_a_complete_wheel_passes(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    assert check_wheel.wheel_problems(wheel, VERSION) == []
    assert "the embedded model" in check_wheel.summary(wheel)


@pytest.mark.parametrize(
    "drop", ["disco/models/default/model.safetensors", "disco/py.typed", "disco/_core.abi3.so"]
)
def test_a_wheel_missing_a_part_fails(tmp_path: Path, drop: str) -> None:
    problems = check_wheel.wheel_problems(_wheel(tmp_path, drop=drop), VERSION)
    assert problems and any(drop.rsplit("/", 1)[-1].split(".")[0] in p for p in problems), problems


@pytest.mark.parametrize(
    "stray",
    ["tests/test_cli.py", "disco/__pycache__/cli.cpython-311.pyc", "rust/src/lib.rs", "notes.txt"],
)
def test_a_wheel_with_stray_files_fails(tmp_path: Path, stray: str) -> None:
    problems = check_wheel.wheel_problems(_wheel(tmp_path, add=stray), VERSION)
    assert any(stray in p for p in problems), problems


def test_a_plain_linux_tag_or_another_version_fails(tmp_path: Path) -> None:
    linux = GOOD_NAME.replace("manylinux2014_x86_64.manylinux_2_17_x86_64", "linux_x86_64")
    assert any(
        "manylinux" in p for p in check_wheel.wheel_problems(_wheel(tmp_path, name=linux), VERSION)
    )
    assert any("Cargo.toml" in p for p in check_wheel.wheel_problems(_wheel(tmp_path), "9.9.9"))
