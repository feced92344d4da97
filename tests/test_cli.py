"""The disco command end to end on the embedded model, and its user errors."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from disco.cli import main
from disco.io import load_ebm

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_demo_writes_a_consistent_report(demo_dir, capsys):
    report = json.loads((demo_dir / "report.json").read_text())
    for key in (
        "base_rate",
        "tuned_rate",
        "qrs_rate",
        "kl_policy_base",
        "qrs_beta",
        "qrs_acceptance_rate",
        "qrs_kl_to_target",
    ):
        assert math.isfinite(report[key]), key
    assert 0 <= report["base_rate"] <= 1 and report["targets"] == [0.5]
    assert 0 < report["qrs_acceptance_rate"] <= 1 and report["qrs_kl_to_target"] >= 0
    lines = [json.loads(line) for line in (demo_dir / "samples.jsonl").read_text().splitlines()]
    assert {line["source"] for line in lines} == {"base", "tuned", "qrs"}
    metrics = [json.loads(line) for line in (demo_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(m.get("step") == report["steps"] for m in metrics)
    for name in ("tuning.png", "qrs.png"):
        assert (demo_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert main(["inspect", str(demo_dir)]) == 0
    assert "QRS beta" in capsys.readouterr().out


@pytest.mark.slow
def test_saved_ebm_loads_with_identical_log_scores_and_samples(demo_dir, capsys):
    from disco.distributions import LMDistribution

    ebm = load_ebm(demo_dir / "ebm")
    base = LMDistribution(length=20)
    samples, _ = base.sample("", 8)
    reloaded = load_ebm(demo_dir / "ebm")
    assert torch.equal(ebm.log_score(samples), reloaded.log_score(samples))
    capsys.readouterr()
    assert (
        main(
            [
                "sample",
                str(demo_dir / "ebm"),
                "--n",
                "3",
                "--length",
                "20",
                "--estimator-samples",
                "128",
            ]
        )
        == 0
    )
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 3 and all(math.isfinite(o["target_log_score"]) for o in out)


@pytest.mark.slow
def test_run_from_the_example_config(tmp_path):
    assert main(["run", str(EXAMPLE), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["features"] == ["word:LORD"] and report["steps"] == 4


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ('[[features]]\ntype = "colour"\nmoment = 0.5\n', "features[0].type"),
        ('[[features]]\ntype = "word"\nword = "x"\nmoment = 1.5\n', "features[0].moment"),
        (
            '[model]\npath = "/no/such/model"\n[[features]]\ntype = "word"\nword = "x"\nmoment = 0.5\n',
            "model.path",
        ),
        ("[[features]\n", "config.toml"),
        ("colour = 3\n", "colour"),
        (
            '[tuner]\nlearning_rat = 0.1\n[[features]]\ntype = "word"\nword = "x"\nmoment = 0.5\n',
            "tuner.learning_rat",
        ),
        (
            '[tuner]\nloss = "hellinger"\n[[features]]\ntype = "word"\nword = "x"\nmoment = 0.5\n',
            "tuner.loss",
        ),
    ],
)
def test_user_errors_are_one_line_with_exit_status_2(tmp_path, capsys, config, key):
    path = tmp_path / "config.toml"
    path.write_text(config)
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("disco: error:")
        and f"({key})" in err
        and "\n" not in err
        and "Traceback" not in err
    )


def test_missing_inputs(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert main(["sample", str(tmp_path)]) == 2
    assert main(["run", str(tmp_path / "missing.toml")]) == 2


def test_console_entry_point_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "disco.cli", "inspect", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("disco: error:")
        and "Traceback" not in proc.stderr
    )
