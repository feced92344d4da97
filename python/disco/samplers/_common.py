"""Helpers shared by the samplers: checked log-scores and log-ratios, batches, per-context runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from disco._calls import FloatArray, call_log_score, log_scores
from disco.distributed import Chunk, chunk_seed, current_world, draw_chunk, plan_chunks, shared_seed
from disco.distributions.contexts import resolve_contexts

# torch is imported where it is used: the samplers' registry (``disco list``) costs no torch.
if TYPE_CHECKING:
    import torch


class Samples(tuple):
    """Samples with their target log-scores and proposal log-probabilities (float64 tensors).

    As a tuple it is ``(samples, log_scores)``, the log-scores being those of the proposal that
    drew the samples, so ``samples, log_scores = sampler.sample(...)`` unpacks as with a
    distribution's ``sample`` (and as in the original disco). ``.samples``,
    ``.target_log_scores`` and ``.proposal_log_scores`` name every part.
    """

    target_log_scores: torch.Tensor

    def __new__(
        cls,
        samples: list[Any],
        target_log_scores: torch.Tensor,
        proposal_log_scores: torch.Tensor,
    ) -> Samples:
        self = super().__new__(cls, (samples, proposal_log_scores))
        self.target_log_scores = target_log_scores
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:
        return (self.samples, self.target_log_scores, self.proposal_log_scores)

    def __repr__(self) -> str:
        return f"Samples(n={len(self.samples)})"

    @property
    def samples(self) -> list[Any]:
        """The samples."""
        return self[0]

    @property
    def proposal_log_scores(self) -> torch.Tensor:
        """Their log-probabilities under the proposal (float64)."""
        return self[1]

    @property
    def log_scores(self) -> torch.Tensor:
        """The second element of the pair: :attr:`proposal_log_scores`."""
        return self.proposal_log_scores


def log_ratios(target: FloatArray, proposal: FloatArray) -> FloatArray:
    """``log P - log q`` per sample, exactly ``-inf`` where the target is zero.

    A drawn sample cannot have probability zero under the proposal it came from: that is refused.
    """
    zero = np.flatnonzero(proposal == -np.inf)
    if zero.size:
        i = int(zero[0])
        raise ValueError(
            f"proposal_log_scores[{i}] is -inf: a sample drawn from the proposal cannot have "
            "probability zero under it"
        )
    with np.errstate(invalid="ignore"):
        return np.where(target == -np.inf, -np.inf, target - proposal)


def context_key(context: Any) -> Any:
    """A dictionary key for a context (its repr when it is not hashable)."""
    try:
        hash(context)
    except TypeError:
        return ("unhashable", repr(context))
    return context


def score_target(target: Any, samples: Sequence[Any], context: Any) -> FloatArray:
    """``target.log_score(samples, context)`` as checked float64 numpy."""
    return log_scores(
        call_log_score(target, samples, context), "target_log_scores", len(samples), "the target"
    )


def as_tensor(values: FloatArray) -> torch.Tensor:
    """A float64 CPU tensor sharing nothing with ``values``."""
    import torch

    return torch.from_numpy(np.array(values, dtype=np.float64))


class Gathered:
    """Samples and their log-scores kept batch by batch: the tail every ``sample_n`` shares."""

    def __init__(self) -> None:

        self.samples: list[Any] = []
        self._log_p: list[torch.Tensor] = []
        self._log_q: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.samples)

    def keep(self, batch: Samples, picks: Any) -> int:
        """Keep ``batch``'s rows at ``picks`` (an index array or a slice); returns how many."""
        rows = range(len(batch.samples))[picks] if isinstance(picks, slice) else picks
        self.samples.extend(batch.samples[int(i)] for i in rows)
        self._log_p.append(batch.target_log_scores[picks])
        self._log_q.append(batch.proposal_log_scores[picks])
        return len(rows)

    def result(self) -> Samples:
        import torch

        empty = torch.zeros(0, dtype=torch.float64)
        return Samples(
            self.samples, torch.cat([empty, *self._log_p]), torch.cat([empty, *self._log_q])
        )


def at_least_one(value: Any, name: str) -> int:
    """``value`` as an int, refused below 1 (a batch size, a count of draws)."""
    if int(value) < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


class ContextSampler:
    """A sampler of one context at a time, run over many by :meth:`sample_contexts`."""

    def sample(self, context: Any = "", sampling_size: int = 32) -> Samples:
        """One batch for ``context`` (each sampler says what it holds)."""
        raise NotImplementedError

    def sample_contexts(
        self,
        contexts: Sequence[Any] | None = None,
        sampling_size: int = 32,
        *,
        context_distribution: Any = None,
        n_contexts: int = 8,
    ) -> list[tuple[Any, Samples]]:
        """:meth:`sample` for each of ``contexts`` (or ``n_contexts`` drawn from a distribution)."""
        if contexts is None and context_distribution is None:
            raise ValueError("give contexts or a context_distribution")
        chosen = resolve_contexts(
            "", contexts, context_distribution, n_contexts, seed=self._contexts_seed()
        )
        return [(c, self.sample(c, sampling_size)) for c in chosen]

    def _contexts_seed(self) -> int | None:
        """The key of a new draw of contexts (``None``: the distribution draws unkeyed)."""
        return None


@dataclass
class Proposals:
    """One chunk of proposals: log-scores, ``log P - log q`` and uniforms for accept/reject."""

    samples: list[Any]
    log_p: FloatArray
    log_q: FloatArray
    log_ratios: FloatArray
    uniforms: FloatArray


class ChunkedSampler(ContextSampler):
    """A sampler of ``target`` through ``proposal`` that draws its proposals in keyed chunks.

    Each call plans its own chunks, keyed by ``(seed, call, chunk)`` under the sampler's
    ``tag``: the same sequence on every rank, so the ranks can share them out.
    """

    tag = ""

    def __init__(self, target: Any, proposal: Any, seed: int | None) -> None:
        self.target = target
        self.proposal = proposal
        self.world = current_world()
        self.seed = shared_seed(seed, self.world)
        self._calls = 0
        self._context_draws = 0

    def _contexts_seed(self) -> int:
        """Draws of contexts are keyed by ``(seed, tag, "contexts", draw)``, like the chunks."""
        self._context_draws += 1
        return chunk_seed(self.seed, self.tag, "contexts", self._context_draws)

    def _propose(self, chunk: Chunk) -> Proposals:
        """One chunk's proposals, scored, with accept/reject uniforms keyed by the chunk.

        The uniforms come from the chunk's own key, like its draws, so every rank that handles
        the chunk decides alike.
        """
        samples, log_q = draw_chunk(self.proposal, chunk)
        log_p = score_target(self.target, samples, chunk.context)
        uniforms = np.random.default_rng(chunk_seed(chunk.seed, "uniforms")).random(len(samples))
        return Proposals(samples, log_p, log_q, log_ratios(log_p, log_q), uniforms)

    def _plan(self, context: Any, n: int, sampling_size: int) -> list[Chunk]:
        """The chunks of ``n`` proposals of a new call (the same on every rank)."""
        self._calls += 1
        return plan_chunks([context], n, sampling_size, self.seed, self.tag, self._calls)
