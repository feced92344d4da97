"""The command answers what needs no model without importing torch or transformers.

``--version``, ``--help``, ``disco inspect``, ``disco list`` (every registry, or one) and every
configuration mistake the file alone shows (types, ranges, unknown keys and names, the warp,
missing files) are checked in a fresh interpreter, which then reports the modules it loaded: the
answer must be the usual one, and neither torch nor transformers may be among them. No time is
measured (the machine's load would decide it).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers")

# Runs the command's main in-process, then prints its exit status and the heavy modules loaded.
PROBE = f"""
import json, sys
from disco.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
print(json.dumps([status, sorted(m for m in {HEAVY!r} if m in sys.modules)]), file=sys.stderr)
"""

FEATURE = '[[features]]\ntype = "word"\nword = "the"\nmoment = 0.5\n'

# Each mistake the file alone shows: the configuration, and the key its one-line error names.
MISTAKES = {
    "range": ("seed = -1\n" + FEATURE, "seed"),
    "unknown section": ("sed = 1\n" + FEATURE, "sed"),
    "unknown key": ("[fit]\nsamples = 3\n" + FEATURE, "fit.samples"),
    "type": ('[tuner]\nlearning_rate = "fast"\n' + FEATURE, "tuner.learning_rate"),
    "unknown tuner key": ("[tuner]\nsteps = 3\n" + FEATURE, "tuner.steps"),
    "tuner range": ("[tuner]\nmomentum = 1.5\n" + FEATURE, "tuner.momentum"),
    "missing context file": ('context_file = "absent.txt"\n' + FEATURE, "context_file"),
    "missing model": ('[model]\npath = "./absent-model"\n' + FEATURE, "model.path"),
    "model length": ("[model]\nlength = 0\n" + FEATURE, "model.length"),
    "beta": ("[sampler]\nbeta = -1.0\n" + FEATURE, "sampler.beta"),
    "both betas": ("[sampler]\nbeta = 2.0\nacceptance_rate = 0.5\n" + FEATURE, "sampler.beta"),
    "logger": ('[output]\nloggers = ["absent"]\n' + FEATURE, "output.loggers"),
    "no features": ("seed = 1\n", "features"),
    "moment": ('[[features]]\ntype = "word"\nword = "the"\nmoment = nan\n', "features[0].moment"),
    "feature without a type": ("[[features]]\nmoment = 0.5\n", "features[0].type"),
    "unknown feature type": ('[[features]]\ntype = "absent"\nmoment = 0.5\n', "features[0].type"),
    "unknown loss": ('[tuner]\nloss = "absent"\n' + FEATURE, "tuner.loss"),
    "warp": ("[model]\ntop_p = 2\n" + FEATURE, "model"),
    "lora": ("[lora]\nr = 0\n" + FEATURE, "lora.r"),
    "malformed TOML": ("seed = \n", "CONFIG"),
}


def probe(*argv: str | Path) -> tuple[int, list[str], str, str]:
    """``disco ARGV`` in a fresh interpreter: its status, heavy modules loaded, stdout, stderr."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    *err, last = done.stderr.strip().splitlines()
    status, heavy = json.loads(last)
    return status, heavy, done.stdout, "\n".join(err)


def test_the_probe_sees_torch_when_a_command_imports_it(tmp_path: Path) -> None:
    # a configuration that passes the file's checks reaches the model's, which load transformers
    config = tmp_path / "run.toml"
    config.write_text("[model]\nlength = 100000\n" + FEATURE)
    status, heavy, _, err = probe("run", config)
    assert status == 2 and "(model.length)" in err
    assert "transformers" in heavy


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--help"], ["sample", "-h"]])
def test_version_and_help_import_no_torch(argv: list[str]) -> None:
    status, heavy, out, _ = probe(*argv)
    assert status == 0 and heavy == []
    assert ("disco-control" if argv == ["--version"] else "usage: disco") in out


# Each registry `disco list` shows: its heading and one of its entries.
LISTED = {
    "losses": ("losses ([tuner] loss):", "  reverse_kl  "),
    "features": ("features ([[features]] type):", "  classifier  "),
    "loggers": ("loggers ([output] loggers):", "  tensorboard  "),
    "samplers": ("samplers (disco sample --method):", "  qrs  "),
}


@pytest.mark.parametrize("what", [*LISTED, None])
def test_listing_the_registries_imports_no_torch(what: str | None) -> None:
    status, heavy, out, _ = probe("list", *([what] if what else []))
    assert status == 0 and heavy == []
    for name in [what] if what else list(LISTED):
        heading, entry = LISTED[name]
        assert heading in out and entry in out, name
    assert out.startswith(LISTED[what or "losses"][0])


def test_inspect_imports_no_torch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    report = {"model": "m", "contexts": [""], "interrupted": True, "steps": 3}
    (run / "report.json").write_text(json.dumps(report))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 3, "loss": 0.5}) + "\n")
    status, heavy, out, _ = probe("inspect", run)
    assert status == 0 and heavy == []
    assert "interrupted after 3 steps" in out and "last step 3: loss 0.5" in out
    status, heavy, _, err = probe("inspect", tmp_path / "absent")
    assert status == 2 and heavy == [] and "(RUN_DIR)" in err


def test_a_missing_configuration_file_imports_no_torch(tmp_path: Path) -> None:
    status, heavy, _, err = probe("run", tmp_path / "absent.toml")
    assert (status, heavy) == (2, [])
    assert err.startswith("disco: error: no configuration file at") and "(CONFIG)" in err


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_mistake_in_the_file_is_reported_without_torch(tmp_path: Path, mistake: str) -> None:
    text, key = MISTAKES[mistake]
    config = tmp_path / "run.toml"
    config.write_text(text)
    status, heavy, out, err = probe("run", config)
    assert (status, heavy, out) == (2, [], "")
    assert len(err.splitlines()) == 1 and err.startswith("disco: error: ")
    assert f"({key})" in err, err


@pytest.mark.parametrize(
    "package", ["disco.cli", "disco.distributions", "disco.scorers", "disco.tuners"]
)
def test_a_lazy_package_keeps_every_public_name(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert name in dir(module), name
        assert getattr(module, name).__module__.startswith(f"{package}."), name
    with pytest.raises(AttributeError, match="has no attribute 'absent'"):
        getattr(module, "absent")  # noqa: B009  (the name is what is tested)
