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

even = BooleanScorer(lambda x, _: 0 == x % 2)
divisible_by_3 = BooleanScorer(lambda x, _: 0 == x % 3)
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
