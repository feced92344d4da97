"""Faults: ``kill -9`` at chosen I/O steps, damaged checkpoints and a full disk, then ``--resume``.

Kill points are injected deterministically through :func:`disco._crash_points.kill_point`
(inert unless ``DISCO_TEST_KILL_AT`` is set): a forked child process sets the point and runs the
tuner or the ``disco`` command (:mod:`forked`), and SIGKILLs itself there. The resumed run must finish exactly
as one uninterrupted run (reused across kill points) did: same report, bit-identical weights,
no step logged twice.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from disco.cli.files import save_policy
from disco.distributions import EnumerableLM
from disco.scorers import BooleanScorer, ExponentialScorer
from disco.tuners import JSLoss, Tuner
from disco.tuners import checkpoint as ckpt
from disco.tuners.loggers import read_jsonl
from forked import Forked
from lm_fixtures import build_gpt2

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the harness forks")

HAS_A = BooleanScorer(lambda s, c: "a" in s.text.split(), name="has_a")


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Any:
    jobs = Forked(tmp_path_factory.mktemp("logs"), preload=("test_faults",))
    yield jobs
    jobs.close()


# ------------------------------------------------------------------ the tuner, at every kill point

TUNE = "test_faults:tune_and_record"

SETTINGS = dict(
    n_steps=3,
    samples_per_context=16,
    learning_rate=0.05,
    proposal="offline",
    seed=5,
    scheduler="cosine",
    checkpoint_interval=1,
    keep_checkpoints=2,
)


def tune_and_record(root: str, result: str) -> None:
    """Tune (resuming from ``root`` if it holds a checkpoint); write the final weights and losses."""
    from safetensors.torch import save_file

    base = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=2)
    tuner = Tuner(
        base.clone(),
        base * ExponentialScorer([HAS_A], [1.0]),
        JSLoss(),
        checkpoint_dir=str(root),
        **SETTINGS,
    )
    if ckpt.find(root) is not None:
        tuner.load_checkpoint(root)
    tuner.tune()
    save_file({k: v.detach().contiguous() for k, v in tuner.parameters.items()}, result)
    losses = [h["loss"] for h in tuner.history]
    Path(result).with_suffix(".json").write_text(json.dumps(losses))


def test_kill_at_every_tuner_io_step_then_resume_matches_the_uninterrupted_run(
    tmp_path: Path, runner: Forked
) -> None:
    from safetensors.torch import load_file

    reference = tmp_path / "reference.safetensors"
    labels = runner.labels(TUNE, str(tmp_path / "ref-ckpt"), str(reference))
    assert len(labels) >= 20 and sum("checkpoint:" in label for label in labels) >= 20
    expected = load_file(reference)
    table = []
    for n, label in enumerate(labels, start=1):
        root, result = str(tmp_path / f"k{n}"), tmp_path / f"k{n}.safetensors"
        assert runner.run(TUNE, root, str(result), kill_at=n)[0] == -9, label
        resumed_from = ckpt.find(root)
        code, output = runner.run(TUNE, root, str(result))
        assert code == 0, output
        got = load_file(result)
        assert set(got) == set(expected)
        assert all(torch.equal(got[k], expected[k]) for k in expected), label
        assert json.loads(result.with_suffix(".json").read_text()) == json.loads(
            reference.with_suffix(".json").read_text()
        ), label
        table.append((n, label, resumed_from.name if resumed_from else "start"))
    print("\nkill point | where | resumed from")
    for row in table:
        print(" | ".join(map(str, row)))


# --------------------------------------------------------------------- the disco command, end to end

CONFIG = """
seed = 1
[model]
path = "{model}"
length = 4
[[features]]
type = "word"
word = "a"
moment = 0.5
[fit]
n_samples = 16
[tuner]
n_steps = 2
samples_per_context = 8
learning_rate = 0.01
checkpoint_interval = 1
[sampler]
beta = 1.0
n_samples = 2
estimation_samples = 16
[output]
eval_samples = 8
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("project")
    model = build_gpt2(folder / "model")
    (folder / "run.toml").write_text(CONFIG.format(model=model))
    return folder


def disco(project: Path, out: Path, *extra: str) -> list[str]:
    """The arguments of ``disco run`` on the project's configuration."""
    return ["run", str(project / "run.toml"), "--out", str(out), *extra]


def outcome(out: Path) -> dict[str, Any]:
    """What must not depend on interruptions: the report (less timing), weights, logged steps."""
    from safetensors.torch import load_file

    report = json.loads((out / "report.json").read_text())
    report.pop("seconds")
    weights = load_file(out / "policy" / "model.safetensors")
    steps = [(m["step"], m["loss"]) for m in read_jsonl(out / "metrics.jsonl") if "loss" in m]
    return {"report": report, "weights": weights, "steps": steps}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["report"] == b["report"]
        and a["steps"] == b["steps"]
        and set(a["weights"]) == set(b["weights"])
        and all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    )


@pytest.fixture(scope="module")
def reference(project: Path, runner: Forked) -> dict[str, Any]:
    """One uninterrupted run, which every interrupted one must reproduce."""
    code, output = runner.run("disco", *disco(project, project / "reference"))
    assert code == 0, output
    return outcome(project / "reference")


# (label, occurrence): where the command is killed; the checkpoint it must resume from
COMMAND_POINTS = [
    (("run: ebm saved", 1), None),
    (("tuning: step 1 logged", 1), None),
    (("checkpoint: policy.safetensors written", 1), None),
    (("checkpoint: folder renamed into place", 1), "step-00000001"),
    (("tuning: step 2 logged", 1), "step-00000001"),
    (("checkpoint: training.safetensors written", 2), "step-00000001"),
    (("checkpoint: state.json written", 2), "step-00000001"),
    (("checkpoint: latest pointer written aside", 2), "step-00000002"),
    (("checkpoint: old checkpoints pruned", 3), "step-00000002"),
    (("run: policy saved", 1), "step-00000002"),
    (("run: samples written", 1), "step-00000002"),
]


@pytest.mark.slow
def test_kill_the_command_then_resume_gives_the_same_report_weights_and_steps(
    project: Path, reference: dict[str, Any], runner: Forked
) -> None:
    labels = runner.labels("disco", *disco(project, project / "labels"))
    table = []
    for i, ((label, occurrence), expected_from) in enumerate(COMMAND_POINTS):
        n = [k for k, x in enumerate(labels, start=1) if x == label][occurrence - 1]
        out = project / f"killed-{i}"
        assert runner.run("disco", *disco(project, out), kill_at=n)[0] == -9, label
        code, err = runner.run("disco", *disco(project, out, "--resume"))
        assert "Traceback" not in err, err
        if expected_from is None:  # killed before the first checkpoint: nothing to resume
            assert code == 2 and "disco: error: no checkpoint" in err.splitlines()[-1], err
            assert runner.run("disco", *disco(project, out))[0] == 0  # starting again is the way
            resumed = "start (one-line error; rerun)"
        else:
            assert code == 0, err
            assert f"resuming after step {int(expected_from[5:])}" in err, err
            resumed = expected_from
        assert same(outcome(out), reference), label
        table.append((n, label, resumed))
    print("\nkill point | where | resumed from")
    for row in table:
        print(" | ".join(map(str, row)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda d: (d / "step-00000002" / "policy.safetensors").write_bytes(b"\0" * 8), "policy"),
        (lambda d: _truncate(d / "step-00000002" / "training.safetensors"), "training"),
        (lambda d: (d / "step-00000002" / "state.json").write_text("{"), "state.json"),
        (lambda d: (d / "latest").write_text(""), "latest"),
        (lambda d: (d / "latest").write_text("../../other/checkpoints/step-00000002"), "latest"),
    ],
)
def test_resume_falls_back_to_the_intact_checkpoint_naming_the_bad_file(
    project: Path,
    reference: dict[str, Any],
    runner: Forked,
    tmp_path: Path,
    damage: Callable[[Path], Any],
    named: str,
) -> None:
    out = tmp_path / "run"
    shutil.copytree(project / "reference", out)  # a finished run: checkpoints 1 and 2 kept
    damage(out / "checkpoints")
    code, err = runner.run("disco", *disco(project, out, "--resume"))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("disco: warning:")]
    assert warnings and named in warnings[0] and "Traceback" not in err, err
    assert same(outcome(out), reference)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# ------------------------------------------------------------------------------------ a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 4 MiB tmpfs (needs root and mount; skipped with the reason otherwise)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` up, then free ``leave`` bytes."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
        os.ftruncate(f.fileno(), max(0, f.tell() - leave))
    return filler


@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_that_keeps_the_last_checkpoint_and_report(
    project: Path,
    reference: dict[str, Any],
    runner: Forked,
    small_disk: Path,
) -> None:
    out = small_disk / "run"
    labels = runner.labels("disco", *disco(project, project / "labels-disk"))
    n = labels.index("tuning: step 2 logged") + 1
    assert runner.run("disco", *disco(project, out), kill_at=n)[0] == -9
    filler = fill(small_disk, leave=16 * 1024)  # room for the report, not for a checkpoint
    code, output = runner.run("disco", *disco(project, out, "--resume"))
    assert code == 2, output
    err = output.strip().splitlines()
    assert err[-1].startswith("disco: error: cannot write to the run folder") and "space" in err[-1]
    assert "(output.dir)" in err[-1] and not any("Traceback" in line for line in err)
    assert (out / "checkpoints" / "latest").read_text() == "step-00000001"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-00000001"]
    assert json.loads((out / "report.json").read_text())["interrupted"] is True
    assert not (out / "policy").exists()
    filler.unlink()  # space again: resuming finishes the same run
    assert runner.run("disco", *disco(project, out, "--resume"))[0] == 0
    assert same(outcome(out), reference)


def test_a_policy_that_cannot_be_written_leaves_no_folder(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from disco.distributions import LMDistribution

    policy = LMDistribution(str(project / "model"), length=4)

    def half_written(folder: Any, **kwargs: Any) -> None:
        (Path(folder) / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(policy.model, "save_pretrained", half_written)
    with pytest.raises(OSError, match="No space"):
        save_policy(policy, tmp_path / "policy")
    assert list(tmp_path.iterdir()) == []
