"""Quasi-Rejection Sampling: exact-in-the-limit samples from an EBM on top of a proposal."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from disco import numerics
from disco._beta import beta_from_log, checked_log_beta
from disco.distributed import (
    Chunk,
)
from disco.samplers import shards
from disco.samplers._common import (
    ChunkedSampler,
    Gathered,
    Samples,
    as_tensor,
    at_least_one,
    context_key,
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


class QuasiRejectionSampler(ChunkedSampler):
    """Quasi-Rejection Sampling from ``target`` through ``proposal`` (docs/design.md §7.1).

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
        Seeds the proposals and the accept/reject uniforms (default: a seed from torch's
        generator). Proposals come in chunks of ``sampling_size`` keyed by
        ``(seed, call, chunk)``: under ``torch.distributed`` the ranks share the chunks and every
        rank returns the same accepted samples as one process would.
    """

    tag = "qrs"

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
        self.log_beta = checked_log_beta(beta, log_beta)
        super().__init__(target, proposal, seed)
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

    def _accept(self, chunk: Chunk) -> QRSSamples:
        """One chunk of proposals and the accepted ones (decided in Rust, keyed uniforms)."""
        drawn = self._propose(chunk)
        samples, log_p, log_q = drawn.samples, drawn.log_p, drawn.log_q
        mask = numerics.qrs_accept(drawn.log_ratios, drawn.uniforms, log_beta=self.log_beta)
        kept = np.flatnonzero(mask)
        return QRSSamples(
            [samples[i] for i in kept], as_tensor(log_p[kept]), as_tensor(log_q[kept])
        )

    def _count(self, context: Any, chunk: Chunk, accepted: int) -> None:
        stats = self._statistics.setdefault(context_key(context), AcceptanceStatistics())
        stats.proposed += chunk.size
        stats.accepted += accepted

    def sample(self, context: Any = "", sampling_size: int = 32) -> QRSSamples:
        """Draw ``sampling_size`` proposals for ``context`` and return the accepted ones.

        Returns the accepted samples (possibly none) as :class:`~disco.samplers.QRSSamples`:
        the pair ``(samples, proposal log-probabilities)``, also with ``.target_log_scores``.
        The running statistics are updated.
        """
        size = at_least_one(sampling_size, "sampling_size")
        (chunk,) = self._plan(context, size, size)
        (accepted,) = self.world.gather_chunks([chunk], self._accept)
        self._count(context, chunk, len(accepted.samples))
        return accepted

    def sample_n(
        self,
        n: int,
        context: Any = "",
        *,
        sampling_size: int = 256,
        max_proposals: int = 1_000_000,
        progress: bool = True,
        shard_dir: str | os.PathLike[str] | None = None,
    ) -> QRSSamples:
        """Draw until ``n`` samples are accepted; return exactly ``n`` (the first accepted).

        Proposals come in chunks of ``sampling_size``; under ``torch.distributed`` each round
        deals one chunk to every rank and gathers the accepted samples in chunk order, so every
        rank returns the samples one process would.

        With ``shard_dir``, the accepted samples are not gathered: each rank writes the ones
        from its own chunks to ``shard_dir/shard-RRRRR-of-SSSSS.jsonl`` (atomically; each
        record holds its chunk and row, the token ids and text, and both log-scores), rank 0
        writes ``shard_dir/index.json``, and each rank returns its own share. Only the
        per-chunk counts travel; :func:`disco.samplers.shards.read_shards` reads the union
        back in the one-process order.

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
        shard_dir:
            Write one shard per rank and an index there instead of gathering (see above).

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
        chunks = self._plan(context, max_proposals, sampling_size)
        kept = Gathered()  # every sample kept, or with shards this rank's
        kept_chunks: list[int] = []  # with shards: the chunk of each of this rank's samples
        mine: dict[int, QRSSamples] = {}

        def accept(chunk: Chunk) -> QRSSamples | int:
            batch = self._accept(chunk)
            if shard_dir is None:
                return batch
            mine[chunk.index] = batch  # stays here; only its count travels
            return len(batch.samples)

        taken = proposed = 0
        bar = tqdm(total=n, desc="QRS", disable=not (progress and self.world.is_main), leave=False)
        with bar:
            for start in range(0, len(chunks), self.world.size):
                if taken >= n:
                    break
                round_ = chunks[start : start + self.world.size]
                for chunk, got in zip(round_, self.world.gather_chunks(round_, accept)):
                    if taken >= n:
                        break  # later chunks of the round: one process never drew them
                    count = got if isinstance(got, int) else len(got.samples)
                    self._count(context, chunk, count)
                    proposed += chunk.size
                    take = min(count, n - taken)
                    taken += take
                    if not isinstance(got, int):
                        kept.keep(got, slice(0, take))
                    elif chunk.index in mine:
                        kept_chunks.extend(
                            [chunk.index] * kept.keep(mine[chunk.index], slice(0, take))
                        )
                    bar.update(take)
                bar.set_postfix(acceptance=f"{taken / proposed:.3g}", refresh=False)
        if taken < n:
            rate = taken / proposed
            raise RuntimeError(
                f"QRS accepted {taken} of the {n} samples asked for within "
                f"max_proposals={max_proposals} proposals (acceptance rate {rate:.3g} at "
                f"beta={self.beta:.6g}); lower beta (see QRSEstimator."
                "beta_for_acceptance_rate) or raise max_proposals"
            )
        if shard_dir is not None:
            self._write_shards(Path(shard_dir), context, kept_chunks, kept.result())
        return kept.result()

    def _write_shards(
        self, folder: Path, context: Any, chunks: list[int], samples: QRSSamples
    ) -> None:
        """Each rank's shard, then (once every shard is in place) rank 0's index."""
        world = self.world
        world.together(lambda: shards.write_shard(folder, world.rank, world.size, chunks, samples))
        counts = world.all_gather(len(samples.samples))
        world.together(
            lambda: shards.write_index(folder, context, counts) if world.is_main else None
        )
