"""The original disco one level deeper: its users' own distributions, samples, scorers, observers.

Each test does what code written against disco 1.1.x does with these objects (a distribution
over integers declaring ``sample(self, sampling_size, context)``, contexts that are ``None`` or
numbers, ``BaseDistribution(fn)``, ``distribution.network``, hand-built ``TextSample`` tensors,
``BaseTunerObserver`` subclasses) and checks the outcome against a value known in advance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from disco.distributions import BaseDistribution
from disco.distributions.single_context_distribution import SingleContextDistribution
from disco.scorers import BooleanScorer
from disco.scorers.exponential_scorer import ExponentialScorer
from disco.scorers.positive_scorer import PositiveScorer, Product

even = BooleanScorer(lambda x, _: x % 2 == 0)
divisible_by_3 = BooleanScorer(lambda x, _: x % 3 == 0)
twice = PositiveScorer(lambda x, _: 2.0)


class Uniform(BaseDistribution):
    """Uniform over ``low .. high - 1``, ``high`` being the context (64 when it is None).

    Its methods declare their arguments the other way round from this package's own
    (``sample(sampling_size, context)``, ``log_score(context, samples)``), and it records the
    contexts it was called with.
    """

    def __init__(self, low=0):
        self.low = low
        self.seen = set()

    def _high(self, context):
        self.seen.add(context)
        return 64 if context is None else max(self.low + 8, context)

    def log_score(self, context=None, samples=None):
        high = self._high(context)
        x = torch.as_tensor(samples)
        inside = (self.low <= x) & (x < high)
        log_q = torch.full(inside.shape, -math.log(high - self.low), dtype=torch.float64)
        return torch.where(inside, log_q, -math.inf)

    def sample(self, sampling_size=1, context=None):
        high = self._high(context)
        x = torch.randint(self.low, high, (sampling_size,))
        return x.tolist(), self.log_score(context, x.tolist())


class Categorical(torch.nn.Module):
    """A trainable distribution over ``0 .. k - 1``, also with its arguments the other way round."""

    def __init__(self, k=4):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(k, dtype=torch.float64))
        self.seen = set()

    def log_score(self, context=None, samples=None, grad=False):
        self.seen.add(context)
        with torch.set_grad_enabled(grad):
            return self.logits.log_softmax(0)[torch.as_tensor(samples)]

    def sample(self, sampling_size=1, context=None):
        self.seen.add(context)
        with torch.no_grad():
            x = torch.multinomial(self.logits.softmax(0), sampling_size, replacement=True)
        return x.tolist(), self.log_score(context, x.tolist())

    def even_mass(self):
        return float(self.logits.detach().softmax(0)[::2].sum())


# --- keyword calls and contexts of any type --------------------------------------------------


def test_qrs_and_imh_call_the_users_sample_by_keyword_with_a_none_context():
    from disco.samplers import IMHSampler
    from disco.samplers.quasi_rejection_sampler import QuasiRejectionSampler

    base = Uniform()
    target = base * even
    sampler = QuasiRejectionSampler(target, base, beta=1.0, seed=0)
    samples, log_scores = sampler.sample(sampling_size=64, context=None)
    assert samples and all(x % 2 == 0 and 0 <= x < 64 for x in samples)
    # the target is the base restricted to the evens: every ratio is 1, so QRS at beta = 1
    # accepts every even proposal and its log-scores are the proposal's, log(1/64)
    assert torch.equal(log_scores, torch.full((len(samples),), -math.log(64), dtype=torch.float64))
    assert sampler.acceptance_rate == pytest.approx(len(samples) / 64, abs=1e-12)
    chain = IMHSampler(target, base, seed=0).sample_n(32, None, progress=False)
    assert len(chain.samples) == 32 and all(x % 2 == 0 for x in chain.samples)
    # a number as the context: the base is uniform below it
    drawn, _ = QuasiRejectionSampler(target, base, seed=1).sample(context=10, sampling_size=50)
    assert drawn and set(drawn) <= {0, 2, 4, 6, 8}
    assert base.seen == {None, 10}


def test_the_estimator_runs_on_the_users_distribution_with_exact_values():
    from disco.samplers.quasi_rejection_sampler import QuasiRejectionSamplerEstimator

    base = Uniform()
    # P = 2 q on the whole support: every log-ratio is log 2, so whatever the draws,
    # AR(beta) = min(2, beta) / beta and p_beta = p for beta <= 2
    estimator = QuasiRejectionSamplerEstimator(
        base * twice, base, context=None, n_samples=200, sampling_size=64, progress=False, seed=0
    )
    assert estimator.acceptance_rate_at_beta(1.0) == pytest.approx(1.0, abs=1e-12)
    assert estimator.acceptance_rate_at_beta(8.0) == pytest.approx(0.25, abs=1e-12)
    assert estimator.divergence_at_beta(1.0) == pytest.approx(0.0, abs=1e-12)
    assert base.seen == {None}


def test_the_tuner_tunes_a_users_distribution_called_by_keyword():
    from disco.tuners import DPGTuner

    policy = Categorical()
    target = Uniform() * even  # uniform over the evens below 64: 0 and 2 among 0..3
    tuner = DPGTuner(
        policy,
        target,
        context=None,
        n_gradient_steps=5,
        n_samples_per_step=64,
        scoring_size=32,
        learning_rate=0.1,
    )
    before = policy.even_mass()
    history = tuner.tune()
    assert before == pytest.approx(0.5, abs=1e-15)
    assert len(history) == 5 and all(math.isfinite(h["loss"]) for h in history)
    # DPG moves mass to the target's support, the evens
    assert policy.even_mass() > 0.6
    assert policy.seen == {None}


def test_constrain_draws_from_the_users_distribution_with_a_none_context():
    base = Uniform()
    target = base.constrain(
        [even], [0.8], context_distribution=SingleContextDistribution(None), n_samples=4096
    )
    assert type(target) is Product and type(target.scorers[-1]) is ExponentialScorer
    assert target.fit_report.max_error < 1e-6
    # half the base's mass is even: the exact coefficient is log(0.8 / 0.2); the fit sees the
    # even fraction f of 4096 draws (standard error 1/128) and gives log(4 (1 - f) / f), whose
    # standard error is 4 * (1/128) = 1/32
    (coefficient,) = target.scorers[-1].coefficients.tolist()
    assert coefficient == pytest.approx(math.log(4.0), abs=5 / 32)
    assert base.seen == {None}


def test_single_context_distribution_takes_any_hashable_context():
    for context in (None, 3, 2.5, ("a", 1)):
        contexts, log_probs = SingleContextDistribution(context).sample(3)
        assert contexts == [context] * 3 and log_probs.tolist() == [0.0] * 3
    with pytest.raises(ValueError, match="not hashable"):
        SingleContextDistribution(["a"])


# --- argument checks the original makes ------------------------------------------------------


def test_constrain_wants_lists_as_the_original_did():
    base = Uniform()
    with pytest.raises(TypeError, match="features must be passed as a list"):
        base.constrain(even)
    with pytest.raises(TypeError, match="moments must be passed as a list"):
        base.constrain([even], 0.5)
    with pytest.raises(TypeError, match="2 features but 1 moments"):
        base.constrain([even, divisible_by_3], [0.5])
    with pytest.raises(ValueError, match="2 features but 1 moments"):
        base.constrain([even, divisible_by_3], [0.5])
    with pytest.raises(TypeError, match="coefficients must be passed as a list"):
        ExponentialScorer([even], 0.5)
    with pytest.raises(TypeError, match="1 features but 2 coefficients"):
        ExponentialScorer([even], [0.5, 1.0])
    assert ExponentialScorer([even], np.array([0.5])).coefficients.tolist() == [0.5]


def test_constrain_pointwise_on_moments_of_one_in_any_spelling():
    base = Uniform()
    target = base.constrain([even, divisible_by_3, even], [1, 1.0, "1"])
    assert [type(s) for s in target.scorers[1:]] == [BooleanScorer] * 3
    assert target.scorers[1] is even and target.scorers[2] is divisible_by_3
    log_scores = target.log_score(list(range(20)), None)
    kept = [x for x, s in zip(range(20), log_scores.tolist()) if s > -math.inf]
    assert kept == [0, 6, 12, 18]
    assert log_scores[0].item() == pytest.approx(-math.log(64), abs=1e-12)
    assert base.seen == {None}


# --- BaseDistribution(score_fn) --------------------------------------------------------------


def test_base_distribution_from_a_scoring_function_is_a_constrainable_scorer():
    import random

    bs = BooleanScorer(lambda x, c: True)
    distribution = BaseDistribution(lambda x, c: random.random())
    assert isinstance(distribution, BaseDistribution)
    assert type(distribution.constrain([bs]).scorers[-1]) is BooleanScorer
    for s in distribution.constrain([bs, bs, bs]).scorers[1:]:
        assert type(s) is BooleanScorer
    for s in BaseDistribution(lambda x, c: 1).constrain([bs, bs, bs], [1, 1.0, "1"]).scorers[1:]:
        assert type(s) is BooleanScorer

    shifted = BaseDistribution(lambda x, c: x + 1)
    assert shifted.log_score([0, 1, 3], None).tolist() == pytest.approx(
        [0.0, math.log(2), math.log(4)], abs=1e-15
    )
    assert shifted.score([0, 3], None).tolist() == [1.0, 4.0]
    target = shifted.constrain([even])
    assert target.scorers[0] is shifted and target.scorers[1] is even
    assert target.log_score([1, 2, 3], None).tolist() == pytest.approx(
        [-math.inf, math.log(3), -math.inf]
    )
    with pytest.raises(TypeError, match="cannot draw"):
        shifted.sample(None, 2)
    with pytest.raises(TypeError, match="not callable"):
        BaseDistribution(3)
    with pytest.raises(TypeError, match="abstract"):
        BaseDistribution()


# --- LMDistribution's attributes and TextSample token ids -------------------------------------


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from lm_fixtures import build_gpt2

    return build_gpt2(tmp_path_factory.mktemp("gpt2"), seed=1)


@pytest.fixture(scope="module")
def gpt2_own_pad_dir(tmp_path_factory):
    from lm_fixtures import build_gpt2

    return build_gpt2(tmp_path_factory.mktemp("gpt2pad"), seed=1, pad_is_eos=False)


def test_lm_distribution_has_the_originals_attributes(gpt2_dir):
    from disco.distributions import LMDistribution

    d = LMDistribution(network=str(gpt2_dir), nature="causal")
    assert d.network is d.model and d.network.config.model_type == "gpt2"
    assert d.tokenizer.eos_token_id == d.eos_token_ids[0]
    assert d.length == 40 and d.scorable is True and d.nature == "causal"
    assert d.params == {
        "top_k": 0,
        "top_p": 1.0,
        "typical_p": 1.0,
        "temperature": 1.0,
        "num_beams": 1,
    }
    assert not any(p.requires_grad for p in d.network.parameters())
    d.freeze(False)
    assert all(p.requires_grad for p in d.network.parameters())
    d.freeze()
    assert not any(p.requires_grad for p in d.network.parameters())
    copy = d.clone()
    assert copy.network is not d.network
    assert all(torch.equal(a, b) for a, b in zip(copy.network.parameters(), d.network.parameters()))
    # this package's log_score applies the sampling warps, so a warped model stays scorable
    warped = LMDistribution(str(gpt2_dir), temperature=0.5, top_k=3)
    assert warped.params["temperature"] == 0.5 and warped.params["top_k"] == 3
    assert warped.scorable is True
    with pytest.raises(AttributeError, match="has no attribute 'netwrok'"):
        _ = d.netwrok


def _reference_log_prob(d, context_ids, ids):
    """log p(ids | context) from the network's own forward pass (no warp)."""
    with torch.no_grad():
        logits = d.network(torch.tensor([context_ids + ids[:-1]])).logits[0].double()
    steps = logits.log_softmax(-1)[len(context_ids) - 1 :]
    return float(sum(steps[t, i] for t, i in enumerate(ids)))


@pytest.mark.parametrize("own_pad", [False, True], ids=["pad-is-eos", "own-pad"])
def test_hand_built_samples_score_as_tensors_lists_or_tuples(gpt2_dir, gpt2_own_pad_dir, own_pad):
    from disco.distributions import LMDistribution
    from disco.distributions.lm_distribution import TextSample

    d = LMDistribution(str(gpt2_own_pad_dir if own_pad else gpt2_dir))
    tokenizer = d.tokenizer
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert (eos == pad) is not own_pad
    texts = ["a b c", "a", "b c"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)["input_ids"]
    assert batch.shape == (3, 3) and batch[1, 1].item() == pad
    hand = [TextSample(row, text) for row, text in zip(batch, texts)]
    words = [tokenizer(t)["input_ids"] for t in texts]
    # a row padded with the EOS ends at its first EOS; an unpadded row, or one padded with a pad
    # that is not an EOS, has no EOS: it scores as a prefix (cut by the length cap)
    as_tuples = [tuple(w) + ((eos,) if len(w) < 3 and not own_pad else ()) for w in words]
    scores = d.log_score(hand, context="b")
    expected = [_reference_log_prob(d, tokenizer("b")["input_ids"], list(t)) for t in as_tuples]
    assert scores.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    for form in (list, tuple, torch.tensor):
        again = d.log_score([TextSample(form(t), "") for t in as_tuples], context="b")
        assert again.tolist() == pytest.approx(scores.tolist(), rel=1e-12, abs=1e-12)
    with_eos = d.log_score(
        [TextSample(torch.tensor([*w, eos]), t) for w, t in zip(words, texts)], "b"
    )
    assert with_eos.tolist() == pytest.approx(
        [_reference_log_prob(d, tokenizer("b")["input_ids"], [*w, eos]) for w in words],
        rel=1e-5,
        abs=1e-5,
    )


def test_enumerable_samples_score_as_tensors_too():
    from disco.distributions import EnumerableLM, TextSample

    lm = EnumerableLM(tokens=("a", "b"), max_length=3, seed=4)
    support, log_probs = lm.enumerate_support("")
    as_tensors = [TextSample(torch.tensor(s.token_ids), s.text) for s in support]
    assert torch.equal(lm.log_score(as_tensors, ""), log_probs)
    assert math.isclose(float(log_probs.exp().sum()), 1.0, rel_tol=1e-12)


def test_sampled_token_ids_answer_the_originals_tensor_operations(gpt2_dir):
    from disco.distributions import LMDistribution
    from disco.distributions.lm_distribution import TextSample

    torch.manual_seed(0)
    d = LMDistribution(str(gpt2_dir), length=6)
    pad = d.tokenizer.pad_token_id
    samples, log_scores = d.sample(context="a", sampling_size=48)
    lengths = [len(s.token_ids) for s in samples]
    assert len(set(lengths)) > 1  # a batch of mixed lengths
    # the ones that ended before the cap end with the EOS (the pad), and nothing follows it
    ended = [s for s in samples if len(s.token_ids) < 6]
    assert ended and all((s.token_ids[len(s.token_ids) - 1 :] == pad).all() for s in ended)
    assert all(s.token_ids[-1] == pad for s in ended)
    for s in samples:
        assert s.token_ids.shape == (len(s.token_ids),) and s.token_ids.numel() == len(s.token_ids)
        assert s.token_ids.tolist() == list(s.token_ids)
        assert torch.equal(torch.as_tensor(s.token_ids), s.token_ids.tensor())
        assert s.token_ids == tuple(s.token_ids) and hash(s.token_ids) == hash(tuple(s.token_ids))
    # the original's batch: rows padded with the pad (the EOS) to the longest
    batch = torch.nn.utils.rnn.pad_sequence(
        [s.token_ids.tensor() for s in samples], batch_first=True, padding_value=pad
    )
    padded = [TextSample(row, s.text) for row, s in zip(batch, samples)]
    assert batch.shape[1] == max(lengths)
    for p, n in zip(padded, lengths):
        assert (p.token_ids[n - 1 :] == pad).all() == (n < batch.shape[1] or p.token_ids[-1] == pad)
    rescored = d.log_score(padded, "a")
    assert rescored.tolist() == pytest.approx(log_scores.tolist(), rel=1e-5, abs=1e-5)


def test_bad_samples_are_named_for_what_is_wrong(gpt2_dir):
    from disco.distributions import LMDistribution
    from disco.distributions.lm_distribution import TextSample

    d = LMDistribution(str(gpt2_dir))
    batch = d.tokenizer(["a b", "a c"], return_tensors="pt")["input_ids"]
    with pytest.raises(
        ValueError, match=r"samples\[0\]\[0\]: its token_ids must be one sequence.*shape \(2, 2\)"
    ):
        d.log_score([TextSample(batch, "a b")], "a")
    with pytest.raises(ValueError, match=r"integer token ids; got dtype torch\.float32"):
        d.log_score([TextSample(batch[0].float(), "a b")], "a")
    with pytest.raises(ValueError, match=r"samples\[0\]\[1\] has token id 999 outside"):
        d.log_score([TextSample(batch[0], "a b"), TextSample(torch.tensor([999]), "")], "a")
    with pytest.raises(ValueError, match="its token_ids is a str"):
        d.log_score([TextSample("a b", "a b")], "a")
    with pytest.raises(ValueError, match="has no tokens"):
        d.log_score([TextSample(torch.tensor([], dtype=torch.long), "")], "a")
    with pytest.raises(ValueError, match=r"contexts\[0\] must be a string; got NoneType"):
        d.log_score([TextSample(batch[0], "a b")], None)


# --- tuner observers ---------------------------------------------------------------------------


def test_base_tuner_observer_receives_the_originals_events():
    from disco.distributions import EnumerableLM
    from disco.scorers import BooleanScorer as Boolean
    from disco.tuners import KLLoss, Tuner
    from disco.tuners.loggers.base import BaseTunerObserver

    class Recorder(BaseTunerObserver):
        def __init__(self, tuner):
            super().__init__(tuner)
            self.events = []

        def on_parameters_updated(self, params):
            self.events.append(("params", params))

        def on_step_idx_updated(self, s):
            self.events.append(("step", s))

        def on_ministep_idx_updated(self, s):
            self.events.append(("ministep", s))

        def on_metric_updated(self, name, value):
            self.events.append(("metric", name, value))

        def on_eval_samples_updated(self, context, samples, proposal, model, target):
            self.events.append(("eval", context, samples, proposal, model, target))

    base = EnumerableLM(tokens=("a", "b"), max_length=3, seed=4)
    has_a = Boolean(lambda s, c: "a" in s.text.split())
    target = base * ExponentialScorer([has_a], [1.0])
    policy = base.clone()
    tuner = Tuner(
        policy,
        target,
        loss=KLLoss(),
        n_gradient_steps=4,
        n_contexts_per_step=1,
        n_samples_per_context=16,
        scoring_size=8,
        features=[("has_a", has_a)],
        divergence_evaluation_interval=2,
        learning_rate=0.05,
    )
    assert (tuner.config.n_steps, tuner.config.samples_per_context) == (4, 16)
    assert (tuner.config.scoring_batch_size, tuner.config.proposal_update_interval) == (8, 2)
    with Recorder(tuner) as observer:
        history = tuner.tune()
    events = observer.events
    assert events[0][0] == "params"
    assert events[0][1]["n_gradient_steps"] == 4 == events[0][1]["n_steps"]
    assert [e[1] for e in events if e[0] == "step"] == [0, 1, 2, 3]
    assert [e[1] for e in events if e[0] == "ministep"] == [0, 1] * 4
    evals = [e for e in events if e[0] == "eval"]
    assert len(evals) == 8
    for _, context, samples, proposal, model, target_scores in evals:
        assert context == "" and len(samples) == 8
        assert torch.equal(target_scores, target.log_score(samples, ""))
        # online: the policy scores its own draws before the step's update
        torch.testing.assert_close(model, proposal, rtol=1e-12, atol=1e-12)
    metrics = [(e[1], e[2]) for e in events if e[0] == "metric"]
    for step in history:
        for name, value in step.items():
            assert (name, value) in metrics
    named = {}
    for name, value in metrics:
        named.setdefault(name, []).append(value)
    for original, ours in (
        ("kl_target_model", "kl_target_policy"),
        ("has_a_target", "moment/has_a"),
    ):
        expected = [np.mean([h[ours] for h in history[k : k + 2]]) for k in (0, 2)]
        assert named[original] == pytest.approx(expected, rel=1e-12)
    assert len(named["tv_target_model"]) == len(named["js_target_model"]) == 2
    # the names both share come once a step
    assert named["kl_target_proposal"] == [h["kl_target_proposal"] for h in history]
    has_a_rates = [
        np.mean([float("a" in s.text.split()) for e in evals[4 * k : 4 * k + 4] for s in e[2]])
        for k in (0, 1)
    ]
    assert named["has_a_proposal"] == pytest.approx(has_a_rates, rel=1e-12)
    assert named["z"] == pytest.approx([math.exp(h["log_z"]) for h in history], rel=1e-12)


def test_logger_list_passes_batches_to_the_loggers_that_look_at_them():
    from disco.tuners.loggers import Logger, LoggerList

    seen = []

    class Batches(Logger):
        def log_batch(self, step, context, samples, log_scores):
            seen.append((step, context, list(samples), log_scores["target"].tolist()))

    class Plain:  # a logger written to the interface before log_batch
        def start(self, config):
            pass

        def log(self, step, metrics):
            pass

        def close(self):
            pass

    LoggerList([Batches(), Plain(), Logger()]).log_batch(
        3, None, [1, 2], {"target": torch.tensor([0.0, -math.inf])}
    )
    assert seen == [(3, None, [1, 2], [0.0, -math.inf])]


def test_the_generic_tuner_takes_the_originals_names_with_a_none_context():
    from disco.tuners import KLLoss, Tuner

    policy = Categorical()
    tuner = Tuner(
        policy,
        Uniform() * even,
        loss=KLLoss(),
        context=None,
        n_gradient_steps=1,
        n_samples_per_context=8,
        scoring_size=4,
    )
    assert tuner.context is None and tuner.config.scoring_batch_size == 4
    assert math.isfinite(tuner.tune()[0]["loss"]) and policy.seen == {None}
