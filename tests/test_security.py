"""Loading a shared EBM, configuration or run folder runs none of its code without an opt-in."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from disco import cli
from disco.distributions import LMDistribution
from disco.features import ImportNotAllowedError, feature, word_present
from disco.io import load_ebm, save_ebm
from disco.scorers import ExponentialScorer, Product
from lm_fixtures import build_gpt2

# A module that leaves a mark when it is imported: importing it is running it.
MARKING_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")

def f(sample, context):
    return len(sample.text) < 10
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_gpt2(tmp_path_factory.mktemp("gpt2") / "model")
    # it also names custom code, as a Hub repository with its own modelling file would
    code = folder / "configuration_evil.py"
    code.write_text(
        "from pathlib import Path\n"
        f"Path({str(folder.parent / 'remote-code-ran')!r}).write_text('ran')\n"
        "from transformers import GPT2Config\n"
        "class EvilConfig(GPT2Config):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def ebm_dir(model_dir: Path, tmp_path: Path) -> Path:
    base = LMDistribution(str(model_dir), length=4)
    save_ebm(Product(base, ExponentialScorer([word_present("a")], [0.5])), tmp_path / "ebm")
    return tmp_path / "ebm"


def edit(ebm_dir: Path, change: Any) -> None:
    path = ebm_dir / "ebm.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["base"].update(trust_remote_code=True), "base.trust_remote_code"),
        (
            lambda d: d["base"].update(model_kwargs={"trust_remote_code": True}),
            "base.model_kwargs.trust_remote_code",
        ),
    ],
)
def test_an_ebm_asking_to_run_remote_code_is_refused_unless_the_caller_allows_it(
    ebm_dir: Path,
    model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    change: Any,
    key: str,
) -> None:
    edit(ebm_dir, change)
    with pytest.raises(
        ValueError, match=rf"asks to run the base model's own code \({key} = True\)"
    ):
        load_ebm(ebm_dir)
    assert cli.main(["sample", str(ebm_dir), "--n", "1", "--beta", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "--trust-remote-code" in err
    assert not (model_dir.parent / "remote-code-ran").exists()


def test_without_the_flag_a_model_naming_custom_code_loads_the_built_in_class(
    ebm_dir: Path, model_dir: Path
) -> None:
    ebm = load_ebm(ebm_dir)
    assert type(ebm.factors[0].model.config).__name__ == "GPT2Config"
    assert not (model_dir.parent / "remote-code-ran").exists()


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"device": "cuda:7"}, "base.device"),
        ({"tokenizer": "/somewhere/else"}, "base.tokenizer"),
        ({"model_kwargs": {"revision": "evil"}}, "base.model_kwargs"),
        ({"auto": "causal"}, "base.auto"),
    ],
)
def test_a_base_specification_takes_only_the_documented_keys(
    ebm_dir: Path, extra: dict[str, Any], named: str
) -> None:
    edit(ebm_dir, lambda d: d["base"].update(extra))
    with pytest.raises(ValueError, match=rf"unknown key\(s\) {named}"):
        load_ebm(ebm_dir)


def test_a_relative_base_path_is_looked_up_next_to_the_ebm_never_in_the_current_folder(
    ebm_dir: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = json.loads((ebm_dir / "ebm.json").read_text())["base"]["model"]
    assert saved == str(model_dir.resolve())  # save_ebm writes local folders absolute
    import shutil

    elsewhere = tmp_path / "cwd"
    shutil.copytree(model_dir, elsewhere / "model")
    monkeypatch.chdir(elsewhere)
    edit(ebm_dir, lambda d: d["base"].update(model="model"))
    with pytest.raises(ValueError, match="never looked up in the current folder"):
        load_ebm(ebm_dir)
    shutil.copytree(model_dir, ebm_dir / "model")  # shipped inside the EBM folder: fine
    assert load_ebm(ebm_dir).factors[0].model_name == str((ebm_dir / "model").resolve())


def test_import_path_features_need_allow_imports_and_say_what_would_run(
    ebm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "marking_feature_xyz.py").write_text(MARKING_MODULE.format(marker=str(marker)))
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    spec = {"type": "function", "path": "marking_feature_xyz:f"}
    edit(ebm_dir, lambda d: d["factors"].append({"kind": "boolean", "feature": spec}))
    where = str(tmp_path / "marking_feature_xyz.py")
    with pytest.raises(ImportNotAllowedError, match=rf"module 'marking_feature_xyz' from {where}"):
        load_ebm(ebm_dir)
    with pytest.raises(ImportNotAllowedError, match="allow_imports=True"):
        feature({"type": "not", "feature": spec})
    assert not marker.exists()
    ebm = load_ebm(ebm_dir, allow_imports=True)
    assert marker.exists() and len(ebm.factors) == 3


def test_a_config_with_an_import_path_feature_needs_allow_imports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    marker = tmp_path / "imported"
    (tmp_path / "marking_config_xyz.py").write_text(MARKING_MODULE.format(marker=str(marker)))
    config = tmp_path / "run.toml"
    config.write_text(
        '[[features]]\ntype = "function"\npath = "marking_config_xyz:f"\nmoment = 0.5\n'
    )
    assert cli.main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "(features[0])" in err and "--allow-imports" in err
    assert str(tmp_path / "marking_config_xyz.py") in err
    assert not marker.exists() and not (tmp_path / "out").exists()
    cfg = cli.load_config(config, allow_imports=True)  # opted in: next to the config is found
    assert marker.exists() and cfg["features"][0]["path"] == "marking_config_xyz:f"


def test_a_dotted_module_is_located_without_running_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "marking_pkg_xyz"
    package.mkdir()
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(MARKING_MODULE.format(marker=str(marker)))
    (package / "inner.py").write_text("def f(sample, context):\n    return True\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    with pytest.raises(ImportNotAllowedError, match=str(package / "inner.py")):
        feature({"type": "function", "path": "marking_pkg_xyz.inner:f"})
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        "{not json",
        json.dumps({"format": "disco-ebm", "version": 1, "base": None, "factors": "x"}),
        json.dumps({"format": "disco-ebm", "version": 1, "base": [], "factors": []}),
        json.dumps(
            {"format": "disco-ebm", "version": 1, "base": {"type": "enumerable"}, "factors": []}
        ),
        json.dumps(
            {
                "format": "disco-ebm",
                "version": 1,
                "base": {"type": "enumerable", "tokens": ["a"], "max_length": 2, "contexts": [""]},
                "factors": [{"kind": "exponential", "features": [], "coefficients": "nope"}],
            }
        ),
        json.dumps(
            {
                "format": "disco-ebm",
                "version": 1,
                "base": {"type": "enumerable", "tokens": ["a"], "max_length": 2, "contexts": [""]},
                "factors": [{"kind": "pickle", "feature": {}}],
            }
        ),
    ],
)
def test_a_malformed_ebm_json_is_a_value_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "ebm.json").write_text(text)
    from safetensors.torch import save_file

    save_file({"empty": torch.zeros(0)}, tmp_path / "tensors.safetensors")
    with pytest.raises(ValueError):
        load_ebm(tmp_path)


def test_an_oversized_or_truncated_ebm_is_a_value_error(ebm_dir: Path) -> None:
    data = (ebm_dir / "tensors.safetensors").read_bytes()
    (ebm_dir / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"tensors\.safetensors"):
        load_ebm(ebm_dir)
    with (ebm_dir / "ebm.json").open("a") as f:
        f.write(" " * (17 * 2**20))
    with pytest.raises(ValueError, match="more than an EBM description"):
        load_ebm(ebm_dir)
