"""The extension points' registries: each new entry is one class plus one line, and reaches the command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from disco import cli, features
from disco.cli.build import loss_tuner
from disco.cli.config import RunConfig
from disco.features import FEATURE_TYPES, feature
from disco.registry import Registry
from disco.samplers import SAMPLERS
from disco.scorers import BooleanScorer
from disco.tuners import KLLoss, Tuner, losses
from disco.tuners import loggers as loggers_module
from disco.tuners.loggers import LOGGERS, Logger, read_jsonl
from disco.tuners.losses import LOSSES

RAW: dict[str, Any] = {
    "model": {"length": 6},
    "features": [{"type": "word", "word": "the", "moment": 0.5}],
    "fit": {"n_samples": 32},
    "tuner": {"n_steps": 2, "samples_per_context": 8},
    "sampler": {"beta": 1.0, "n_samples": 2, "estimation_samples": 16},
    "output": {"eval_samples": 8},
}


def _extended(registry: Registry[Any], entry: Any, name: str) -> Registry[Any]:
    """A copy of ``registry`` with ``entry`` added under ``name`` (the shipped one stays as it is)."""
    copy: Registry[Any] = Registry(registry.what)
    for key, value in registry.items():
        copy.register(value, name=key, about=registry.about(key))
    copy.register(entry, name=name)
    return copy


def test_registries_refuse_unknown_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="unknown loss 'hinge': expected one of kl, reverse_kl"):
        LOSSES.lookup("hinge")
    with pytest.raises(ValueError, match="registered already"):
        LOSSES.register(KLLoss)
    assert list(LOSSES) == ["kl", "reverse_kl", "tv", "js", "chi2", "reverse_chi2"]
    assert all(LOSSES[kind].kind == kind for kind in LOSSES)  # the table is the classes' kinds
    assert set(FEATURE_TYPES) == {
        "word",
        "phrase",
        "regex",
        "length",
        "classifier",
        "function",
        "not",
    }
    assert set(SAMPLERS) == {"qrs", "imh"} and set(LOGGERS) >= {"tensorboard", "mlflow"}


def test_disco_list_shows_every_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for registry in (LOSSES, FEATURE_TYPES, LOGGERS, SAMPLERS):
        for name in registry:
            assert f"  {name} " in out, name
    assert cli.main(["list", "losses"]) == 0
    assert "Forward KL(p ‖ pi)" in capsys.readouterr().out


def test_a_new_loss_is_one_class_and_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class ForwardKLAgain(KLLoss):
        """The forward KL once more, under another name."""

    monkeypatch.setattr(losses, "LOSSES", _extended(LOSSES, ForwardKLAgain, "kl_again"))
    cfg = cli.check_config({**RAW, "tuner": {**RAW["tuner"], "loss": "kl_again"}})
    assert cfg["loss"] == "kl_again"
    # the run's tuner makes this loss itself, with its configuration's baseline settings
    tuner_class = loss_tuner(RunConfig.from_normalised(cfg).tuner.loss)
    assert issubclass(tuner_class, Tuner) and tuner_class.default_loss is ForwardKLAgain
    assert cli.main(["list", "losses"]) == 0
    assert "kl_again      The forward KL once more" in capsys.readouterr().out


def test_a_new_feature_type_is_one_function_and_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def starts_with(prefix: str) -> BooleanScorer:
        """True when the text starts with ``prefix``."""
        return BooleanScorer(lambda s, c: s.startswith(prefix), name=f"starts:{prefix}")

    monkeypatch.setattr(features, "FEATURE_TYPES", _extended(FEATURE_TYPES, starts_with, "starts"))
    spec = {"type": "starts", "prefix": "And", "moment": 0.5}
    cfg = cli.check_config({**RAW, "features": [spec]})
    scorer = cli.build_feature(cfg["features"][0], 0)
    assert scorer.score(["And so", "So and"]).tolist() == [1.0, 0.0]
    # a combinator applies to it too, and a misspelt setting is named
    negated = feature({"type": "not", "feature": {"type": "starts", "prefix": "And"}})
    assert negated.score(["And so", "So and"]).tolist() == [0.0, 1.0]
    with pytest.raises(
        ValueError, match=r"bad settings for a 'starts' feature: unknown \['prefx'\]"
    ):
        feature({"type": "starts", "prefx": "And"})


def test_unknown_loggers_and_sampling_methods_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[[features]]\ntype = "word"\nword = "a"\nmoment = 0.5\n[output]\nloggers = ["papyrus"]\n'
    )
    assert cli.main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("disco: error: ") and "(output.loggers)" in err and "tensorboard" in err
    (tmp_path / "ebm").mkdir()
    (tmp_path / "ebm" / "ebm.json").write_text("{}")
    assert cli.main(["sample", str(tmp_path / "ebm"), "--method", "gibbs"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown sampler 'gibbs'" in err and "(--method)" in err and "\n" not in err


class _Recorder(Logger):
    """Keeps the steps it was given (in a file, as the run's other loggers do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def log(self, step: int, metrics: Any) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps({"step": step, "loss": metrics["loss"]}) + "\n")


def test_a_registered_logger_reaches_disco_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def recorder(run: Path) -> Logger:
        """Every step's loss in RUN_DIR/recorded.jsonl."""
        return _Recorder(run / "recorded.jsonl")

    monkeypatch.setattr(loggers_module, "LOGGERS", _extended(LOGGERS, recorder, "recorder"))
    raw = {
        **RAW,
        "context": "And the LORD said",
        "output": {**RAW["output"], "loggers": ["recorder"]},
    }
    report = cli.run_pipeline(cli.check_config(raw), tmp_path / "run")
    recorded = list(read_jsonl(tmp_path / "run" / "recorded.jsonl"))
    logged = [m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    assert [r["step"] for r in recorded] == [1, 2] == [m["step"] for m in logged]
    assert [r["loss"] for r in recorded] == [m["loss"] for m in logged]
    assert report["steps"] == 2
