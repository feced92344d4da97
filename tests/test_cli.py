"""The ``disco`` command end to end on the embedded model, its config files and its user errors."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import require_extra
from disco import cli
from disco.cli.report import coefficients
from disco.io import load_ebm, save_ebm
from disco.tuners import Tuner
from disco.tuners.loggers import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# Two contexts and two features (a word and a regular expression), tiny settings: the conditional path.
TINY = """
seed = 3
contexts = ["And the LORD said", "In the beginning"]
[model]
length = 8
[[features]]
type = "word"
word = "the"
moment = 0.7
[[features]]
type = "regex"
pattern = "[,;:]"
moment = 0.5
[fit]
n_samples = 64
[tuner]
loss = "js"
n_steps = 3
samples_per_context = 8
contexts_per_step = 2
learning_rate = 1e-3
[sampler]
beta = 1.0
n_samples = 4
estimation_samples = 32
[output]
eval_samples = 16
"""


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    return out


def _one_line_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], key: str, *, alone: bool = True
) -> str:
    """Exit status 2 and one error line naming ``key``; ``alone``: nothing else was printed."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("disco: error: ") and f"({key})" in last, err
    if alone:
        assert err == last, err
    return last


def test_demo_quick_writes_a_consistent_report(demo_dir: Path) -> None:
    for name in ("tuning.png", "qrs.png"):
        assert (demo_dir / name).read_bytes()[:4] == b"\x89PNG", name
    assert (demo_dir / "ebm" / "ebm.json").is_file()
    assert (demo_dir / "policy" / "config.json").is_file()
    report = json.loads((demo_dir / "report.json").read_text())
    assert report["interrupted"] is False and report["features"] == ["word:LORD"]
    assert set(report["coefficients"]) == {"word:LORD"}
    for key in (
        "kl_policy_base",
        "kl_target_policy",
        "qrs_beta",
        "qrs_estimated_acceptance",
        "qrs_estimated_kl",
        "qrs_estimated_tv",
        "seconds",
    ):
        assert math.isfinite(report[key]), key
    (base,), (target,), (tuned,) = report["base_rate"], report["targets"], report["tuned_rate"]
    assert all(0.0 <= r <= 1.0 for r in (base, tuned, report["qrs_rate"][0]))
    assert abs(tuned - target) < abs(base - target)
    assert report["coefficients"]["word:LORD"] > 0  # the word is rarer than the target asks
    assert report["qrs_estimated_acceptance"] == pytest.approx(0.5, abs=0.01)
    assert 0.0 < report["qrs_acceptance"] <= 1.0 and report["qrs_beta"] > 0
    assert report["kl_policy_base"] >= 0 and 0 <= report["qrs_estimated_tv"] <= 1

    rows = [json.loads(line) for line in (demo_dir / "samples.jsonl").read_text().splitlines()]
    counts = {s: sum(r["source"] == s for r in rows) for s in ("base", "tuned", "qrs")}
    assert counts == {"base": 128, "tuned": 128, "qrs": 16}
    base_rows = [r["word:LORD"] for r in rows if r["source"] == "base"]
    assert sum(base_rows) / len(base_rows) == pytest.approx(base)  # the table is the files'
    steps = [m for m in read_jsonl(demo_dir / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in steps] == list(range(1, report["steps"] + 1))
    # One evaluation on max(eval_samples, estimation_samples) fresh samples; every figure
    # a user reads comes with its standard error.
    assert report["evaluation_samples"] == 256
    errors = {k: v for k, v in report.items() if k.endswith("_stderr")}
    for key in ("base_rate", "tuned_rate", "qrs_rate", "kl_target_policy", "kl_policy_base"):
        assert f"{key}_stderr" in errors, key
    for key in ("tv_target_policy", "js_target_policy", "ess", "qrs_acceptance"):
        assert f"{key}_stderr" in errors, key
    for key in ("qrs_estimated_acceptance", "qrs_estimated_kl", "qrs_estimated_tv"):
        assert f"{key}_stderr" in errors, key
    for value in errors.values():
        assert all(
            math.isfinite(v) and v >= 0 for v in (value if isinstance(value, list) else [value])
        )
    (verdict,) = report["verdicts"]
    assert re.fullmatch(
        r"word:LORD  target 0\.50 \| tuned \d\.\d\d ± \d\.\d\d: (meets|short|over) "
        r"\| QRS \d\.\d\d ± \d\.\d\d: (meets|short|over)",
        verdict,
    ), verdict


def test_inspect_prints_the_table(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["inspect", str(demo_dir)]) == 0
    out = capsys.readouterr().out
    assert "word:LORD: tuned policy" in out and "QRS beta" in out and "last step 8" in out
    report = json.loads((demo_dir / "report.json").read_text())
    assert f"{report['tuned_rate'][0]:.3f} ± {report['tuned_rate_stderr'][0]:.3f}" in out
    assert report["verdicts"][0] in out


def test_saved_ebm_loads_with_identical_log_scores_and_samples_from_the_cli(
    demo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ebm = load_ebm(demo_dir / "ebm")
    save_ebm(ebm, tmp_path / "again")
    again = load_ebm(tmp_path / "again")
    samples, _ = ebm.factors[0].sample("", 8)
    assert torch.equal(ebm.log_score(samples, ""), again.log_score(samples, ""))

    out = tmp_path / "qrs.jsonl"
    argv = ["sample", str(demo_dir / "ebm"), "--proposal", str(demo_dir / "policy")]
    assert cli.main([*argv, "--n", "3", "--beta", "1.0", "--output", str(out)]) == 0
    rows = list(read_jsonl(out))
    assert len(rows) == 3
    assert all(math.isfinite(r["target_log_score"]) for r in rows)

    assert cli.main(["sample", str(demo_dir / "ebm"), "--method", "imh", "--n", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("target_log_score" in json.loads(line) for line in lines)


def test_run_with_two_contexts_and_two_features(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(TINY)
    assert cli.main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["contexts"] == ["And the LORD said", "In the beginning"]
    assert report["features"] == ["word:the", "regex:[,;:]"]
    assert report["targets"] == [0.7, 0.5] and report["qrs_beta"] == 1.0 and report["steps"] == 3
    assert set(report["coefficients"]) == set(report["features"])
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    ]
    assert {r["context"] for r in rows} == set(report["contexts"])
    assert sum(r["source"] == "qrs" for r in rows) == 4  # two per context
    # the conditional fit normalises each context on its own; the EBM's coefficients are the fit's
    ebm = load_ebm(tmp_path / "run" / "ebm")
    assert coefficients(ebm) == report["coefficients"]
    # the loaded EBM scores exactly as the fitted one: base * exp(lambda . phi), same lambda
    from disco.features import feature
    from disco.scorers import ExponentialScorer, Product

    base = ebm.factors[0]
    features = [feature(spec) for spec in cli.load_config(config)["features"]]
    fitted = Product(base, ExponentialScorer(features, list(report["coefficients"].values())))
    for context in report["contexts"]:
        samples, _ = base.sample(context, 6)
        assert torch.equal(ebm.log_score(samples, context), fitted.log_score(samples, context))


def test_run_with_a_classifier_and_a_python_function_as_features(
    tmp_path: Path, classifier_dir: Path
) -> None:
    from disco.distributions import LMDistribution

    specs = [
        {"type": "classifier", "model": str(classifier_dir), "label": "POSITIVE"},
        {"type": "function", "path": "feature_helpers:word_count", "kind": "real"},
    ]
    base = LMDistribution(length=8)
    samples, _ = base.sample("", 64)
    # targets at the base model's means (of other samples), well inside what the fit can reach
    targets = [
        float(cli.build_feature(s, i, allow_imports=True).score(samples).mean())
        for i, s in enumerate(specs)
    ]
    tables = "".join(
        f"[[features]]\n{cli_toml(spec)}moment = {t!r}\n" for spec, t in zip(specs, targets)
    )
    body = TINY[: TINY.index("[[features]]")] + tables + TINY[TINY.index("[fit]") :]
    config = tmp_path / "run.toml"
    body = body.replace("n_samples = 64", "n_samples = 256").replace(
        "beta = 1.0", "acceptance_rate = 0.5"
    )
    config.write_text(body.replace('contexts = ["And the LORD said", "In the beginning"]', ""))
    assert cli.main(["run", str(config), "--out", str(tmp_path / "run"), "--allow-imports"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["features"] == ["p(POSITIVE)", "feature_helpers:word_count"]
    assert report["targets"] == targets
    assert all(math.isfinite(v) for v in report["coefficients"].values())
    ebm = load_ebm(tmp_path / "run" / "ebm", allow_imports=True)  # both saved as data
    assert torch.isfinite(ebm.log_score(samples[:4], "")).all()


def test_function_and_classifier_paths_resolve_next_to_the_config(
    tmp_path: Path, classifier_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copytree(classifier_dir, folder / "clf")
    (folder / "my_features_xyz.py").write_text(
        "def short(sample, context):\n    return len(sample.text) < 30\n"
    )
    config = folder / "run.toml"
    config.write_text(
        '[[features]]\ntype = "function"\npath = "my_features_xyz:short"\nmoment = 0.5\n'
        '[[features]]\ntype = "classifier"\nmodel = "clf"\nlabel = "POSITIVE"\nmoment = 0.5\n'
    )
    monkeypatch.chdir(tmp_path)  # neither is in the current folder
    monkeypatch.setattr(sys, "path", list(sys.path))
    cfg = cli.load_config(config, allow_imports=True)
    assert cfg["features"][1]["model"] == str((folder / "clf").resolve())
    function = cli.build_feature(cfg["features"][0], 0, allow_imports=True)
    assert function.name == "my_features_xyz:short"


def cli_toml(spec: dict[str, str]) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in spec.items())


def test_a_never_constraint_runs_saves_and_loads(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    never = '[[features]]\ntype = "word"\nword = "LORD"\nmoment = 0.0\n'
    config.write_text(TINY.replace("[fit]", never + "[fit]"))
    assert cli.main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["features"][2] == "word:LORD" and "word:LORD" not in report["coefficients"]
    assert report["qrs_rate"][2] == 0.0  # QRS output never has it
    ebm = load_ebm(tmp_path / "run" / "ebm")
    samples, _ = ebm.factors[0].sample("And the LORD said", 32)
    log_p = ebm.log_score(samples, "And the LORD said")
    # word features match whole words, ignoring case unless asked: "Lord" counts too
    has_word = torch.tensor([re.search(r"\blord\b", s.text, re.I) is not None for s in samples])
    assert has_word.any() and torch.equal(log_p == -math.inf, has_word)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_run_saves_adapters_that_load_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from disco.distributions import LMDistribution

    require_extra("peft")
    config = tmp_path / "run.toml"
    config.write_text(TINY + '[lora]\nr = 4\nalpha = 8\ntarget_modules = ["c_attn"]\n')
    run = tmp_path / "run"
    assert cli.main(["run", str(config), "--out", str(run)]) == 0
    saved = sorted(p.name for p in (run / "policy").iterdir())
    assert "adapter_config.json" in saved and "config.json" not in saved  # adapters only
    reloaded = LMDistribution(run / "policy", length=8)
    assert hasattr(reloaded.model, "disable_adapter")
    base = LMDistribution(length=8)
    samples, _ = base.sample("In the beginning", 6)
    tuned = reloaded.log_score(samples, "In the beginning")
    assert not torch.allclose(tuned, base.log_score(samples, "In the beginning"))
    assert torch.allclose(
        reloaded.without_adapters().log_score(samples, "In the beginning"),
        base.log_score(samples, "In the beginning"),
    )
    argv = ["sample", str(run / "ebm"), "--proposal", str(run / "policy"), "--n", "2"]
    capsys.readouterr()
    assert cli.main([*argv, "--context", "In the beginning", "--beta", "1.0"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_the_shipped_configs_load(tmp_path: Path) -> None:
    demo = cli.load_config(EXAMPLES / "demo.toml")
    assert demo == cli.demo_config(quick=False)  # `disco run examples/demo.toml` is `disco demo`
    prompts = cli.load_config(EXAMPLES / "prompts.toml")
    assert prompts["contexts"] == (EXAMPLES / "contexts.txt").read_text().splitlines()
    assert prompts["loss"] == "js" and len(prompts["features"]) == 2
    # normalising is idempotent: a normalised config written back reads the same
    raw = {**demo, "tuner": {**demo["tuner"], "loss": demo["loss"]}, "context": demo["contexts"][0]}
    del raw["loss"], raw["contexts"]
    assert cli.check_config(raw) == demo


FEATURE = '[[features]]\ntype = "word"\nword = "a"\nmoment = 0.5\n'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[features]]\ntype = "colour"\nmoment = 0.5\n', "features[0].type"),
        ('[[features]]\ntype = "word"\nword = "LORD"\nmoment = 1.5\n', "features[0].moment"),
        ('[[features]]\ntype = "word"\nword = "LORD"\nmoment = "half"\n', "features[0].moment"),
        ('[[features]]\ntype = "word"\nword = "LORD"\n', "features[0].moment"),
        ('[[features]]\ntype = "word"\nmoment = 0.5\n', "features[0]"),
        (
            '[[features]]\ntype = "function"\npath = "no_such_pkg.x:f"\nmoment = 0.5\n',
            "features[0]",
        ),
        ("seed = 1\n", "features"),
        ('[model]\npath = "/no/such/model"\n' + FEATURE, "model.path"),
        ("[model]\nlength = 0\n" + FEATURE, "model.length"),
        ("[model]\ncolour = 1\n" + FEATURE, "model.colour"),
        ("[[features]\ntype = 1\n", "CONFIG"),
        ("colour = 1\n" + FEATURE, "colour"),
        ("[tuner]\nlearning_rat = 0.1\n" + FEATURE, "tuner.learning_rat"),
        ('[tuner]\nloss = "hinge"\n' + FEATURE, "tuner.loss"),
        ('[tuner]\noptimizer = "lion"\n' + FEATURE, "tuner.optimizer"),
        ("[tuner]\nfeatures = 1\n" + FEATURE, "tuner.features"),
        ("[tuner]\nfsdp_lockstep = true\n" + FEATURE, "tuner.fsdp_lockstep"),
        ("[sampler]\nbeta = 0\n" + FEATURE, "sampler.beta"),
        ("[sampler]\nbeta = 1.0\nacceptance_rate = 0.5\n" + FEATURE, "sampler.beta"),
        ("[sampler]\nacceptance_rate = 0\n" + FEATURE, "sampler.acceptance_rate"),
        ("[sampler]\nn_samples = 0\n" + FEATURE, "sampler.n_samples"),
        ("[fit]\nn_samples = 1.5\n" + FEATURE, "fit.n_samples"),
        ('context = ""\ncontexts = ["a"]\n' + FEATURE, "contexts"),
        ("contexts = []\n" + FEATURE, "contexts"),
        ('context_file = "nowhere.txt"\n' + FEATURE, "context_file"),
        ("[lora]\nr = 0\n" + FEATURE, "lora.r"),
        ('[[features]]\ntype = "not"\nmoment = 0.5\n', "features[0]"),
        (
            '[[features]]\ntype = "not"\nfeature = { type = "length", min = 2 }\nmoment = 2.0\n',
            "features[0].moment",
        ),
        ("features = [1]\n", "features[0]"),
        ('[features]\ntype = "word"\nword = "a"\nmoment = 0.5\n', "features"),
        ('[model]\ntemperature = "hot"\n' + FEATURE, "model"),
        ("[model]\ntop_p = 1.5\n" + FEATURE, "model"),
        ('[tuner]\nn_steps = "5"\n' + FEATURE, "tuner.n_steps"),
        ('[tuner]\nlearning_rate = "1e-3"\n' + FEATURE, "tuner.learning_rate"),
        ('[tuner]\nbaseline = "no"\n' + FEATURE, "tuner.baseline"),
        ('[tuner]\nvalidation_contexts = "abc"\n' + FEATURE, "tuner.validation_contexts"),
        ("[output]\ndir = 5\n" + FEATURE, "output.dir"),
        ('context = ["a", "b"]\n' + FEATURE, "context"),
        ('contexts = ["a", "a"]\n' + FEATURE, "contexts"),
        ("contexts = [1, 2]\n" + FEATURE, "contexts"),
        ("[lora]\ndropout = 1.0\n" + FEATURE, "lora.dropout"),
        ("[lora]\nrank = 4\n" + FEATURE, "lora.rank"),
        ('[lora]\ntarget_modules = "c_attn"\n' + FEATURE, "lora.target_modules"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    _one_line_error(capsys, ["run", str(config), "--out", str(tmp_path / "out")], key)
    assert not (tmp_path / "out").exists()  # checked before any work


def test_unreachable_constraints_are_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    # "zzzz" never appears in 16 samples, so no reweighting of them can reach 50%
    config.write_text(
        TINY.replace('word = "the"', 'word = "zzzz"').replace("n_samples = 64", "n_samples = 16")
    )
    argv = ["run", str(config), "--out", str(tmp_path / "r")]
    err = _one_line_error(capsys, argv, "features", alone=False)
    assert "zzzz" in err


def test_empty_context_file_and_bad_sample_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_dir: Path
) -> None:
    (tmp_path / "empty.txt").write_text("\n  \n")
    config = tmp_path / "run.toml"
    config.write_text('context_file = "empty.txt"\n' + FEATURE)  # found next to the config
    _one_line_error(capsys, ["run", str(config)], "context_file")
    ebm = str(demo_dir / "ebm")
    _one_line_error(capsys, ["sample", ebm, "--n", "0"], "--n")
    _one_line_error(capsys, ["sample", ebm, "--beta", "0"], "--beta")
    _one_line_error(capsys, ["sample", ebm, "--acceptance-rate", "2"], "--acceptance-rate")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("{not json")
    _one_line_error(capsys, ["inspect", str(tmp_path / "bad")], "RUN_DIR")


def test_a_beta_that_would_take_forever_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(TINY.replace("beta = 1.0", "beta = 1e12"))
    err = _one_line_error(
        capsys, ["run", str(config), "--out", str(tmp_path / "r")], "sampler.beta", alone=False
    )
    assert "beta=1e+12" in err and "use a smaller beta" in err


def test_missing_paths_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["demo", "--model", str(tmp_path / "nothing")], "model.path")
    _one_line_error(capsys, ["sample", str(tmp_path)], "EBM_DIR")
    _one_line_error(capsys, ["inspect", str(tmp_path)], "RUN_DIR")
    _one_line_error(capsys, ["run", str(tmp_path / "none.toml")], "CONFIG")
    config = tmp_path / "run.toml"
    config.write_text(TINY)
    _one_line_error(capsys, ["run", str(config), "--out", str(tmp_path), "--resume"], "--resume")


def _losses(folder: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["loss"]) for m in read_jsonl(folder / "metrics.jsonl") if "loss" in m]


def test_ctrl_c_mid_step_stops_after_it_and_resume_finishes_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(TINY)
    assert cli.main(["run", str(config), "--out", str(tmp_path / "whole")]) == 0
    assert json.loads((tmp_path / "whole" / "config.json").read_text()) == json.loads(
        json.dumps(cli.load_config(config))
    )

    real_step = Tuner.step

    def interrupted(self: Tuner) -> dict[str, float]:
        if self.step_count == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C arrives as step 2 begins ...
        return real_step(self)  # ... and step 2 still runs to its end

    monkeypatch.setattr(Tuner, "step", interrupted)
    run = tmp_path / "run"
    assert cli.main(["run", str(config), "--out", str(run)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--resume" in err.splitlines()[-1]
    partial = json.loads((run / "report.json").read_text())
    assert partial["interrupted"] is True and partial["steps"] == 2
    assert Path(partial["checkpoint"]).name == "step-00000002"
    assert cli.main(["inspect", str(run)]) == 0
    assert "interrupted after 2 steps" in capsys.readouterr().out

    monkeypatch.setattr(Tuner, "step", real_step)
    changed = tmp_path / "changed.toml"
    changed.write_text(TINY.replace('loss = "js"', 'loss = "kl"'))
    _one_line_error(capsys, ["run", str(changed), "--out", str(run), "--resume"], "--resume")
    assert cli.main(["run", str(config), "--out", str(run), "--resume"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["interrupted"] is False and report["steps"] == 3
    assert _losses(run) == _losses(tmp_path / "whole")  # resuming reproduces the whole run

    # a fresh run into the same folder starts over: no stale checkpoint survives it
    assert cli.main(["run", str(config), "--out", str(run)]) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000003"]


def test_a_second_ctrl_c_stops_at_once_without_a_new_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(TINY.replace("[tuner]", "[tuner]\ncheckpoint_interval = 1"))
    real_step = Tuner.step

    def interrupted(self: Tuner) -> dict[str, float]:
        if self.step_count == 1:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return real_step(self)

    monkeypatch.setattr(Tuner, "step", interrupted)
    run = tmp_path / "run"
    assert cli.main(["run", str(config), "--out", str(run)]) == 130
    assert "Traceback" not in capsys.readouterr().err
    partial = json.loads((run / "report.json").read_text())
    assert partial["steps"] == 1 and Path(partial["checkpoint"]).name == "step-00000001"


def test_console_entry_point_runs_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "disco.cli", "inspect", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("disco: error: no report.json")
    assert "Traceback" not in done.stderr


def test_the_command_page_shows_the_shipped_config() -> None:
    from markdown_pages import fenced_blocks

    shown = fenced_blocks("docs/command.md", "Configuration file", "toml")
    assert shown == [(EXAMPLES / "demo.toml").read_text()]


def test_the_tuning_plot_smooths_with_a_trailing_mean():
    from disco.cli.report import trailing_mean

    values = [1.0, 3.0, math.nan, 5.0, 9.0]
    assert trailing_mean(values, 3) == [1.0, 2.0, 2.0, 4.0, 7.0]
    assert trailing_mean(values[:2], 1) == values[:2]
    assert math.isnan(trailing_mean([math.nan], 4)[0])


def test_a_rate_on_which_every_sample_agrees_still_has_an_error():
    # Two QRS samples a context, all with the feature in one and none in the other: the
    # plug-in error is 0 in both, and the table printed 0.500 ± 0.000 from four samples.
    from disco.cli.report import rates_with_stderr
    from disco.distributions.base import TextSample
    from disco.scorers import BooleanScorer

    has_x = BooleanScorer(lambda sample, context: "x" in sample.text, name="has_x")
    drawn = [("a", [TextSample((1,), "x")] * 2), ("b", [TextSample((2,), "y")] * 2)]
    values, errors = rates_with_stderr([has_x], drawn)
    smoothed = (0 + 2) / (2 + 4)  # Agresti-Coull, the same in both contexts by symmetry
    assert values == [0.5]
    want = math.sqrt(2 * smoothed * (1 - smoothed) / 6) / 2
    assert errors[0] == pytest.approx(want, rel=8 * sys.float_info.epsilon)  # a few roundings
