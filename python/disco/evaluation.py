"""One evaluation of a policy against a target, on fresh samples, every figure with its error.

:func:`evaluate` draws from the policy and reports, per context and averaged over contexts,
each feature's rate under the policy (a plain mean: binomial error for 0/1 features) and under
the target (self-normalised importance sampling), ``KL(target ‖ policy)``, ``KL(policy ‖
base)``, ``TV`` and ``JS`` between target and policy, and the ESS of the importance weights,
each as an :class:`~disco.numerics.Estimate` (value and standard error, computed by the core
from the same weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from disco import numerics
from disco.distributed import (
    Chunk,
    current_world,
    draw_chunk,
)
from disco.distributions.contexts import plan_over_contexts
from disco.numerics import Estimate, mean_of_independent
from disco.samplers._common import FloatArray, at_least_one, log_scores, score_target

__all__ = ["ContextEvaluation", "Evaluation", "evaluate"]

DIVERGENCES = ("kl_target_policy", "kl_policy_base", "tv_target_policy", "js_target_policy")


@dataclass(frozen=True)
class ContextEvaluation:
    """One context's figures, and the log-scores they rest on.

    ``policy_moments`` and ``target_moments`` map each feature's name to its rate under the
    policy and under the target; ``kl_policy_base`` is ``None`` without a base. The arrays
    (``log_target``: ``log P``; ``log_policy``: ``log pi``; ``log_base``; ``features``,
    ``N x K``) let other estimates (QRS at any β, say) reuse the same samples.
    """

    context: Any
    n: int
    policy_moments: dict[str, Estimate]
    target_moments: dict[str, Estimate]
    kl_target_policy: Estimate
    kl_policy_base: Estimate | None
    tv_target_policy: Estimate
    js_target_policy: Estimate
    ess: Estimate
    log_target: FloatArray = field(repr=False)
    log_policy: FloatArray = field(repr=False)
    log_base: FloatArray | None = field(repr=False)
    features: FloatArray = field(repr=False)
    samples: list[Any] | None = field(default=None, repr=False)

    @classmethod
    def from_log_scores(
        cls,
        target_log_scores: Any,
        policy_log_probs: Any,
        *,
        base_log_probs: Any = None,
        features: Any = None,
        feature_names: Sequence[str] | None = None,
        context: Any = "",
        samples: list[Any] | None = None,
    ) -> ContextEvaluation:
        """The figures of one context from the log-scores of samples drawn from the policy.

        ``target_log_scores`` (``log P``, ``-inf`` allowed), ``policy_log_probs`` and the
        optional ``base_log_probs`` have one value per sample; ``features`` is ``N x K`` (or
        ``N``), its columns named by ``feature_names`` (default ``feature_0`` ...).
        """
        log_target = numerics.as_vector(target_log_scores, "target_log_scores")
        n = log_target.shape[0]
        who = "from_log_scores"
        log_target = log_scores(log_target, "target_log_scores", n, who)
        log_policy = log_scores(policy_log_probs, "policy_log_probs", n, who)
        log_base = None
        if base_log_probs is not None:
            log_base = log_scores(base_log_probs, "base_log_probs", n, who)
        phi = np.zeros((n, 0)) if features is None else numerics.as_matrix(features, "features")
        if phi.shape[0] != n:
            raise ValueError(f"length mismatch: features has {phi.shape[0]} rows for {n} samples")
        names = (
            [f"feature_{i}" for i in range(phi.shape[1])]
            if feature_names is None
            else list(feature_names)
        )
        if len(names) != phi.shape[1]:
            raise ValueError(f"{len(names)} feature_names for {phi.shape[1]} feature columns")
        if not np.isfinite(log_target).any():
            raise ValueError(
                f"the target gives zero weight to all {n} policy samples of context "
                f"{context!r}: nothing about it can be estimated from them"
            )
        log_w = np.where(log_target == -np.inf, -np.inf, log_target - log_policy)
        if phi.shape[1]:
            pm, pse = numerics.sample_means_with_stderr(phi)
            tm, tse = numerics.weighted_moments_with_stderr(log_w, phi)
        else:
            pm = pse = tm = tse = np.zeros(0)
        vs_base = None
        if log_base is not None:
            vs_base = numerics.divergence_with_stderr(
                "reverse_kl", log_base, log_policy, log_policy, log_z=0.0
            )
        return cls(
            context=context,
            n=n,
            policy_moments={k: Estimate(float(v), float(s)) for k, v, s in zip(names, pm, pse)},
            target_moments={k: Estimate(float(v), float(s)) for k, v, s in zip(names, tm, tse)},
            kl_target_policy=numerics.divergence_with_stderr("kl", log_target, log_policy),
            kl_policy_base=vs_base,
            tv_target_policy=numerics.divergence_with_stderr("tv", log_target, log_policy),
            js_target_policy=numerics.divergence_with_stderr("js", log_target, log_policy),
            ess=numerics.effective_sample_size_with_stderr(log_w),
            log_target=log_target,
            log_policy=log_policy,
            log_base=log_base,
            features=phi,
            samples=samples,
        )


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` returns: one :class:`ContextEvaluation` per context, and averages.

    The averages weigh the contexts equally; their error is that of a mean of independent
    estimates, for these contexts (not over a context distribution they were drawn from).
    """

    contexts: list[ContextEvaluation]
    feature_names: list[str]

    def __post_init__(self) -> None:
        if not self.contexts:
            raise ValueError("an evaluation needs at least one context")

    def _average(self, pick: Any) -> Estimate:
        return mean_of_independent([pick(c) for c in self.contexts])

    @property
    def n(self) -> int:
        """Samples in all."""
        return sum(c.n for c in self.contexts)

    @property
    def policy_moments(self) -> dict[str, Estimate]:
        """Each feature's rate under the policy, averaged over contexts."""
        return {k: self._average(lambda c, k=k: c.policy_moments[k]) for k in self.feature_names}

    @property
    def target_moments(self) -> dict[str, Estimate]:
        """Each feature's rate under the target, averaged over contexts."""
        return {k: self._average(lambda c, k=k: c.target_moments[k]) for k in self.feature_names}

    @property
    def kl_target_policy(self) -> Estimate:
        """``KL(target ‖ policy)`` in nats, averaged over contexts."""
        return self._average(lambda c: c.kl_target_policy)

    @property
    def kl_policy_base(self) -> Estimate | None:
        """``KL(policy ‖ base)`` in nats, averaged over contexts (``None`` without a base)."""
        if any(c.kl_policy_base is None for c in self.contexts):
            return None
        return self._average(lambda c: c.kl_policy_base)

    @property
    def tv_target_policy(self) -> Estimate:
        """``TV(target, policy)``, averaged over contexts."""
        return self._average(lambda c: c.tv_target_policy)

    @property
    def js_target_policy(self) -> Estimate:
        """``JS(target, policy)`` in nats, averaged over contexts."""
        return self._average(lambda c: c.js_target_policy)

    @property
    def ess(self) -> Estimate:
        """The ESS of the weights ``P / pi``, averaged over contexts."""
        return self._average(lambda c: c.ess)

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON: every estimate as ``{"value": v, "stderr": s}``."""

        def plain(e: Estimate | None) -> dict[str, float] | None:
            return None if e is None else {"value": e.value, "stderr": e.stderr}

        def figures(x: Any) -> dict[str, Any]:
            return {
                "policy_moments": {k: plain(v) for k, v in x.policy_moments.items()},
                "target_moments": {k: plain(v) for k, v in x.target_moments.items()},
                **{name: plain(getattr(x, name)) for name in DIVERGENCES},
                "ess": plain(x.ess),
            }

        return {
            "n": self.n,
            **figures(self),
            "per_context": [{"context": c.context, "n": c.n, **figures(c)} for c in self.contexts],
        }


def _score_features(features: Sequence[Any], samples: list[Any], context: Any) -> FloatArray:
    if not features:
        return np.zeros((len(samples), 0))
    columns = [
        numerics.as_vector(f.score(samples, context), f"feature {_name(f, i)}")
        for i, f in enumerate(features)
    ]
    return np.stack(columns, axis=1)


def _name(feature: Any, i: int) -> str:
    return str(getattr(feature, "name", None) or f"feature_{i}")


def evaluate(
    policy: Any,
    target: Any,
    *,
    n: int = 4096,
    base: Any = None,
    features: Sequence[Any] = (),
    context: Any = "",
    contexts: Sequence[Any] | None = None,
    context_distribution: Any = None,
    n_contexts: int = 8,
    sampling_size: int = 256,
    seed: int | None = None,
    keep_samples: bool = False,
) -> Evaluation:
    """Evaluate ``policy`` against ``target`` on ``n`` fresh samples of the policy.

    Every estimate's error is first-order: trust it once the ESS is large (dozens at least);
    an importance-sampling KL can then still come out slightly negative when the truth is
    near zero, as any unbiased-in-the-limit estimate of a small quantity can.

    Parameters
    ----------
    policy:
        ``sample(context, size) -> (samples, log_probs)``, the distribution evaluated.
    target:
        The EBM: ``log_score(samples, context)`` gives ``log P`` (``-inf`` allowed).
    n:
        Samples in all, split evenly over the contexts.
    base:
        With ``log_score``: adds ``KL(policy ‖ base)``.
    features:
        Scorers (``score(samples, context)``, ``name``) whose rates are reported.
    context, contexts, context_distribution, n_contexts:
        One context (default), a list, or ``n_contexts`` drawn from a context distribution.
    sampling_size:
        Batch size of the draws and of the scoring.
    seed:
        Seeds the contexts drawn from ``context_distribution`` and the draws chunk by chunk, as
        :class:`~disco.samplers.QRSEstimator` does; under ``torch.distributed`` the ranks share
        the chunks and gather them in chunk order, so the result is that of one process.
    keep_samples:
        Keep the samples in each :class:`ContextEvaluation` (for QRS or inspection).
    """
    import torch

    world = current_world()
    chosen, chunks = plan_over_contexts(
        "evaluate",
        seed,
        n,
        at_least_one(sampling_size, "sampling_size"),
        context=context,
        contexts=contexts,
        context_distribution=context_distribution,
        n_contexts=n_contexts,
        world=world,
    )
    names = [_name(f, i) for i, f in enumerate(features)]

    def scored(chunk: Chunk) -> tuple[list[Any] | None, FloatArray, FloatArray, Any, FloatArray]:
        drawn, log_pi = draw_chunk(policy, chunk)
        c = chunk.context
        log_p = score_target(target, drawn, c)
        log_a = None
        if base is not None:
            log_a = log_scores(base.log_score(drawn, c), "base_log_scores", len(drawn), "the base")
        phi = _score_features(features, drawn, c)
        return (drawn if keep_samples else None), log_p, log_pi, log_a, phi

    with torch.no_grad():
        parts = world.gather_chunks(chunks, scored)
    results = []
    for position, c in enumerate(chosen):
        mine = [part for chunk, part in zip(chunks, parts) if chunk.position == position]
        kept = [x for part in mine for x in part[0] or []] if keep_samples else None
        results.append(
            ContextEvaluation.from_log_scores(
                np.concatenate([part[1] for part in mine]),
                np.concatenate([part[2] for part in mine]),
                base_log_probs=(
                    None if base is None else np.concatenate([part[3] for part in mine])
                ),
                features=np.concatenate([part[4] for part in mine]),
                feature_names=names,
                context=c,
                samples=kept,
            )
        )
    return Evaluation(results, names)
