"""Independent Metropolis–Hastings: the classical MCMC alternative to QRS (docs/design.md §8)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from disco import numerics
from disco.samplers._common import (
    ChunkedSampler,
    FloatArray,
    Gathered,
    Proposals,
    Samples,
    as_tensor,
    at_least_one,
    context_key,
)

__all__ = ["ChainStatistics", "IMHSampler"]


def autocorrelation(x: FloatArray, max_lag: int) -> FloatArray:
    """Sample autocorrelation ``ρ_0..ρ_max_lag`` of a series (FFT, biased normalisation).

    NaN when the series is constant (a chain that never moved).
    """
    n = x.shape[0]
    out = np.full(max_lag + 1, np.nan)
    if n < 2:
        return out
    centred = x - x.mean()
    var = float(centred @ centred)
    if var == 0.0:
        return out
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(centred, size)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[: max_lag + 1]
    out[: min(max_lag, n - 1) + 1] = acov[: min(max_lag, n - 1) + 1] / var
    return out


def integrated_autocorrelation_time(rho: FloatArray, n: int) -> float:
    """``τ = 1 + 2 Σ_k ρ_k`` with Sokal's automatic window (the first ``M >= 5 τ(M)``)."""
    if rho.size == 0 or np.isnan(rho[0]):
        return math.nan
    tau = 1.0
    for m in range(1, min(rho.size, n)):
        tau += 2.0 * float(rho[m])
        if m >= 5.0 * tau:
            break
    return max(tau, 1.0 / n)


@dataclass
class ChainStatistics:
    """Diagnostics of one context's chain: moves, and autocorrelation of its log-ratio trace."""

    steps: int
    """Proposals made."""
    accepted: int
    """Proposals the chain moved to."""
    autocorrelation: FloatArray = field(repr=False)
    """Autocorrelation at lags ``0..max_lag`` of the chain's log-ratio ``log P/q``."""
    integrated_autocorrelation_time: float
    """``1 + 2 sum_k rho_k`` (Sokal's window): the chain is worth ``steps / it`` independent draws."""

    @property
    def acceptance_rate(self) -> float:
        """Moves over proposals (NaN before the first step)."""
        return self.accepted / self.steps if self.steps else math.nan

    @property
    def effective_sample_size(self) -> float:
        """``steps / τ``."""
        tau = self.integrated_autocorrelation_time
        return self.steps / tau if self.steps and tau > 0 else math.nan


@dataclass
class _Chain:
    sample: Any = None
    log_p: float = -math.inf
    log_q: float = -math.inf
    log_ratio: float = -math.inf
    steps: int = 0
    accepted: int = 0
    trace: list[FloatArray] = field(default_factory=list)


class IMHSampler(ChunkedSampler):
    """Independent Metropolis–Hastings towards ``target`` with proposals from ``proposal``.

    One chain per context: from state ``x``, a proposal ``x' ~ q`` is accepted with probability
    ``min(1, r(x') / r(x))``, ``r = P / q``; otherwise the chain stays (the state is repeated).
    The chain's stationary distribution is the normalised target, but its draws are correlated;
    :meth:`statistics` reports the acceptance rate and the autocorrelation of the log-ratio. The
    decision runs in Rust.

    Proposals come in chunks of ``sampling_size`` keyed by ``(seed, call, chunk)``, each with
    its own keyed uniforms (``seed``: default, one from torch's generator). Under
    ``torch.distributed`` the ranks propose and score the chunks of a round in parallel, gather
    them, and every rank runs the chain over them in chunk order: every rank holds the chain,
    and returns the states, one process would.

    Same interface as :class:`QuasiRejectionSampler`: :meth:`sample` returns the chain's states,
    one per step, as ``(samples, proposal_log_scores)`` with ``.target_log_scores``.
    A fresh chain starts on its first proposal with ``P > 0`` (steps before it are not returned).
    """

    tag = "imh"

    def __init__(self, target: Any, proposal: Any, seed: int | None = None) -> None:
        super().__init__(target, proposal, seed)
        self._chains: dict[Any, _Chain] = {}

    def __repr__(self) -> str:
        return f"IMHSampler(target={self.target!r}, proposal={self.proposal!r})"

    def reset(self, context: Any = None) -> None:
        """Forget the chain of ``context`` (all chains when None)."""
        if context is None:
            self._chains.clear()
        else:
            self._chains.pop(context_key(context), None)

    def _rounds(self, context: Any, n_steps: int, sampling_size: int) -> Iterator[Samples]:
        """The chain's states over a new call's chunks, one batch per chunk, in chunk order.

        Each round proposes one chunk per rank; the caller stops when it has enough, so the
        round's later chunks, which one process would not have drawn, never reach the chain.
        """
        chunks = self._plan(context, n_steps, sampling_size)
        for start in range(0, len(chunks), self.world.size):
            round_ = chunks[start : start + self.world.size]
            for proposed in self.world.gather_chunks(round_, self._propose):
                yield self._steps(context, proposed)

    def _steps(self, context: Any, proposed: Proposals) -> Samples:
        """Run the chain of ``context`` over one chunk of proposals; return its states."""
        chain = self._chains.setdefault(context_key(context), _Chain())
        samples, log_p, log_q = proposed.samples, proposed.log_p, proposed.log_q
        ratios = proposed.log_ratios
        run = numerics.imh_chain(ratios, proposed.uniforms, chain.log_ratio)
        states = run.states
        started = chain.log_ratio > -math.inf
        if not started:
            # Steps taken while the chain stood on a zero-probability state are not draws.
            positive = np.flatnonzero((states >= 0) & (ratios[np.maximum(states, 0)] > -np.inf))
            first = int(positive[0]) if positive.size else len(states)
            steps = np.arange(first, len(states))
        else:
            steps = np.arange(len(states))
        chain.steps += len(states)
        chain.accepted += int(run.accepted.sum())
        lp_prev, lq_prev, sample_prev = chain.log_p, chain.log_q, chain.sample
        idx = states[steps]
        out_samples = [samples[i] if i >= 0 else sample_prev for i in idx]
        out_p = np.where(idx >= 0, log_p[np.maximum(idx, 0)], lp_prev)
        out_q = np.where(idx >= 0, log_q[np.maximum(idx, 0)], lq_prev)
        if states.size and states[-1] >= 0:
            last = int(states[-1])
            chain.sample, chain.log_p, chain.log_q = samples[last], log_p[last], log_q[last]
        chain.log_ratio = run.final_log_ratio
        if steps.size:
            chain.trace.append(out_p - out_q)
        return Samples(out_samples, as_tensor(out_p), as_tensor(out_q))

    def sample(self, context: Any = "", sampling_size: int = 32) -> Samples:
        """Run ``sampling_size`` steps of the chain for ``context``; return its states."""
        size = at_least_one(sampling_size, "sampling_size")
        return next(self._rounds(context, size, size))

    def sample_n(
        self,
        n: int,
        context: Any = "",
        *,
        burn_in: int = 0,
        thinning: int = 1,
        sampling_size: int = 256,
        max_steps: int = 10_000_000,
        progress: bool = True,
    ) -> Samples:
        """Return ``n`` states: after ``burn_in`` steps, every ``thinning``-th state of the chain.

        Parameters
        ----------
        n:
            States to return.
        context:
            Whose chain to run (it goes on from where the last call left it).
        burn_in, thinning:
            States skipped at the start of this call, and the spacing of the kept ones.
        sampling_size:
            Proposals per batch (one Rust call each).
        max_steps:
            The most steps to run before giving up.
        progress:
            Show a progress bar.

        Raises
        ------
        RuntimeError
            When ``max_steps`` steps do not give ``n`` states (the target is zero on the
            proposals seen so far).
        """
        if int(n) < 0 or int(burn_in) < 0 or int(thinning) < 1 or int(sampling_size) < 1:
            raise ValueError(
                f"need n >= 0, burn_in >= 0, thinning >= 1 and sampling_size >= 1; got n={n}, "
                f"burn_in={burn_in}, thinning={thinning}, sampling_size={sampling_size}"
            )
        n, burn_in, thinning = int(n), int(burn_in), int(thinning)
        max_steps = at_least_one(max_steps, "max_steps")
        kept = Gathered()
        position, taken = 0, 0  # states seen, states kept
        shown = progress and self.world.is_main
        with tqdm(total=n, desc="IMH", disable=not shown, leave=False) as bar:
            batches = self._rounds(context, max_steps, int(sampling_size)) if n else iter(())
            for batch in batches:
                # State number p (counted from this call's start) is kept when p >= burn_in and
                # (p - burn_in) is a multiple of thinning.
                p = position + np.arange(len(batch.samples))
                picks = np.flatnonzero((p >= burn_in) & ((p - burn_in) % thinning == 0))
                picks = picks[: n - taken]
                position += len(batch.samples)
                taken += kept.keep(batch, picks)
                bar.update(picks.size)
                if taken >= n:
                    break
        if taken < n:
            raise RuntimeError(
                f"IMH gave {taken} of the {n} states asked for within max_steps="
                f"{max_steps} steps: is the target zero on every proposal seen?"
            )
        return kept.result()

    def statistics(self, context: Any = "", max_lag: int = 50) -> ChainStatistics:
        """Acceptance and log-ratio autocorrelation of the chain of ``context``."""
        chain = self._chains.get(context_key(context), _Chain())
        trace = np.concatenate(chain.trace) if chain.trace else np.zeros(0)
        rho = autocorrelation(trace, max_lag)
        tau = integrated_autocorrelation_time(rho, trace.size)
        return ChainStatistics(chain.steps, chain.accepted, rho, tau)
