"""The ``disco`` command under ``torchrun``: N processes write the one-process report, and a rank
that fails brings the group down with one error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import assert_close_after_steps, log_prob_scale

# ---------------------------------------------------------------------------------- the command

SMALL_LENGTH = 6
SMALL = f"""
seed = 3
contexts = ["And the LORD said", "In the beginning"]
[model]
length = {SMALL_LENGTH}
[[features]]
type = "word"
word = "the"
moment = 0.6
[[features]]
type = "function"
path = "rank_features:comma"
moment = 0.4
[fit]
n_samples = 64
[tuner]
loss = "js"
n_steps = 2
samples_per_context = 8
sampling_batch_size = 4
contexts_per_step = 2
learning_rate = 1e-3
[sampler]
acceptance_rate = 0.5
n_samples = 4
estimation_samples = 32
[output]
eval_samples = 16
"""

RANK_FEATURES = """
import os

def comma(sample, context):
    if os.environ.get("DISCO_TEST_FAIL_ON_RANK") == os.environ.get("RANK", "0"):
        raise OSError("the feature's data file is missing on this node")
    return "," in sample.text
"""


def _torchrun(
    config: Path, out: Path, env: dict[str, str] | None = None, processes: int = 2
) -> Any:
    import subprocess

    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "disco",
            "run",
            str(config),
            "--out",
            str(out),
            "--allow-imports",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        cwd=config.parent,
    )


def _small_config(tmp_path: Path, tuner: str = "") -> Path:
    (tmp_path / "rank_features.py").write_text(RANK_FEATURES)
    config = tmp_path / "small.toml"
    config.write_text(SMALL.replace("[tuner]\n", "[tuner]\n" + tuner))
    return config


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize(
    ("tuner", "sizes"),
    [("", (2, 3)), ('parallel = "fsdp"\naveraging = "none"\n', (2,))],
    ids=["auto", "fsdp"],
)
def test_torchrun_processes_write_the_one_process_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tuner: str, sizes: tuple[int, ...]
) -> None:
    import json

    from safetensors.torch import load_file

    from disco import cli

    config = _small_config(tmp_path, tuner)
    runs = {size: _torchrun(config, tmp_path / f"on-{size}", processes=size) for size in sizes}
    for size, done in runs.items():
        assert done.returncode == 0, f"{size} processes: {done.stderr[-3000:]}"
        assert done.stdout.count("report folder:") == 1  # rank 0 alone reports
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    torch.set_num_threads(1)
    assert cli.main(["run", str(config), "--out", str(tmp_path / "on-1"), "--allow-imports"]) == 0
    one = json.loads((tmp_path / "on-1" / "report.json").read_text())
    one_weights = load_file(tmp_path / "on-1" / "policy" / "model.safetensors")
    compared = {k: v for k, v in one.items() if k not in ("seconds", "world_size")}
    for size in sizes:
        folder = tmp_path / f"on-{size}"
        many = json.loads((folder / "report.json").read_text())
        assert (one["world_size"], many["world_size"]) == (1, size)
        # Before tuning everything is reduced in chunk order: equal to the bit.
        for key in ("coefficients", "base_rate"):
            assert many[key] == one[key], key
        weights = load_file(folder / "policy" / "model.safetensors")
        assert weights.keys() == one_weights.keys()
        if not tuner:
            # 'auto' sums the gradients exactly: the tuned policy, so the QRS estimate (its
            # beta for the acceptance rate), the samples and every figure, are one process's.
            for name, value in one_weights.items():
                assert torch.equal(weights[name], value), name
            assert {k: many[k] for k in compared} == compared
        else:
            # The run's Adam turns the float32 noise of gradients that are zero in exact
            # arithmetic (attention key biases) into steps of the learning rate's size, so the
            # weights are compared through what they compute: the report's figures.
            assert_reports_alike(many, one)
        rows = (folder / "samples.jsonl").read_text().splitlines()
        assert len(rows) == len((tmp_path / "on-1" / "samples.jsonl").read_text().splitlines())
        assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
            "latest",
            "step-00000002",
        ]


def assert_reports_alike(many: dict[str, Any], one: dict[str, Any]) -> None:
    """The reports of a run of ``SMALL`` whose gradients were summed in float32 in another order.

    The policy agrees to float32 rounding after the run's steps, and so do the figures computed
    from its log-probabilities (sequences of at most SMALL_LENGTH tokens of the embedded model's
    vocabulary) and QRS's log beta, which moves by at most the largest change of a log-ratio.
    """
    import json

    from disco.models import default_model_path

    vocabulary = json.loads((default_model_path() / "config.json").read_text())["vocab_size"]
    scale = log_prob_scale(SMALL_LENGTH, vocabulary)
    for key, value in one.items():
        if key in ("seconds", "world_size", "qrs_beta"):  # beta: compared as its log
            continue
        numbers = value if isinstance(value, list) else [value]
        if numbers and all(isinstance(v, float) for v in numbers):
            assert_close_after_steps(many[key], value, steps=one["steps"], scale=scale, what=key)
        else:
            assert many[key] == value, key


@pytest.mark.multiprocess
@pytest.mark.slow
def test_a_rank_that_fails_brings_the_group_down_with_one_error(tmp_path: Path) -> None:
    config = _small_config(tmp_path)
    done = _torchrun(config, tmp_path / "run", {"DISCO_TEST_FAIL_ON_RANK": "1"})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "disco: error:" in line]
    assert errors, done.stderr[-3000:]
    assert len({line.split("disco: error:", 1)[1] for line in errors}) == 1
    assert "data file is missing on this node" in errors[0]
