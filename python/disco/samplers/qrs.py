"""Quasi-Rejection Sampling: exact-in-the-limit samples from an EBM on top of a proposal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from disco import numerics
from disco._beta import beta_from_log, checked_log_beta
from disco.samplers._common import (
    ContextSampler,
    Gathered,
    Samples,
    as_tensor,
    at_least_one,
    context_key,
    draw_batch,
    log_ratios,
    score_target,
)

__all__ = ["AcceptanceStatistics", "QRSSamples", "QuasiRejectionSampler"]

QRSSamples = Samples
"""Accepted samples with their target log-scores and proposal log-probabilities.

Unpacks as ``samples, log_scores`` (proposal log-probabilities, as in the original disco)."""


@dataclass
class AcceptanceStatistics:
    """Running counts of one context's proposals and acceptances."""

    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Accepted over proposed (NaN before the first proposal)."""
        return self.accepted / self.proposed if self.proposed else math.nan

    @property
    def standard_error(self) -> float:
        """Binomial standard error of :attr:`acceptance_rate`."""
        if not self.proposed:
            return math.nan
        p = self.acceptance_rate
        return math.sqrt(p * (1 - p) / self.proposed)


class QuasiRejectionSampler(ContextSampler):
    """Quasi-Rejection Sampling (QRS) from ``target`` with proposals from ``proposal`` (DESIGN §6).

    A proposal ``x ~ q`` is accepted with probability ``min(1, P(x) / (β q(x)))``, so accepted
    samples follow ``p_β ∝ min(P, β q)``, which is the normalised target ``p`` once ``β`` reaches
    ``max P/q``. Larger ``β`` means more exact and fewer accepted; :class:`QRSEstimator` tells the
    trade-off before sampling. The decision runs in Rust on log-ratios; uniforms come from a numpy
    generator seeded with ``seed``, so one seed (with a seeded proposal) reproduces a run.

    Parameters
    ----------
    target:
        The EBM: ``target.log_score(samples, context)`` gives ``log P`` (float64, ``-inf`` allowed).
    proposal:
        ``proposal.sample(context, sampling_size) -> (samples, log_probs)``.
    beta:
        The QRS threshold ``β > 0``, on the scale of ``P / q`` (or give ``log_beta``).
    seed:
        Seeds the accept/reject uniforms.
    """

    def __init__(
        self,
        target: Any,
        proposal: Any,
        beta: float | None = 1.0,
        seed: int | None = None,
        *,
        log_beta: float | None = None,
    ) -> None:
        if log_beta is not None and beta == 1.0:
            beta = None
        self.target = target
        self.proposal = proposal
        self.log_beta = checked_log_beta(beta, log_beta)
        self.rng = np.random.default_rng(seed)
        self._statistics: dict[Any, AcceptanceStatistics] = {}

    def __repr__(self) -> str:
        return (
            f"QuasiRejectionSampler(target={self.target!r}, proposal={self.proposal!r}, "
            f"beta={self.beta:.6g})"
        )

    @property
    def beta(self) -> float:
        """``β`` (``inf`` when ``log β`` is past float range)."""
        return beta_from_log(self.log_beta)

    # -- statistics ---------------------------------------------------------------------------

    def statistics(self, context: Any = None) -> AcceptanceStatistics:
        """Running counts for one context, or summed over all contexts when ``context`` is None."""
        if context is not None:
            return self._statistics.get(context_key(context), AcceptanceStatistics())
        total = AcceptanceStatistics()
        for s in self._statistics.values():
            total.proposed += s.proposed
            total.accepted += s.accepted
        return total

    @property
    def acceptance_rate(self) -> float:
        """Accepted over proposed so far, over all contexts (NaN before any proposal)."""
        return self.statistics().acceptance_rate

    def get_acceptance_rate(self) -> float:
        """:attr:`acceptance_rate` (the original disco's name)."""
        return self.acceptance_rate

    def reset_statistics(self) -> None:
        """Forget the running counts."""
        self._statistics.clear()

    # -- sampling -----------------------------------------------------------------------------

    def _accept(self, context: Any, size: int) -> tuple[QRSSamples, int]:
        samples, log_q = draw_batch(self.proposal, context, size)
        log_p = score_target(self.target, samples, context)
        ratios = log_ratios(log_p, log_q)
        mask = numerics.qrs_accept(ratios, self.rng.random(len(samples)), log_beta=self.log_beta)
        stats = self._statistics.setdefault(context_key(context), AcceptanceStatistics())
        stats.proposed += len(samples)
        stats.accepted += int(mask.sum())
        kept = np.flatnonzero(mask)
        out = QRSSamples([samples[i] for i in kept], as_tensor(log_p[kept]), as_tensor(log_q[kept]))
        return out, len(samples)

    def sample(self, context: Any = "", sampling_size: int = 32) -> QRSSamples:
        """Draw ``sampling_size`` proposals for ``context`` and return the accepted ones.

        Returns the accepted samples (possibly none) as :class:`~disco.samplers.QRSSamples`:
        the pair ``(samples, proposal log-probabilities)``, also with ``.target_log_scores``.
        The running statistics are updated.
        """
        return self._accept(context, at_least_one(sampling_size, "sampling_size"))[0]

    def sample_n(
        self,
        n: int,
        context: Any = "",
        *,
        sampling_size: int = 256,
        max_proposals: int = 1_000_000,
        progress: bool = True,
    ) -> QRSSamples:
        """Draw until ``n`` samples are accepted; return exactly ``n`` (the first accepted).

        Parameters
        ----------
        n:
            Accepted samples to return.
        context:
            The context to sample for.
        sampling_size:
            Proposals per batch.
        max_proposals:
            The most proposals to draw before giving up.
        progress:
            Show a progress bar (with the acceptance rate so far).

        Raises
        ------
        RuntimeError
            When ``max_proposals`` proposals have not yielded ``n`` accepted samples; the message
            gives the acceptance rate seen and what to change.
        """
        if int(n) < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        sampling_size = at_least_one(sampling_size, "sampling_size")
        n, max_proposals = int(n), at_least_one(max_proposals, "max_proposals")
        kept = Gathered()
        proposed = 0
        with tqdm(total=n, desc="QRS", disable=not progress, leave=False) as bar:
            while len(kept) < n:
                budget = max_proposals - proposed
                if budget <= 0:
                    rate = len(kept) / proposed
                    raise RuntimeError(
                        f"QRS accepted {len(kept)} of the {n} samples asked for within "
                        f"max_proposals={max_proposals} proposals (acceptance rate {rate:.3g} at "
                        f"beta={self.beta:.6g}); lower beta (see QRSEstimator."
                        "beta_for_acceptance_rate) or raise max_proposals"
                    )
                batch, drawn = self._accept(context, min(int(sampling_size), budget))
                proposed += drawn
                take = kept.keep(batch, slice(0, n - len(kept)))
                bar.update(take)
                bar.set_postfix(acceptance=f"{len(kept) / proposed:.3g}", refresh=False)
        return kept.result()
