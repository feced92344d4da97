"""A call's ``seed`` keys the contexts it draws from a context distribution, not torch's state.

``constrain``, ``evaluate``, the QRS estimator and the samplers' ``sample_contexts`` draw
``n_contexts`` contexts before drawing samples; with a seed, the same call must work on the same
contexts whatever torch's global generator did before it, for a distribution that lists its
entries and for one that only samples.
"""

from typing import Any

import numpy as np
import torch

import disco
from disco.distributions import ContextDistribution, EnumerableLM
from disco.distributions.contexts import draw_contexts
from disco.scorers import BooleanScorer, Product

CONTEXTS = tuple(f"c{i}" for i in range(8))
HAS_A = BooleanScorer(lambda s, c: "a" in s.text.split(), name="has_a")


class Recording(EnumerableLM):
    """An ``EnumerableLM`` that notes the context of each of its draws."""

    def __init__(self) -> None:
        super().__init__(tokens=("a", "b", "c"), max_length=3, contexts=CONTEXTS, seed=2)
        with torch.no_grad():  # contexts that differ, so a fit depends on which were drawn
            self.context_bias[:, 0] = torch.linspace(-3.0, 3.0, len(CONTEXTS), dtype=torch.float64)
        self.drawn: list[Any] = []

    def sample(self, context: Any = "", sampling_size: int = 32) -> Any:
        self.drawn.append(context)
        return super().sample(context, sampling_size)


class GlobalSampler:
    """A context distribution that only samples, from torch's global generator."""

    def sample(self, sampling_size: int) -> tuple[list[str], torch.Tensor]:
        index = torch.randint(len(CONTEXTS), (sampling_size,))
        return [CONTEXTS[i] for i in index.tolist()], torch.full((sampling_size,), -np.log(8))


def fitted(distribution: Any, torch_seed: int) -> tuple[list[Any], np.ndarray]:
    """The contexts ``constrain(seed=3)`` drew samples for (one draw each), and its coefficients."""
    base = Recording()
    torch.manual_seed(torch_seed)
    ebm = base.constrain(
        [HAS_A],
        [0.5],
        context_distribution=distribution,
        n_contexts=3,
        n_samples=3 * 64,
        sampling_size=64,
        seed=3,
    )
    return base.drawn, ebm.fit_report.coefficients


def test_constrain_draws_the_same_contexts_for_the_same_seed():
    for distribution in (ContextDistribution(list(CONTEXTS)), GlobalSampler()):
        contexts, lam = fitted(distribution, torch_seed=0)
        assert len(contexts) == 3 and set(contexts) <= set(CONTEXTS)
        for torch_seed in (1, 2):
            again, lam_again = fitted(distribution, torch_seed)
            assert again == contexts, type(distribution).__name__
            np.testing.assert_array_equal(lam_again, lam)


def test_evaluate_draws_the_same_contexts_for_the_same_seed():
    policy = Recording()
    target = Product(policy, HAS_A)

    def contexts(distribution: Any, torch_seed: int) -> tuple[list[Any], dict[str, Any]]:
        torch.manual_seed(torch_seed)
        ev = disco.evaluate(
            policy,
            target,
            n=3 * 16,
            context_distribution=distribution,
            n_contexts=3,
            sampling_size=16,
            seed=4,
        )
        return [c.context for c in ev.contexts], ev.as_dict()

    for distribution in (ContextDistribution(list(CONTEXTS)), GlobalSampler()):
        first, figures = contexts(distribution, 0)
        assert len(first) == 3
        for torch_seed in (1, 2):
            assert contexts(distribution, torch_seed) == (first, figures)


def test_a_seeded_draw_leaves_torch_global_generator_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    draw_contexts(GlobalSampler(), 4, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_a_generator_keys_a_distribution_that_only_samples():
    # the tuner draws each step's contexts with its seeded numpy generator
    def drawn(torch_seed: int) -> list[Any]:
        torch.manual_seed(torch_seed)
        return draw_contexts(GlobalSampler(), 5, rng=np.random.default_rng(11))

    first = drawn(0)
    assert all(drawn(torch_seed) == first for torch_seed in (1, 2))
    assert drawn(0) != draw_contexts(GlobalSampler(), 5, rng=np.random.default_rng(12))


def test_the_qrs_estimator_draws_the_same_contexts_for_the_same_seed():
    from disco.samplers import QRSEstimator

    def contexts(distribution: Any, torch_seed: int) -> list[Any]:
        proposal = Recording()
        torch.manual_seed(torch_seed)
        QRSEstimator(
            Product(Recording(), HAS_A),
            proposal,
            context_distribution=distribution,
            n_contexts=3,
            n_samples=3 * 16,
            sampling_size=16,
            progress=False,
            seed=5,
        )
        return proposal.drawn

    for distribution in (ContextDistribution(list(CONTEXTS)), GlobalSampler()):
        first = contexts(distribution, 0)
        assert len(set(first)) >= 1 and set(first) <= set(CONTEXTS)
        assert all(contexts(distribution, torch_seed) == first for torch_seed in (1, 2))


def test_a_seeded_samplers_context_draws_follow_its_seed():
    from disco.samplers import IMHSampler, QuasiRejectionSampler

    def contexts(cls: Any, distribution: Any, torch_seed: int, seed: int = 6) -> list[Any]:
        torch.manual_seed(torch_seed)
        sampler = cls(Product(Recording(), HAS_A), Recording(), seed=seed)
        first = sampler.sample_contexts(
            context_distribution=distribution, n_contexts=3, sampling_size=4
        )
        second = sampler.sample_contexts(
            context_distribution=distribution, n_contexts=3, sampling_size=4
        )
        return [c for c, _ in first + second]

    for cls in (QuasiRejectionSampler, IMHSampler):
        for distribution in (ContextDistribution(list(CONTEXTS)), GlobalSampler()):
            drawn = contexts(cls, distribution, 0)
            assert set(drawn) <= set(CONTEXTS)
            assert all(contexts(cls, distribution, s) == drawn for s in (1, 2)), cls.__name__
            assert contexts(cls, distribution, 0, seed=7) != drawn  # the seed decides them
