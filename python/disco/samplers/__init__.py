"""Samplers: drawing in batches, QRS and its estimator, and IMH (docs/design.md §7, §8)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from disco.registry import Registry
from disco.samplers.accumulation import AccumulationSampler
from disco.samplers.estimator import QRSEstimator, QuasiRejectionSamplerEstimator
from disco.samplers.imh import ChainStatistics, IMHSampler
from disco.samplers.qrs import AcceptanceStatistics, QRSSamples, QuasiRejectionSampler

__all__ = [
    "SAMPLERS",
    "AcceptanceStatistics",
    "AccumulationSampler",
    "ChainStatistics",
    "IMHSampler",
    "QRSEstimator",
    "QRSSamples",
    "QuasiRejectionSampler",
    "QuasiRejectionSamplerEstimator",
    "SamplingMethod",
]


@dataclass(frozen=True)
class SamplingMethod:
    """How to sample a target through a proposal with one sampler class (``disco sample --method``).

    ``sampler(target, proposal, seed=...)`` builds it (with ``beta=None, log_beta=...`` too when
    ``tempered``); its ``sample_n(n, context, progress=..., **{budget: limit})`` draws, giving up
    after ``limit`` proposals.
    """

    sampler: Callable[..., Any]
    budget: str
    tempered: bool

    def build(self, target: Any, proposal: Any, *, seed: int, log_beta: float | None) -> Any:
        """The sampler of ``target`` through ``proposal`` (at ``log_beta`` when tempered)."""
        tempering = {"beta": None, "log_beta": log_beta} if self.tempered else {}
        return self.sampler(target, proposal, seed=seed, **tempering)

    def sample_n(self, sampler: Any, n: int, context: Any, limit: int) -> Any:
        """``n`` samples of ``context`` from ``sampler``, drawing at most ``limit`` proposals."""
        return sampler.sample_n(n, context, progress=False, **{self.budget: limit})


# Every sampling method by name: a new one is its sampler class plus one line here.
SAMPLERS: Registry[SamplingMethod] = Registry("sampler")
SAMPLERS.register(
    SamplingMethod(QuasiRejectionSampler, budget="max_proposals", tempered=True),
    name="qrs",
    about="Quasi-Rejection Sampling: independent samples, closer to the target as beta grows",
)
SAMPLERS.register(
    SamplingMethod(IMHSampler, budget="max_steps", tempered=False),
    name="imh",
    about="Independent Metropolis-Hastings: a Markov chain whose states tend to the target",
)
