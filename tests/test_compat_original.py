"""The original disco's documented usage (its README and tutorials 1-5), run call by call.

Each test ports one source literally: the same imports, calls, keywords and unpacking, with
sizes reduced. Hub models are replaced by tiny models built on the spot: ``LMDistribution()``
(the original's default, GPT-2) loads a tiny GPT-2 whose vocabulary holds the tutorials' words,
and the T5 of tutorial 4 is a tiny T5 saved to a folder whose path replaces "t5-base". The
CNN/Dailymail dataset is a three-row JSON-lines file and spaCy's organisation finder a word list.
Each result is checked, not just produced.
"""

# The notebooks' own code is kept as written: its ``True if ... else False``, its typographic
# apostrophe and its unpacked-but-unused log-scores.
# ruff: noqa: SIM210, RUF001, RUF059

from __future__ import annotations

import importlib.util
import json
import math
import re

import numpy as np
import pytest
import torch

from conftest import assert_log_probs_close, require_extra
from lm_fixtures import build_gpt2, build_t5

WORDS = (
    "It",
    "was",
    "a",
    "cold",
    "and",
    "stormy",
    "night",
    "amazing",
    "rain",
    "the",
    "day",
    ".",
    "!",
)
INCIPIT = "It was a cold and stormy night"


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return build_gpt2(tmp_path_factory.mktemp("gpt2"), words=WORDS, seed=1)


@pytest.fixture(autouse=True)
def original_setting(gpt2_dir, tmp_path, monkeypatch):
    """``LMDistribution()`` is the tiny GPT-2; the notebooks' data/incipits.txt is in the cwd."""
    import disco.distributions.lm as lm

    monkeypatch.setattr(lm, "_default_model", lambda: str(gpt2_dir))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "incipits.txt").write_text(
        f"{INCIPIT}\nIt was the day\nIt was a stormy day\n", encoding="utf-8"
    )
    torch.manual_seed(0)


def rate(predicate, samples, context=""):
    return sum(bool(predicate(s, context)) for s in samples) / len(samples)


def test_readme(tmp_path, monkeypatch):
    # Distributions
    from disco.distributions import LMDistribution

    distribution = LMDistribution()

    incipit = "It was a cold and stormy night"
    samples, log_scores = distribution.sample(context=incipit)

    rescored = distribution.log_score(samples, context=incipit)
    assert len(samples) == 32 == log_scores.numel()
    assert_log_probs_close(rescored, log_scores, distribution)
    assert all(hasattr(s, "text") and hasattr(s, "token_ids") for s in samples)

    # Features
    from disco.distributions.lm_distribution import TextSample
    from disco.scorers import BooleanScorer, ExponentialScorer, PositiveScorer, Scorer

    sequence_length = Scorer(lambda s, c: s.text.index("<|endoftext|>"))
    # This package's TextSample.text has no special tokens (the EOS is in token_ids), so the
    # README's EOS search is shown on a sample that carries the marker in its text.
    assert sequence_length.score([TextSample([], "abc<|endoftext|>")], "").tolist() == [3.0]

    amazing = BooleanScorer(lambda s, c: "amazing" in s.text)
    assert amazing.score(samples, incipit).tolist() == [float("amazing" in s.text) for s in samples]
    assert isinstance(amazing, PositiveScorer)

    # Expressing preferences through an EBM
    base = LMDistribution()
    target_ebm = base.constrain([amazing], [1])
    assert target_ebm.log_score(samples, incipit).tolist() == pytest.approx(
        (base.log_score(samples, incipit) + amazing.log_score(samples, incipit)).tolist()
    )
    target_ebm = base.constrain([amazing], [1 / 2], n_samples=2**8)
    assert target_ebm.fit_report.max_error < 1e-6

    # Approximating the target EBM
    from disco.tuners import CDPGTuner, DPGTuner, FCDPGTuner, JSLoss, ReverseKLLoss
    from disco.tuners.loggers import ConsoleLogger, JSONLogger, NeptuneLogger, WandBLogger

    target_ebm = base.constrain([amazing], [1])

    model = LMDistribution(freeze=False)
    incipit = "It was a cold and stormy night"

    tuner = DPGTuner(
        model,
        target_ebm,
        context=incipit,
        n_gradient_steps=2,
        n_samples_per_step=2**4,
        scoring_size=2**4,
        sampling_size=2**4,
        features=[("amazing", amazing)],
        track_divergence_from_base=True,
    )
    assert (tuner.config.n_steps, tuner.config.samples_per_context) == (2, 16)
    assert tuner.context == incipit and tuner.base is base

    # Logging: attached by construction
    console_logger = ConsoleLogger(tuner)
    monkeypatch.setenv("DISCO_SAVE_PATH", str(tmp_path / "logs"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    (tmp_path / "wb").mkdir()
    monkeypatch.setenv("NEPTUNE_MODE", "offline")
    project = "example_project"
    name = "run_01"
    json_logger = JSONLogger(tuner, project, name)
    loggers = [console_logger, json_logger]
    wandb = importlib.util.find_spec("wandb") is not None  # the 'wandb' extra
    if wandb:
        import wandb as wandb_module

        wandb_module.teardown()  # no settings left by an earlier test's run in this process
        loggers.append(WandBLogger(tuner, project, name))
    else:
        with pytest.raises(ImportError, match="wandb"):
            WandBLogger(tuner, project, name)
    neptune = _neptune_installed()
    if neptune:
        neptune_logger = NeptuneLogger(tuner, project, name)
        loggers.append(neptune_logger)
    assert tuner.loggers == loggers

    history = tuner.tune()
    assert len(history) == 2
    for step in history:
        assert math.isfinite(step["loss"]) and math.isfinite(step["kl_target_proposal"])
        assert 0.0 <= step["moment/amazing"] <= 1.0
        assert step["kl_policy_base"] >= -0.5  # an importance-sampling estimate of KL >= 0
    lines = (tmp_path / "logs" / project / "run_01.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    if wandb:
        assert list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
        wandb_module.teardown()
    if neptune:
        logged = "".join(p.read_text() for p in tmp_path.glob(".neptune/offline/*/data-*.log"))
        assert '["metrics", "moment", "amazing"]' in logged and '"run_01"' in logged

    samples, log_scores = model.sample(context=incipit)
    for s in samples:
        assert isinstance(incipit + s.text, str)
    assert torch.isfinite(log_scores).all()

    # Controlled conditional generation
    from disco.distributions import ContextDistribution

    model = LMDistribution(freeze=False)
    tuner = CDPGTuner(
        model,
        target_ebm,
        context_distribution=ContextDistribution("data/incipits.txt"),
        context_sampling_size=2**1,
        n_gradient_steps=1,
        n_samples_per_step=2**3,
    )
    assert tuner.config.contexts_per_step == 2
    assert math.isfinite(tuner.tune()[0]["loss"])

    tuner = FCDPGTuner(
        model,
        target_ebm,
        loss=JSLoss(),
        context_distribution=ContextDistribution("data/incipits.txt"),
        context_sampling_size=2**1,
        n_gradient_steps=1,
        n_samples_per_step=2**3,
    )
    assert isinstance(tuner.loss, JSLoss) and math.isfinite(tuner.tune()[0]["loss"])

    # RLHF: ExponentialScorer over a bare reward function, FCDPGTuner without contexts
    beta = 2.0

    def r(s, c):
        return s.text.split().count("amazing")

    target_ebm = base * ExponentialScorer([r], [1.0 / beta])
    model = base.clone()
    model.freeze(False)
    tuner = FCDPGTuner(model, target_ebm, loss=ReverseKLLoss(), n_gradient_steps=1)
    assert tuner.context == "" and tuner.context_distribution is None
    assert math.isfinite(tuner.tune(1)[0]["loss"])
    torch.testing.assert_close(
        target_ebm.log_score(samples, incipit),
        base.log_score(samples, incipit)
        + torch.tensor([r(s, incipit) / beta for s in samples], dtype=torch.float64),
    )

    # Monte-Carlo sampling (QRS)
    from disco.samplers import QuasiRejectionSampler

    target_ebm = base.constrain([amazing], [1 / 2], n_samples=2**8)
    model = LMDistribution(freeze=False)
    tuner = DPGTuner(model, target_ebm, n_gradient_steps=1, n_samples_per_step=2**3)
    tuner.tune()

    beta = 0.5
    sampler = QuasiRejectionSampler(target_ebm, model, beta=beta)
    samples, log_scores = sampler.sample(sampling_size=2**7)
    assert len(samples) == log_scores.numel()
    assert sampler.get_acceptance_rate() == len(samples) / 2**7
    samples, log_scores = sampler.sample(context=incipit, sampling_size=2**7)
    assert_log_probs_close(log_scores, model.log_score(samples, incipit), model)


def _neptune_installed():
    try:
        import importlib.util

        return importlib.util.find_spec("neptune") is not None
    except ValueError:
        return False


def test_tutorial_1_quick_introduction():
    from disco.distributions import LMDistribution

    distribution = LMDistribution()
    incipit = "It was a cold and stormy night"
    samples, log_scores = distribution.sample(context=incipit)
    assert distribution.log_score(samples, context=incipit).shape == log_scores.shape == (32,)

    from disco.scorers.scorer import Scorer

    sequence_length = Scorer(lambda s, c: s.text.index("<|endoftext|>"))
    assert sequence_length.name == "<lambda>"

    from disco.scorers.boolean_scorer import BooleanScorer

    amazing = BooleanScorer(lambda s, c: "amazing" in s.text)

    from disco.distributions.lm_distribution import LMDistribution

    base = LMDistribution()
    ebm = base.constrain([amazing], [1])
    assert [type(f).__name__ for f in ebm.factors] == ["LMDistribution", "BooleanScorer"]
    ebm = base.constrain([amazing])  # would also work
    assert ebm.scorers[1] is amazing
    ebm = base * amazing  # as well, using a product notation
    assert ebm.scorers == [base, amazing]

    ebm = base.constrain([amazing], [1 / 2], n_samples=2**8)
    assert ebm.fit_report.moments[0] == pytest.approx(0.5, abs=1e-6)

    from disco.tuners.dpg_tuner import DPGTuner

    target_ebm = base.constrain([amazing], [1])
    model = LMDistribution(freeze=False)
    tuner = DPGTuner(
        model, target_ebm, context=incipit, n_gradient_steps=2, n_samples_per_context=2**4
    )
    history = tuner.tune()
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)

    samples, log_scores = model.sample(context=incipit)
    assert len(samples) == 32

    from disco.tuners.loggers.console import ConsoleLogger

    console_logger = ConsoleLogger(tuner)
    assert tuner.loggers == [console_logger]

    from disco.tuners.loggers.json import JSONLogger
    from disco.tuners.loggers.wandb import WandBLogger

    assert JSONLogger.__name__ == "JSONLogger" and WandBLogger.__name__ == "WandBLogger"
    if _neptune_installed():
        from disco.tuners.loggers.neptune import NeptuneLogger

        assert NeptuneLogger.__name__ == "NeptuneLogger"

    from disco.distributions.context_distribution import ContextDistribution
    from disco.tuners.cdpg_tuner import CDPGTuner

    model = LMDistribution(freeze=False)
    tuner = CDPGTuner(
        model,
        target_ebm,
        n_gradient_steps=1,  # use a much higher value for actual tuning
        context_distribution=ContextDistribution("data/incipits.txt"),
        context_sampling_size=2**1,
        n_samples_per_step=2**3,
    )
    assert math.isfinite(tuner.tune()[0]["loss"])

    from disco.samplers.quasi_rejection_sampler import QuasiRejectionSampler

    beta = 0.5
    sampler = QuasiRejectionSampler(target_ebm, model, beta=beta)
    samples, log_scores = sampler.sample(sampling_size=2**6)
    assert all("amazing" in s.text for s in samples)  # the pointwise target gives 0 elsewhere
    assert len(samples) == log_scores.numel()


def test_tutorial_2_expressing_preferences():
    from disco.scorers import BooleanScorer

    amazing_scorer = BooleanScorer(lambda s, c: "amazing" in s.text)

    from disco.distributions.lm_distribution import TextSample

    samples = [
        TextSample(list(), "This is quite amazing."),
        TextSample(list(), "This is amazingly relevant."),
        TextSample(list(), "This is the toolkit at work."),
    ]
    assert amazing_scorer.log_score(samples, "").tolist() == [0.0, 0.0, -math.inf]

    def is_amazing(s, c):
        return bool(re.search(r"\bamazing\b", s.text))

    amazing_scorer = BooleanScorer(is_amazing)
    assert amazing_scorer.log_score(samples, "").tolist() == [0.0, -math.inf, -math.inf]

    from disco.distributions import LMDistribution

    base = LMDistribution()
    target = base * amazing_scorer
    target = base.constrain([amazing_scorer], [1 / 2], n_samples=2**8)
    assert target.fit_report.max_error < 1e-6

    from disco.distributions.single_context_distribution import SingleContextDistribution

    incipit = "It was a cold and stormy night"
    target = base.constrain(
        [amazing_scorer],
        [1 / 2],
        n_samples=2**8,
        context_distribution=SingleContextDistribution(incipit),
    )
    # one context: all 256 samples in one group, as with context=incipit
    assert target.fit_report.n_samples == 2**8
    torch.manual_seed(3)
    direct = base.constrain([amazing_scorer], [1 / 2], n_samples=2**8, context=incipit)
    torch.manual_seed(3)
    via_distribution = base.constrain(
        [amazing_scorer],
        [1 / 2],
        n_samples=2**8,
        context_distribution=SingleContextDistribution(incipit),
    )
    np.testing.assert_array_equal(
        direct.fit_report.coefficients, via_distribution.fit_report.coefficients
    )

    from disco.distributions.context_distribution import ContextDistribution

    target = base.constrain(
        [amazing_scorer],
        [1 / 2],
        n_samples=2**8,
        context_distribution=ContextDistribution("data/incipits.txt"),
        context_sampling_size=2**2,
    )
    target = base.constrain(
        [amazing_scorer],
        [1 / 2],
        n_samples=2**8,
        context_distribution=ContextDistribution("data/incipits.txt"),
        n_contexts_per_step=2**2,
    )
    coefficients = target.scorers[1].coefficients
    assert coefficients.shape == (1,)
    assert coefficients.tolist() == pytest.approx(target.fit_report.coefficients.tolist())

    from disco.scorers.exponential_scorer import ExponentialScorer

    target = base * ExponentialScorer([is_amazing], [6])
    some, _ = base.sample(incipit, 8)
    torch.testing.assert_close(
        target.log_score(some, incipit),
        base.log_score(some, incipit) + 6 * amazing_scorer.score(some, incipit),
    )

    def is_rainy(s, c):
        return bool(re.search(r"\brain\b", s.text))

    rainy_scorer = BooleanScorer(is_rainy)
    target = base.constrain(
        [amazing_scorer, rainy_scorer],
        [1 / 2, 1 / 3],
        n_samples=2**9,
        context_distribution=SingleContextDistribution(incipit),
    )
    np.testing.assert_allclose(target.fit_report.moments, [1 / 2, 1 / 3], atol=1e-6)

    def extract_words(text):
        return re.findall(r"\w+", text)

    def count_sentences(text):
        if text == "":
            return 0
        marks = set(".!?")
        rw_lngth = len([letter for letter in text if letter in marks])
        return rw_lngth if rw_lngth > 0 else 1

    def count_syllables(word):
        vowels = set("aeiou")
        return len([letter for letter in word if letter.lower() in vowels])

    def fog(text):
        low, high = 6, 17
        if text == "":
            return low
        wrds = extract_words(text)
        n_wrds = len(wrds)
        if n_wrds == 0:  # (a sample of punctuation only; the notebook's GPT-2 never gave one)
            return low
        n_cmplx_wrds = len([w for w in wrds if count_syllables(w) > 3])
        n_sntncs = count_sentences(text)
        rw_scr = round(0.4 * (n_wrds / n_sntncs + 100 * n_cmplx_wrds / n_wrds))
        return min(high, max(low, rw_scr))

    star_wars = """It is a period of civil war. Rebel spaceships,
striking from a hidden base, have won their first victory against
the evil Galactic Empire. During the battle, Rebel spies managed
to steal secret plans to the Empire’s ultimate weapon, the DEATH STAR,
an armoured space station with enough power to destroy an entire planet."""
    assert fog(star_wars) == 9

    target = base * BooleanScorer(lambda s, c: True if fog(s.text) < 13 else False)

    def easy(s, _):
        """A FOG index lower than 13: readable without college education."""
        return True if fog(s.text) < 13 else False

    target = base * BooleanScorer(easy)

    proposal = LMDistribution()
    samples, _ = proposal.sample(context=incipit)
    scores = target.log_score(samples, context=incipit)
    hard = torch.tensor([not easy(s, None) for s in samples])
    assert torch.isneginf(scores[hard]).all() and torch.isfinite(scores[~hard]).all()

    from disco.scorers.positive_scorer import PositiveScorer

    mean_fog = float(np.mean([fog(s.text) for s in samples]))
    wanted = round(mean_fog) + 1  # the notebook asks for 12 on GPT-2's texts
    target = base.constrain(
        [PositiveScorer(lambda s, c: fog(s.text))],
        [wanted],
        context_distribution=SingleContextDistribution(incipit),
        n_samples=2**8,
    )
    assert target.fit_report.moments[0] == pytest.approx(wanted, abs=1e-6)
    target = base.constrain(
        [PositiveScorer(lambda s, c: fog(s.text))],
        [wanted],
        n_samples=2**8,
        context_distribution=ContextDistribution("data/incipits.txt"),
        n_contexts_per_step=2**2,
    )

    class FogScorer(PositiveScorer):
        """FOG scoring class (tutorial 2's subclass, written the original's way)."""

        def fog(self, sample, _):
            return fog(sample.text)

        def __init__(self):
            self.scoring_function = self._broadcast(self.fog)

        def log_score(self, samples, context):
            return torch.log(self.score(samples, context))

        def score(self, samples, context):
            return torch.tensor(self.scoring_function(samples, context))

    torch.manual_seed(5)
    target = base.constrain(
        [FogScorer()],
        [wanted],
        n_samples=2**8,
        context_distribution=ContextDistribution("data/incipits.txt"),
        n_contexts_per_step=2**2,
    )
    assert target.fit_report.features == ["FogScorer"]
    assert target.fit_report.moments[0] == pytest.approx(wanted, abs=1e-6)
    assert FogScorer().score(samples, incipit).tolist() == [fog(s.text) for s in samples]


def test_tutorial_3_tuning_dpg():
    from disco.scorers import BooleanScorer

    def is_amazing(s, c):
        return bool(re.search(r"\bamazing\b", s.text))

    amazing_scorer = BooleanScorer(is_amazing)

    from disco.distributions import LMDistribution

    base = LMDistribution()
    pw_target = base * amazing_scorer
    assert pw_target.scorers[1] is amazing_scorer

    from disco.distributions.single_context_distribution import SingleContextDistribution

    incipit = "It was a cold and stormy night"
    dc_target = base.constrain(
        [amazing_scorer],
        [1 / 2],
        n_samples=2**8,
        context_distribution=SingleContextDistribution(incipit),
    )

    model = LMDistribution(freeze=False)

    from disco.samplers import AccumulationSampler

    sampler = AccumulationSampler(model, total_size=2**6)
    samples, log_scores = sampler.sample(context=incipit)
    _ = None
    before = sum([is_amazing(s, _) for s in samples]) / len(samples)
    assert len(samples) == 64 == log_scores.numel() and 0 < before < 1

    # Offline: samples come from a proposal, replaced by the model when it gets closer
    proposal = LMDistribution()

    from disco.tuners import DPGTuner

    tuner = DPGTuner(
        model,
        dc_target,
        proposal,
        context=incipit,
        n_gradient_steps=2,
        n_samples_per_context=2**5,
        sampling_size=2**4,
        scoring_size=2**4,
        divergence_evaluation_interval=1,
        n_kl_samples=2**6,
    )
    assert tuner.proposal is proposal and tuner.config.proposal == "offline"
    assert tuner.config.proposal_update_interval == 1
    assert (tuner.config.sampling_batch_size, tuner.config.scoring_batch_size) == (16, 16)

    from disco.tuners.loggers.console import ConsoleLogger

    ConsoleLogger(tuner)
    history = tuner.tune()
    assert len(history) == 2 and len(tuner.loggers) == 1
    for step in history:
        assert math.isfinite(step["loss"]) and step["proposal_updated"] in (0.0, 1.0)

    sampler = AccumulationSampler(model, total_size=2**6)
    samples, log_scores = sampler.sample(context=incipit)
    assert 0 <= sum([is_amazing(s, _) for s in samples]) / len(samples) <= 1

    # Online
    model = LMDistribution(freeze=False)
    model.to("cpu")
    dc_target.scorers[0].to("cpu")
    tuner = DPGTuner(
        model,
        dc_target,
        context=incipit,
        n_gradient_steps=2,
        n_samples_per_context=2**5,
        sampling_size=2**4,
        scoring_size=2**4,
        divergence_evaluation_interval=1,
    )
    assert tuner.proposal is model
    history = tuner.tune()
    assert all(math.isfinite(h["loss"]) for h in history)


def test_tutorial_4_conditional_tuning(tmp_path, monkeypatch):
    t5_base = str(build_t5(tmp_path / "t5", words=("the", "Acme", "Globex", "said", "."), seed=2))
    cnn_dailymail = tmp_path / "cnn_dailymail.jsonl"
    cnn_dailymail.write_text(
        "".join(
            json.dumps({"article": a}) + "\n"
            for a in ("Acme said the", "Globex said .", "the Acme the Globex")
        ),
        encoding="utf-8",
    )
    known_organizations = {"Acme", "Globex"}

    def organizations(text):
        """The set of organisations in a text (spaCy's NER in the notebook; a word list here)."""
        return {w for w in text.split() if w in known_organizations}

    from disco.scorers.boolean_scorer import BooleanScorer

    organization_scorer = BooleanScorer(
        lambda s, c: all({o in organizations(c) for o in organizations(s.text)})
    )

    from disco.distributions import LMDistribution

    base = LMDistribution(network=t5_base, tokenizer=t5_base, nature="seq2seq")
    assert base.is_seq2seq
    target = base * organization_scorer

    from disco.distributions.dataset_context_distribution import DatasetContextDistribution

    dataset = DatasetContextDistribution(
        dataset=str(cnn_dailymail), subset="1.0.0", split="train", key="article"
    )
    articles, log_scores = dataset.sample(sampling_size=2**3)
    assert len(articles) == 8 and torch.allclose(
        log_scores, torch.full((8,), -math.log(3.0), dtype=torch.float64)
    )
    assert organizations(articles[0]) <= known_organizations

    model = LMDistribution(
        network=t5_base, tokenizer=t5_base, nature="seq2seq", length=8, freeze=False
    )

    from disco.tuners import CDPGTuner

    tuner = CDPGTuner(
        model,
        target,
        context_distribution=DatasetContextDistribution(
            dataset=str(cnn_dailymail),
            subset="1.0.0",
            split="train",
            key="article",
            prefix="summarize: ",
        ),
        n_gradient_steps=2,
        n_samples_per_step=2**4,
        sampling_size=2**3,
        scoring_size=2**3,
    )

    from disco.tuners.loggers.console import ConsoleLogger

    ConsoleLogger(tuner)
    if _neptune_installed():  # the notebook's commented-out cell, offline
        from disco.tuners.loggers.neptune import NeptuneLogger

        monkeypatch.setenv("NEPTUNE_MODE", "offline")
        NEPTUNE_API_TOKEN = None
        NeptuneLogger(tuner, project="disco", api_token=NEPTUNE_API_TOKEN)
        assert len(tuner.loggers) == 2
    history = tuner.tune()
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)


def test_tutorial_5_qrs_sampling():
    from disco.distributions import LMDistribution
    from disco.distributions.single_context_distribution import SingleContextDistribution
    from disco.scorers import BooleanScorer

    def is_amazing(s, c):
        return bool(re.search(r"\bamazing\b", s.text))

    amazing_scorer = BooleanScorer(is_amazing)
    base = LMDistribution()

    incipit = "It was a cold and stormy night"

    target = base.constrain(
        [amazing_scorer],
        [1 / 2],
        n_samples=2**9,
        context_distribution=SingleContextDistribution(incipit),
    )

    proposal = LMDistribution()
    coefficients = target.scorers[1].coefficients
    assert coefficients.dtype == torch.float64 and coefficients.shape == (1,)

    from disco.samplers import QuasiRejectionSampler

    # The notebook's beta=400 covers GPT-2's max P/q; here max P/q is exp(lambda)/Z.
    beta = float(torch.exp(coefficients.abs()).item()) * 4
    sampler = QuasiRejectionSampler(target, proposal, beta=beta)

    samples, log_scores = sampler.sample(sampling_size=2**10, context=incipit)
    _ = None
    accepted = sum([is_amazing(s, _) for s in samples]) / len(samples)
    # beta >= max P/q: QRS samples the target exactly, whose rate is 1/2 (within 4 sd)
    assert accepted == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / len(samples)) + 0.05)
    assert sampler.get_acceptance_rate() == len(samples) / 2**10


def test_estimator_metrics_losses_and_pipeline_scorer(classifier_dir):
    """The original's other documented names: the estimator, disco.metrics, loss spellings."""
    from disco.distributions import EnumerableLM
    from disco.metrics import JS, KL, TV
    from disco.samplers.quasi_rejection_sampler import QuasiRejectionSamplerEstimator
    from disco.scorers import BooleanScorer
    from disco.scorers.pipeline_scorer import PipelineScorer
    from disco.tuners.losses import (
        ChiSquaredLoss,
        ChiSquareLoss,
        ReverseChiSquaredLoss,
        ReverseChiSquareLoss,
    )

    assert ChiSquaredLoss is ChiSquareLoss and ReverseChiSquaredLoss is ReverseChiSquareLoss

    base = EnumerableLM(tokens=("good", "bad"), max_length=2, seed=0)
    good = BooleanScorer(lambda s, c: "good" in s.text)
    target = base * good
    support, log_a = base.enumerate_support()
    log_p = target.log_score(support)
    z = float(torch.exp(log_p).sum())
    from disco import exact

    # the original's argument order: (target log-scores, model log-probs, Z, proposal log-probs)
    weighted = torch.full_like(log_a, -math.log(len(support)))  # a uniform proposal
    for metric, truth in (
        (KL, exact.kl(log_p.numpy() - math.log(z), log_a.numpy())),
        (TV, exact.tv(log_p.numpy() - math.log(z), log_a.numpy())),
        (JS, exact.js(log_p.numpy() - math.log(z), log_a.numpy())),
    ):
        # every point of the support once, from a uniform proposal: the estimate is exact
        value = metric.divergence(log_p, log_a, torch.tensor(z), weighted)
        assert isinstance(value, torch.Tensor) and float(value) == pytest.approx(truth, rel=1e-6)
    # the overflow past log-ratio 88 the original hit is gone
    big = torch.tensor([100.0, 99.0])
    value = KL.divergence(big, torch.log(torch.tensor([0.5, 0.5])), math.exp(99.5))
    assert math.isfinite(float(value))

    estimator = QuasiRejectionSamplerEstimator(target, base, n_estimation_samples=2**10)
    rate = estimator.acceptance_rate_at_beta(1.0)
    assert rate == pytest.approx(exact.qrs_acceptance_rate(log_p, log_a, 1.0), abs=0.06)
    assert estimator.divergence_at_beta(10.0, KL) == pytest.approx(0.0, abs=1e-9)
    assert estimator.feature_moment_at_beta(10.0, good) == pytest.approx(1.0)

    scorer = PipelineScorer(
        "POSITIVE", {"task": "sentiment-analysis", "model": str(classifier_dir)}
    )
    texts = [s for s in support]
    probs = scorer.score(texts)
    assert ((probs > 0) & (probs < 1)).all()
    colder = PipelineScorer(
        "POSITIVE", {"task": "sentiment-analysis", "model": str(classifier_dir)}, 2.0
    )
    torch.testing.assert_close(colder.log_score(texts), scorer.log_score(texts) / 2)


def test_mlflow_logger_original_form(tmp_path, monkeypatch):
    require_extra("mlflow")
    from mlflow.tracking import MlflowClient

    from disco.distributions import EnumerableLM
    from disco.scorers import BooleanScorer
    from disco.tuners.dpg_tuner import DPGTuner
    from disco.tuners.loggers.mlflow import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    base = EnumerableLM(tokens=("good", "bad"), max_length=2, seed=0)
    target = base.constrain([BooleanScorer(lambda s, c: "good" in s.text)], [0.7], n_samples=256)
    tuner = DPGTuner(base.clone(), target, n_gradient_steps=2, n_samples_per_context=8)
    logger = MLFlowLogger(tuner, "example_project", "run_01")
    tuner.tune()
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    run = client.get_run(logger.run_id)
    assert run.info.run_name == "run_01" and run.info.status == "FINISHED"
    assert len(client.get_metric_history(logger.run_id, "loss")) == 2


def test_original_spellings_are_checked_like_native_ones():
    """An alias does not open a back door: doubled, unknown or misplaced settings are errors."""
    from disco.distributions import EnumerableLM
    from disco.scorers import BooleanScorer
    from disco.tuners import DPGTuner, KLLoss

    base = EnumerableLM(tokens=("good", "bad"), max_length=2, seed=0)
    good = BooleanScorer(lambda s, c: "good" in s.text)
    target = base * good
    with pytest.raises(ValueError, match="'n_gradient_steps' and 'n_steps' both set 'n_steps'"):
        DPGTuner(base.clone(), target, n_gradient_steps=2, n_steps=3)
    with pytest.raises(ValueError, match="unknown tuner setting"):
        DPGTuner(base.clone(), target, n_gradient_step=2)
    with pytest.raises(TypeError, match="given both by position and by keyword"):
        DPGTuner(base.clone(), target, KLLoss(), loss=KLLoss())
    with pytest.raises(ValueError, match="track_metrics"):
        DPGTuner(base.clone(), target, track_metrics=["kl", "chi2"])
    with pytest.raises(TypeError, match="unexpected keyword"):
        base.constrain([good], [0.5], n_context_per_step=4)
    with pytest.raises(ValueError, match="either context or context_distribution"):
        from disco.distributions import SingleContextDistribution

        DPGTuner(base.clone(), target, context="", context_distribution=SingleContextDistribution())
    # the native forms are unchanged: the third positional of DPGTuner is still the context
    assert DPGTuner(base.clone(), target, "a context").context == "a context"
    assert isinstance(DPGTuner(base.clone(), target, KLLoss()).loss, KLLoss)


def test_neptune_logger_offline(tmp_path, monkeypatch):
    require_extra("neptune")
    from disco.tuners.loggers import NeptuneLogger

    monkeypatch.chdir(tmp_path)
    logger = NeptuneLogger(project="example/project", name="native")
    logger.start({"n_steps": 2, "features": ["a", "b"], "checkpoint_dir": None})
    logger.log(1, {"loss": 0.5, "moment/x": 0.25})
    logger.log_samples(1, [{"text": "a sample", "score": 1.0}])
    logger.close()
    logger.close()  # twice is fine
    logged = "".join(p.read_text() for p in tmp_path.glob(".neptune/offline/*/data-*.log"))
    assert '["metrics", "loss"]' in logged and '["metrics", "moment", "x"]' in logged
    assert '"a sample"' in logged and '"native"' in logged
    with pytest.raises(RuntimeError, match="call start"):
        logger.log(2, {"loss": 1.0})


def test_neptune_logger_names_the_extra_when_missing(monkeypatch):
    import sys

    from disco.tuners.loggers import NeptuneLogger

    monkeypatch.setitem(sys.modules, "neptune", None)
    with pytest.raises(ImportError, match=r"disco-control\[neptune\]"):
        NeptuneLogger()
