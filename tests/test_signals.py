"""Signals and the one-writer lock: SIGTERM, SIGUSR1 and SIGINT stop ``disco run`` cleanly.

A run is paused at a named hook point (:func:`disco._crash_points.kill_point`, with
``DISCO_TEST_PAUSE_AT``), sent a signal from outside, then let go. During tuning it must finish
the step in progress and its checkpoint, write a partial report saying where it stopped and
exit with 128 + the signal; outside tuning, or on a second signal, it stops at once keeping the
last checkpoint. ``--resume`` must then end bit-identical to the uninterrupted run, shared by
every case. Under ``torchrun`` all ranks stop after the same step, whichever got the signal.
Two writers on one folder: the second is refused naming the first; ``kill -9`` frees it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import disco as disco_package
from disco.distributions import EnumerableLM
from disco.scorers import BooleanScorer, ExponentialScorer
from disco.tuners import JSLoss, Tuner
from forked import Forked
from lm_fixtures import build_gpt2
from test_faults import CONFIG, disco, outcome, same

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not hasattr(signal, "SIGUSR1"), reason="POSIX signals and fork"
)

N_STEPS, INTERVAL = 3, 2  # a periodic checkpoint at step 2 only, the final one at step 3
# Two chunks a step, so each of 2 ranks gets one (DDP needs every rank to run the model).
RUN = CONFIG.replace("n_steps = 2", f"n_steps = {N_STEPS}\nsampling_batch_size = 4").replace(
    "checkpoint_interval = 1", f"checkpoint_interval = {INTERVAL}"
)
TIMEOUT_S = 300.0


def _running(pid: int) -> bool:
    """Whether ``pid`` is still running (a zombie, exited but not yet waited for, is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _paused(folder: Path, n: int, alive: Any) -> list[dict[str, Any]]:
    """The notes of the ``n`` processes paused in ``folder`` (an error if ``alive()`` turns false)."""

    def ready() -> bool:
        assert alive(), "the run ended before it reached the pause point"
        return len(list(folder.glob("paused-*"))) >= n

    _until(ready, f"{n} paused process(es)")
    return [json.loads(p.read_text()) for p in sorted(folder.glob("paused-*"))]


ACK = "stopping after this step"


def _signal_and_release(
    folder: Path, pids: list[int], sig: int, log: Path, alive: Any, twice: bool = False
) -> None:
    """Send ``sig`` to ``pids``; once each has answered (or stopped at once), let them go on."""
    before = log.read_text(errors="replace").count(ACK)
    for pid in pids:
        os.kill(pid, sig)
    acked = lambda: log.read_text(errors="replace").count(ACK) >= before + len(pids)  # noqa: E731
    _until(lambda: acked() or not alive(), "the signal's acknowledgement")
    if twice and alive():
        for pid in pids:
            os.kill(pid, sig)
        _until(lambda: not alive(), "the second signal to stop the run")
    (folder / "release").touch()


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    runner = Forked(tmp_path_factory.mktemp("signal-logs"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("signal-project")
    model = build_gpt2(folder / "model")
    (folder / "run.toml").write_text(RUN.format(model=model))
    return folder


@pytest.fixture(scope="module")
def reference(project: Path, jobs: Forked) -> dict[str, Any]:
    """One uninterrupted run, which every interrupted and resumed one must reproduce."""
    from safetensors.torch import load_file

    code, output = jobs.run("disco", *disco(project, project / "reference"))
    assert code == 0, output
    checkpoints = project / "reference" / "checkpoints"
    return {
        **outcome(project / "reference"),
        "step 2": load_file(checkpoints / "step-00000002" / "policy.safetensors"),
    }


def _latest_step(out: Path) -> int | None:
    latest = out / "checkpoints" / "latest"
    return int(latest.read_text().removeprefix("step-")) if latest.is_file() else None


def _check_stopped(out: Path, code: int, log: str, sig: int, step: int | None) -> None:
    """The run exited 128 + ``sig`` with its newest checkpoint (and partial report) at ``step``."""
    assert code == 128 + sig, log
    assert "Traceback" not in log and "--resume" in log.strip().splitlines()[-1], log
    assert _latest_step(out) == step
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True and report["signal"] == signal.Signals(sig).name
    assert report["steps"] == (step or 0)
    assert (report.get("checkpoint") is None) == (step is None)
    if step is not None:
        assert Path(report["checkpoint"]).name == f"step-{step:08d}"


def _resume(jobs: Forked, project: Path, out: Path, step: int | None) -> None:
    code, err = jobs.run("disco", *disco(project, out, "--resume"))
    assert "Traceback" not in err, err
    if step is None:  # stopped before any checkpoint: nothing to resume, so start again
        assert code == 2 and "disco: error: no checkpoint" in err.strip().splitlines()[-1], err
        code, err = jobs.run("disco", *disco(project, out))
    else:
        assert f"resuming after step {step}" in err, err
    assert code == 0, err


# (hook point, occurrence), signal, second signal?, the checkpoint step it must stop with
ONE_PROCESS = [
    (("run: ebm saved", 1), signal.SIGTERM, False, None),  # before tuning: at once
    (("tuning: step 1 sampled", 1), signal.SIGTERM, False, 1),
    (("tuning: step 1 backward passes done", 1), signal.SIGTERM, False, 1),
    (("tuning: step 1 logged", 1), signal.SIGTERM, False, 1),
    (("tuning: step 2 sampled", 1), signal.SIGTERM, False, 2),
    (("checkpoint: policy.safetensors written", 1), signal.SIGTERM, False, 2),
    (("checkpoint: latest pointer replaced", 1), signal.SIGTERM, False, 2),
    (("tuning: step 3 backward passes done", 1), signal.SIGTERM, False, 3),
    (("checkpoint: state.json written", 2), signal.SIGTERM, False, 3),  # the final checkpoint
    (("run: policy saved", 1), signal.SIGTERM, False, 3),  # after tuning: at once
    (("checkpoint: training.safetensors written", 1), signal.SIGUSR1, False, 2),
    (("tuning: step 3 sampled", 1), signal.SIGTERM, True, 2),  # a second signal: at once
]  # SIGINT (Ctrl-C) takes the same path: tests/test_cli.py sends it in-process


def _case_id(point: tuple[str, int], sig: int, twice: bool) -> str:
    words = "".join(c if c.isalnum() else "_" for c in point[0].split(": ")[1])
    return f"{signal.Signals(sig).name}{'x2' if twice else ''}-{words}-{point[1]}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "sig", "twice", "step"),
    ONE_PROCESS,
    ids=[_case_id(p, s, t) for p, s, t, _ in ONE_PROCESS],
)
def test_a_signal_stops_at_the_step_boundary_and_resume_ends_as_the_uninterrupted_run(
    project: Path,
    reference: dict[str, Any],
    jobs: Forked,
    tmp_path: Path,
    point: tuple[str, int],
    sig: int,
    twice: bool,
    step: int | None,
) -> None:
    out, pauses = tmp_path / "run", tmp_path / "pauses"
    pauses.mkdir()
    pid, log = jobs.start(
        "disco", *disco(project, out), pause_at=f"{point[0]}#{point[1]}", pause_dir=pauses
    )
    (note,) = _paused(pauses, 1, lambda: _running(pid))
    _signal_and_release(pauses, [pid], sig, log, lambda: _running(pid), twice)
    code = jobs.wait(pid)
    text = log.read_text(errors="replace")
    _check_stopped(out, code, text, sig, step)
    assert (ACK in text) == (step is not None and "run:" not in point[0]), text
    _resume(jobs, project, out, step)
    assert same(outcome(out), reference), point
    print(
        f"\n| 1 | {signal.Signals(sig).name}{' twice' if twice else ''} | {note['label']} "
        f"(#{point[1]}) | {step if step is not None else 'none'} | yes |"
    )


# ------------------------------------------------------------------------------- one writer


def _tiny_tuner(folder: Path) -> Tuner:
    has_a = BooleanScorer(lambda s, c: "a" in s.text.split(), name="has_a")
    base = EnumerableLM(tokens=("a", "b"), max_length=2, seed=2)
    return Tuner(
        base.clone(),
        base * ExponentialScorer([has_a], [1.0]),
        JSLoss(),
        checkpoint_dir=str(folder),
        n_steps=1,
        samples_per_context=4,
    )


@pytest.mark.slow
def test_a_second_writer_is_refused_naming_the_first_and_kill_9_frees_the_folder(
    project: Path, reference: dict[str, Any], jobs: Forked, tmp_path: Path
) -> None:
    from disco import cli

    out, pauses = tmp_path / "run", tmp_path / "pauses"
    pauses.mkdir()
    first, log = jobs.start(
        "disco", *disco(project, out), pause_at="tuning: step 1 sampled#1", pause_dir=pauses
    )
    _paused(pauses, 1, lambda: _running(first))

    code, err = jobs.run("disco", *disco(project, out))  # a second run into the same folder
    lines = err.strip().splitlines()
    assert code == 2 and len([x for x in lines if "disco: error:" in x]) == 1, err
    assert str(out) in lines[-1] and f"process {first} " in lines[-1], err
    code, err = jobs.run("disco", *disco(project, out, "--resume"))
    assert code == 2 and f"process {first} " in err.strip().splitlines()[-1], err
    # The Python tuner holds its checkpoint folder alike; readers take no lock.
    with pytest.raises(RuntimeError, match=f"process {first} "):
        _tiny_tuner(out / "checkpoints").tune()
    assert cli.main(["inspect", str(out)]) == 0
    drawn = tmp_path / "drawn.jsonl"
    sample = ["sample", str(out / "ebm"), "--n", "1", "--estimation-samples", "16"]
    assert cli.main([*sample, "--output", str(drawn)]) == 0 and drawn.read_text()

    os.kill(first, signal.SIGKILL)
    assert jobs.wait(first) == -signal.SIGKILL
    assert "Traceback" not in log.read_text(errors="replace")
    code, err = jobs.run("disco", *disco(project, out))  # no stale lock: a new run takes the folder
    assert code == 0, err
    assert same(outcome(out), reference)
    assert not (out / ".lock").exists() and not (out / "checkpoints" / ".lock").exists()
    print(f"\nsecond writer: exit 2, '{lines[-1]}'; after kill -9 of {first}: a new run exit 0")


HOLDER = """
import sys
from disco._lock import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_tuner_is_refused_a_held_checkpoint_folder_until_its_holder_is_killed(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ckpt"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(
            RuntimeError, match=f"{folder} is being written by process {holder.pid} "
        ):
            _tiny_tuner(folder).tune()
        assert not (folder / "latest").exists()  # refused before writing anything
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.communicate()
    assert (folder / ".lock").exists()  # left behind, but the lock died with its process
    _tiny_tuner(folder).tune()
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000001"]


def test_the_tuner_lock_is_reentrant_in_one_process_and_leaves_no_file(tmp_path: Path) -> None:
    tuner = _tiny_tuner(tmp_path / "ckpt")
    tuner.tune()  # tune() holds the folder while its own checkpoint write takes it again
    assert not (tmp_path / "ckpt" / ".lock").exists()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["latest", "step-00000001"]


# ----------------------------------------------------------------------------- under torchrun


def _torchrun(project: Path, out: Path, log: Path, pause_at: str | None, pauses: Path | None):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pause_at is not None:
        env.update(DISCO_TEST_PAUSE_AT=pause_at, DISCO_TEST_PAUSE_DIR=str(pauses))
    args = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "disco"]
    with log.open("w") as sink:
        return subprocess.Popen(
            [*args, *disco(project, out)], stdout=sink, stderr=subprocess.STDOUT, env=env
        )


@pytest.fixture(scope="module")
def reference_two(project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run on 2 processes."""
    folder = tmp_path_factory.mktemp("two-reference")
    process = _torchrun(project, folder / "run", folder / "log", None, None)
    assert process.wait(timeout=TIMEOUT_S) == 0, (folder / "log").read_text()[-3000:]
    return outcome(folder / "run")


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("target", ["launcher", "rank 1"])
def test_under_torchrun_every_rank_stops_after_the_same_step(
    project: Path,
    reference: dict[str, Any],
    reference_two: dict[str, Any],
    tmp_path: Path,
    target: str,
) -> None:
    from safetensors.torch import load_file

    out, pauses, log = tmp_path / "run", tmp_path / "pauses", tmp_path / "log"
    pauses.mkdir()
    point = "tuning: step 2 sampled#1"
    launcher = _torchrun(project, out, log, point, pauses)
    alive = lambda: launcher.poll() is None  # noqa: E731
    notes = _paused(pauses, 2, alive)
    pids = [launcher.pid] if target == "launcher" else [n["pid"] for n in notes if n["rank"] == 1]
    # torchrun forwards SIGTERM to both ranks: both answer; signalled alone, rank 1 answers
    before = log.read_text(errors="replace").count(ACK)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    expected = 2 if target == "launcher" else 1
    _until(lambda: log.read_text(errors="replace").count(ACK) >= before + expected, "answers")
    (pauses / "release").touch()
    launcher.wait(timeout=TIMEOUT_S)
    text = log.read_text(errors="replace")
    # torchrun itself ends on a traceback when signalled; no frame of disco's may show
    assert str(Path(disco_package.__file__).parent) not in text, text[-3000:]
    # each rank stopped after step 2 with the status of SIGTERM (torchrun reports them)
    assert text.count("disco: interrupted (SIGTERM)") == 2, text[-3000:]
    assert _latest_step(out) == 2
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True and report["steps"] == 2 and report["world_size"] == 2
    # the gradients are summed exactly: the checkpoint is the one-process run's at that step
    stopped = load_file(out / "checkpoints" / "step-00000002" / "policy.safetensors")
    assert set(stopped) == set(reference["step 2"])
    for name, value in reference["step 2"].items():
        assert torch.equal(stopped[name], value), name

    resumed = _torchrun(project, out, tmp_path / "resume.log", None, None)
    resume_log = tmp_path / "resume.log"
    assert resumed.wait(timeout=TIMEOUT_S) == 0, resume_log.read_text()[-3000:]
    assert same(outcome(out), reference_two)
    print(
        f"\n| 2 | SIGTERM to the {target} | {notes[0]['label']} (both ranks) | 2 "
        "(equal to the 1-process checkpoint) | yes |"
    )
