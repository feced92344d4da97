"""A small autoregressive model whose whole support can be listed with exact probabilities.

It is the test oracle of the project (docs/design.md §10) and a teaching tool: partition functions,
moments, divergences and optimal coefficients over its support are exact sums, so every
estimator, solver, sampler and tuner can be compared against the truth.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from disco.distributions.base import BaseDistribution, TextSample

__all__ = ["EnumerableLM"]


class EnumerableLM(BaseDistribution, torch.nn.Module):
    """A tabular autoregressive language model over a few tokens, with an EOS and a length cap.

    Every prefix of fewer than ``max_length`` tokens has its own row of next-token logits
    (so the model family contains every distribution over the support of one context), and
    each context adds its own bias to the first token's logits. A sample is its tokens up to
    and including EOS, or ``max_length`` tokens without EOS; its text joins the token names
    (EOS omitted) with spaces. Parameters are float64 and trainable like any policy.

    Parameters
    ----------
    tokens:
        Names of the non-EOS tokens.
    max_length:
        Maximum number of tokens in a sample, EOS included.
    contexts:
        The contexts the model knows; each changes the first-token distribution.
    seed:
        Seeds the random initial logits and the sampling generator.
    scale:
        Standard deviation of the random initial logits (0 gives uniform next tokens).
    """

    EOS = "</s>"

    def __init__(
        self,
        tokens: Sequence[str] = ("a", "b", "c"),
        max_length: int = 3,
        contexts: Sequence[str] = ("",),
        seed: int = 0,
        scale: float = 1.0,
    ) -> None:
        torch.nn.Module.__init__(self)
        if len(tokens) < 1 or len(set(tokens)) != len(tokens) or self.EOS in tokens:
            raise ValueError(
                f"tokens must be distinct, non-empty and exclude {self.EOS!r}: {tokens!r}"
            )
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        if len(contexts) < 1 or len(set(contexts)) != len(contexts):
            raise ValueError(f"contexts must be distinct and non-empty: {contexts!r}")
        self.tokens = tuple(tokens)
        self.vocabulary = (*self.tokens, self.EOS)
        self.eos_id = len(self.tokens)
        self.max_length = int(max_length)
        self.contexts = tuple(contexts)
        n_tokens = len(self.tokens)
        # Rows for prefixes of length t start at offset_t = sum_{k<t} T^k.
        self._offsets = [sum(n_tokens**k for k in range(t)) for t in range(self.max_length + 1)]
        generator = torch.Generator().manual_seed(seed)
        n_prefixes = self._offsets[self.max_length]
        self.logits = torch.nn.Parameter(
            scale * torch.randn(n_prefixes, n_tokens + 1, generator=generator, dtype=torch.float64)
        )
        self.context_bias = torch.nn.Parameter(
            scale
            * torch.randn(
                len(self.contexts), n_tokens + 1, generator=generator, dtype=torch.float64
            )
        )
        self._generator = torch.Generator().manual_seed(seed + 1)

    def __repr__(self) -> str:
        return (
            f"EnumerableLM(tokens={self.tokens!r}, max_length={self.max_length}, "
            f"contexts={self.contexts!r})"
        )

    def clone(self) -> EnumerableLM:
        """An independent copy whose sampling stream is seeded from this model's (not shared)."""
        import copy

        twin = copy.deepcopy(self)
        seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
        twin._generator = torch.Generator().manual_seed(seed)
        return twin

    def random_state(self) -> torch.Tensor:
        """State of the sampling generator (for checkpoints)."""
        return self._generator.get_state()

    def set_random_state(self, state: torch.Tensor) -> None:
        """Restore the sampling generator from :meth:`random_state`."""
        self._generator.set_state(state)

    def _context_index(self, context: Any) -> int:
        try:
            return self.contexts.index(context)
        except ValueError:
            raise ValueError(
                f"unknown context {context!r}: this model knows {self.contexts!r}"
            ) from None

    def _text(self, ids: Sequence[int]) -> TextSample:
        ids = tuple(int(i) for i in ids)
        return TextSample(ids, " ".join(self.vocabulary[i] for i in ids if i != self.eos_id))

    def _prefix_rows(self, ids: torch.Tensor, t: int) -> torch.Tensor:
        """Table row of each sample's prefix ``ids[:, :t]`` (all non-EOS tokens)."""
        row = torch.zeros(ids.shape[0], dtype=torch.long)
        for i in range(t):
            row = row * len(self.tokens) + ids[:, i]
        return row + self._offsets[t]

    def _tables(self, context_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token log-probabilities: every prefix's row, and the first token's row."""
        table = torch.log_softmax(self.logits, dim=-1)
        first = torch.log_softmax(self.logits[0] + self.context_bias[context_index], dim=-1)
        return table, first

    def _step_log_probs(
        self, tables: tuple[torch.Tensor, torch.Tensor], ids: torch.Tensor, t: int
    ) -> torch.Tensor:
        table, first = tables
        if t == 0:
            return first.expand(ids.shape[0], -1)
        return table[self._prefix_rows(ids, t)]

    def sample(
        self, context: Any = "", sampling_size: int = 32
    ) -> tuple[list[TextSample], torch.Tensor]:
        """Draw ``sampling_size`` samples; return them with their exact log-probabilities."""
        if sampling_size < 1:
            raise ValueError(f"sampling_size must be at least 1, got {sampling_size}")
        c = self._context_index(context)
        ids = torch.full((sampling_size, self.max_length), self.eos_id, dtype=torch.long)
        alive = torch.ones(sampling_size, dtype=torch.bool)
        lengths = torch.full((sampling_size,), self.max_length, dtype=torch.long)
        with torch.no_grad():
            tables = self._tables(c)
            for t in range(self.max_length):
                probs = self._step_log_probs(tables, ids.clamp(max=len(self.tokens) - 1), t).exp()
                drawn = torch.multinomial(probs, 1, generator=self._generator).squeeze(1)
                ids[:, t] = torch.where(alive, drawn, ids[:, t])
                ended = alive & (drawn == self.eos_id)
                lengths = torch.where(ended, torch.full_like(lengths, t + 1), lengths)
                alive &= ~ended
        samples = [self._text(row[:n].tolist()) for row, n in zip(ids, lengths)]
        return samples, self.log_score(samples, context)

    def log_score(
        self, samples: Sequence[Any], context: Any = "", grad: bool = False
    ) -> torch.Tensor:
        """Exact log-probabilities of ``samples`` (``-inf`` for sequences outside the support)."""
        c = self._context_index(context)
        n = len(samples)
        ids = torch.full((n, self.max_length), self.eos_id, dtype=torch.long)
        lengths = torch.zeros(n, dtype=torch.long)
        valid = torch.ones(n, dtype=torch.bool)
        for k, s in enumerate(samples):
            given = s.token_ids if isinstance(s, TextSample) else s
            seq = tuple(given.tolist() if isinstance(given, torch.Tensor) else given)
            if not self._in_support(seq):
                valid[k] = False
                continue
            ids[k, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            lengths[k] = len(seq)
        with torch.set_grad_enabled(grad):
            total = torch.zeros(n, dtype=torch.float64)
            safe = ids.clamp(max=len(self.tokens) - 1)
            tables = self._tables(c)
            for t in range(self.max_length):
                step = self._step_log_probs(tables, safe, t).gather(1, ids[:, t : t + 1]).squeeze(1)
                total = total + torch.where(lengths > t, step, torch.zeros_like(step))
            total = torch.where(valid, total, torch.full_like(total, float("-inf")))
        return total if grad else total.detach()

    def _in_support(self, seq: tuple[int, ...]) -> bool:
        if not 1 <= len(seq) <= self.max_length:
            return False
        if any(not 0 <= i <= self.eos_id for i in seq):
            return False
        body, last = seq[:-1], seq[-1]
        if self.eos_id in body:
            return False
        return last == self.eos_id or len(seq) == self.max_length

    def enumerate_support(self, context: Any = "") -> tuple[list[TextSample], torch.Tensor]:
        """Every possible sample with its exact log-probability (they sum to 1)."""
        support: list[TextSample] = []
        for length in range(self.max_length):
            for body in itertools.product(range(len(self.tokens)), repeat=length):
                support.append(self._text((*body, self.eos_id)))
        for body in itertools.product(range(len(self.tokens)), repeat=self.max_length):
            support.append(self._text(body))
        return support, self.log_score(support, context)
