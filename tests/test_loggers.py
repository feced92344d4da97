"""Loggers: JSON lines, console, TensorBoard, W&B and MLflow round trips, and their failure modes."""

import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import require_extra
from disco.tuners.loggers import (
    ConsoleLogger,
    JSONLogger,
    Logger,
    LoggerList,
    MLflowLogger,
    TensorBoardLogger,
    WandBLogger,
    read_jsonl,
)

CONFIG = {
    "n_steps": 3,
    "start_step": 0,
    "lr": 1e-4,
    "loss": "KLLoss",
    "features": ["has_word"],
    "optim": {"name": "adam", "betas": [0.9, 0.999], "weight_decay": None},
}


def metrics(step):
    """What a tuner reports after a step (a NaN and an infinity at step 2)."""
    return {
        "kl_target_policy": 1.0 / step,
        "tv_target_policy": 0.5 / step,
        "moment/has_word": 0.25 * step,
        "loss": -0.1 * step,
        "ess": 10 + step,
        "time/step": 0.01,
        "divergence": math.nan if step == 2 else 0.3,
        "log_z": -math.inf if step == 2 else -1.5,
    }


def drive(logger, n_steps=3, fail_at=None, exc=RuntimeError, config=CONFIG):
    """The tuner's calling pattern: start, log each step, close in a finally."""
    logger.start(config)
    try:
        for step in range(1, n_steps + 1):
            if step == fail_at:
                raise exc("boom")
            logger.log(step, metrics(step))
    finally:
        logger.close()


def strict_loads(line):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=reject)


class Recorder(Logger):
    def __init__(self, name, journal, fail_on=()):
        self.name, self.journal, self.fail_on = name, journal, fail_on

    def _record(self, what):
        self.journal.append((self.name, what))
        if what in self.fail_on:
            raise OSError(f"{self.name} failed in {what}")

    def start(self, config):
        self._record("start")

    def log(self, step, metrics):
        self._record("log")

    def close(self):
        self._record("close")


# --- base ----------------------------------------------------------------------------------------


def test_base_logger_is_a_no_op_context_manager():
    logger = Logger()
    with logger as same:
        assert same is logger
        drive(logger)
        logger.log_samples(1, [{"text": "a"}])


def test_logger_list_fans_out_and_flattens():
    journal = []
    inner = LoggerList([Recorder("a", journal)])
    both = LoggerList([inner, Recorder("b", journal)])
    assert len(both) == 2
    drive(both, n_steps=1)
    assert journal == [
        ("a", "start"),
        ("b", "start"),
        ("a", "log"),
        ("b", "log"),
        ("a", "close"),
        ("b", "close"),
    ]


def test_logger_list_closes_all_when_one_close_fails():
    journal = []
    both = LoggerList([Recorder("a", journal, fail_on={"close"}), Recorder("b", journal)])
    both.start(CONFIG)
    with pytest.raises(OSError, match="a failed in close"):
        both.close()
    assert ("b", "close") in journal


def test_logger_list_closes_started_loggers_when_a_start_fails():
    journal = []
    both = LoggerList([Recorder("a", journal), Recorder("b", journal, fail_on={"start"})])
    with pytest.raises(OSError, match="b failed in start"):
        both.start(CONFIG)
    assert journal == [("a", "start"), ("b", "start"), ("a", "close")]


# --- JSON lines ----------------------------------------------------------------------------------


def test_json_round_trip(tmp_path):
    path = tmp_path / "runs" / "metrics.jsonl"
    logger = JSONLogger(path)
    logger.start(CONFIG)
    logger.log(1, metrics(1))
    # Flushed line by line: readable while the run is still open (a killed run keeps its lines).
    assert strict_loads(path.read_text().splitlines()[1])["step"] == 1
    logger.log(2, {**metrics(2), "np": np.float32(0.5), "flag": np.int64(3)})
    logger.log_samples(2, [{"text": "héllo | world", "score": np.float64(-1.5), "ok": True}])
    logger.log(3, metrics(3))
    logger.close()
    logger.close()  # idempotent

    lines = [strict_loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"config": CONFIG}
    assert [r["step"] for r in lines[1:]] == [1, 2, 2, 3]
    assert lines[1] == {"step": 1, **metrics(1)}
    assert lines[2]["divergence"] == "NaN" and lines[2]["log_z"] == "-Infinity"
    assert lines[2]["np"] == 0.5 and lines[2]["flag"] == 3
    assert lines[3]["samples"] == [{"text": "héllo | world", "score": -1.5, "ok": True}]

    records = read_jsonl(path)
    assert math.isnan(records[2]["divergence"]) and records[2]["log_z"] == -math.inf
    assert records[4] == {"step": 3, **metrics(3)}


def test_json_restart_appends_and_first_start_truncates(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"old": 1}\n')
    logger = JSONLogger(path)
    drive(logger, n_steps=2)
    drive(logger, n_steps=1, config={**CONFIG, "start_step": 2})
    records = read_jsonl(path)
    assert [next(iter(r)) for r in records] == ["config", "step", "step", "config", "step"]
    assert records[3]["config"]["start_step"] == 2

    drive(JSONLogger(path, append=True), n_steps=1)
    assert len(read_jsonl(path)) == 7


def test_json_reader_drops_a_truncated_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    drive(JSONLogger(path), n_steps=2)
    with path.open("a") as f:
        f.write('{"step": 3, "kl_tar')
    assert [r.get("step") for r in read_jsonl(path)] == [None, 1, 2]


def test_json_rejects_misuse(tmp_path):
    logger = JSONLogger(tmp_path / "m.jsonl")
    with pytest.raises(RuntimeError, match="start"):
        logger.log(1, {"a": 1.0})
    logger.start(CONFIG)
    with pytest.raises(ValueError, match="reserved"):
        logger.log(1, {"step": 1.0})
    with pytest.raises(TypeError, match="'text' is not a number"):
        logger.log(1, {"text": "abc"})
    logger.close()


def test_json_needs_no_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("DISCO_SAVE_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    drive(JSONLogger("sub/m.jsonl"), n_steps=1)
    assert (tmp_path / "sub" / "m.jsonl").exists()


# --- console -------------------------------------------------------------------------------------


def test_console_plain_lines_when_not_a_tty(capsys):
    drive(ConsoleLogger())
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert "\r" not in err
    assert lines[0].startswith("step 1/3")
    assert "kl_target_policy=1 " in lines[0] and "moment/has_word=0.25" in lines[0]
    assert "time/step" not in err  # not among the default keys
    assert "divergence" not in err
    assert lines[-1].startswith("disco: 3 steps in")
    assert "kl_target_policy 1 -> 0.3333" in lines[-1]
    assert "moment/has_word 0.25 -> 0.75" in lines[-1]
    assert "ess 11 -> 13" in lines[-1]


def test_console_keys_every_and_non_finite():
    stream = io.StringIO()
    drive(ConsoleLogger(keys=["divergence", "log_*"], every=2, file=stream), n_steps=3)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # step 2, the last step 3, the summary
    assert lines[0].startswith("step 2/3") and "divergence=nan log_z=-inf" in lines[0]
    assert lines[1].startswith("step 3/3") and "divergence=0.3 log_z=-1.5" in lines[1]
    assert "kl_target_policy" not in stream.getvalue()


def test_console_progress_bar():
    stream = io.StringIO()
    drive(ConsoleLogger(file=stream, bar=True))
    text = stream.getvalue()
    assert "disco" in text and "3/3" in text
    assert "kl_target_policy=0.3333" in text
    assert text.rstrip().splitlines()[-1].startswith("disco: 3 steps in")


def test_console_close_without_steps_or_start():
    stream = io.StringIO()
    logger = ConsoleLogger(file=stream)
    logger.close()  # never started: nothing
    assert stream.getvalue() == ""
    logger.start({})  # no n_steps known
    logger.close()
    assert stream.getvalue().startswith("disco: no step logged")


def test_console_rejects_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        ConsoleLogger(every=0)
    with pytest.raises(TypeError, match="keys"):
        ConsoleLogger(keys="loss")


# --- closing after an exception ------------------------------------------------------------------


def test_close_after_an_exception_keeps_what_was_logged(tmp_path):
    stream = io.StringIO()
    path = tmp_path / "m.jsonl"
    loggers = LoggerList([JSONLogger(path), ConsoleLogger(file=stream)])
    with pytest.raises(RuntimeError, match="boom"):
        drive(loggers, n_steps=3, fail_at=3)
    assert [r.get("step") for r in read_jsonl(path)] == [None, 1, 2]
    assert stream.getvalue().splitlines()[-1].startswith("disco: 2 steps in")
    loggers.close()  # a second close is harmless
    drive(loggers, n_steps=1)  # and the loggers can start again
    assert [r.get("step") for r in read_jsonl(path)][-2:] == [None, 1]


# --- missing libraries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "modules", "extra"),
    [
        (TensorBoardLogger, ["torch.utils.tensorboard"], "tensorboard"),
        (WandBLogger, ["wandb"], "wandb"),
        (MLflowLogger, ["mlflow", "mlflow.tracking", "mlflow.entities"], "mlflow"),
    ],
)
def test_missing_library_names_the_extra(monkeypatch, tmp_path, cls, modules, extra):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(ImportError, match=rf"{cls.__name__} needs the \'{extra}\' package") as info:
        cls(tmp_path)
    assert f'pip install "disco-control[{extra}]"' in str(info.value)
    assert not any(tmp_path.iterdir())


# --- TensorBoard ---------------------------------------------------------------------------------


def test_tensorboard_round_trip(tmp_path):
    require_extra("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb")
    drive(logger)
    logger.start({**CONFIG, "start_step": 3})  # a resumed run adds an event file
    logger.log(4, metrics(4))
    logger.log_samples(4, [{"text": "a|b", "score": 1.0}, {"text": "c"}])
    logger.close()
    logger.close()
    files = sorted((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 2

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()
    assert set(metrics(1)) <= set(tags["scalars"])
    kl = acc.Scalars("kl_target_policy")
    assert [e.step for e in kl] == [1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in kl], [1.0, 0.5, 1 / 3, 0.25], rtol=1e-6)
    assert [e.value for e in acc.Scalars("moment/has_word")] == [0.25, 0.5, 0.75, 1.0]
    assert math.isnan(acc.Scalars("divergence")[1].value)
    assert acc.Scalars("log_z")[1].value == -math.inf
    assert {"config/text_summary", "samples/text_summary"} <= set(tags["tensors"])
    config_text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"loss": "KLLoss"' in config_text
    hparams = acc.PluginTagToContent("hparams")
    assert hparams  # the HParams session info was written


# --- MLflow --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_round_trip(tmp_path, monkeypatch):
    require_extra("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")  # remembered as unset, restored after
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = tmp_path / "mlruns"
    logger = MLflowLogger(store, experiment_name="disco-test", run_name="r1", tags={"k": "v"})
    drive(logger)
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
    run_id = logger.run_id
    assert run_id is not None
    assert list(store.rglob(f"{run_id}/metrics/moment/has_word"))

    # Resumed: same run, only new parameters added; samples stored as an artifact.
    logger.start({**CONFIG, "start_step": 3, "extra": 1})
    logger.log(4, {**metrics(4), "weird+name": 1.0})
    logger.log_samples(4, [{"text": "a", "score": -math.inf}])
    logger.close()
    assert logger.run_id == run_id

    client = MlflowClient(tracking_uri=store.as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "r1" and run.data.tags["k"] == "v"
    assert client.get_experiment(run.info.experiment_id).name == "disco-test"
    params = run.data.params
    assert params["n_steps"] == "3" and params["start_step"] == "0" and params["extra"] == "1"
    assert params["loss"] == "KLLoss" and params["optim.betas"] == "[0.9, 0.999]"
    assert params["optim.weight_decay"] == "null"
    history = client.get_metric_history(run_id, "moment/has_word")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]
    div = sorted(client.get_metric_history(run_id, "divergence"), key=lambda m: m.step)
    assert math.isnan(div[1].value)
    assert "weird_name" in run.data.metrics
    samples = Path(client.download_artifacts(run_id, "samples/step-00000004.json", str(tmp_path)))
    assert strict_loads(samples.read_text()) == [{"text": "a", "score": "-Infinity"}]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("exc", "status"), [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")]
)
def test_mlflow_status_after_an_exception(tmp_path, monkeypatch, exc, status):
    require_extra("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    logger = MLflowLogger(str(store))
    with pytest.raises(exc, match="boom"):
        drive(LoggerList([logger]), fail_at=2, exc=exc)
    run = MlflowClient(tracking_uri=store.as_uri()).get_run(logger.run_id)
    assert run.info.status == status
    assert run.data.metrics["kl_target_policy"] == 1.0


# --- Weights & Biases ----------------------------------------------------------------------------


@pytest.mark.slow
def test_wandb_offline_writes_its_run(tmp_path, monkeypatch, fresh_wandb):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandBLogger(project="disco-test", dir=tmp_path / "wb", settings={"console": "off"})
    drive(logger)
    logger.start({**CONFIG, "start_step": 3})
    logger.log(4, metrics(4))
    logger.log_samples(4, [{"text": "a", "score": 1.0}, {"text": "b", "extra": [1, 2]}])
    logger.close()
    logger.close()

    runs = sorted((tmp_path / "wb" / "wandb").glob(f"offline-run-*-{logger.run_id}"))
    assert runs, list((tmp_path / "wb").rglob("*"))
    data = b"".join(f.read_bytes() for run in runs for f in run.glob("run-*.wandb"))
    for name in ("moment/has_word", "kl_target_policy", "time/step", "n_steps", "KLLoss"):
        assert name.encode() in data
