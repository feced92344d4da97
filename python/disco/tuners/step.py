"""One gradient step of the tuner: sample, estimate ``log Z``, backpropagate, report, update.

:class:`TuningStep` is the step's half of :class:`~disco.tuners.Tuner` (which sets up what it
declares below). The step's samples are cut into chunks keyed by ``(seed, step, context,
chunk)`` and dealt to the ranks; per-sample results are gathered in chunk order and the
gradients summed by the parallel mode, so the step is the same on any number of processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch

from disco._calls import call_log_score
from disco._crash_points import kill_point
from disco.distributed import Chunk, World, draw_chunk, plan_chunks
from disco.parallel import GradientPath
from disco.tuners.averaging import ParameterAverage
from disco.tuners.batches import (
    Learned,
    Scored,
    across_contexts,
    cpu64,
    features_and_base,
    slices,
    step_metrics,
)
from disco.tuners.config import TunerConfig
from disco.tuners.log_z import LogZEstimate
from disco.tuners.losses import FDivergenceLoss

__all__ = ["TuningStep"]


class TuningStep:
    """The tuner's step, its pieces as named methods (the tuner sets up the attributes)."""

    config: TunerConfig
    policy: Any
    target: Any
    base: Any
    proposal: Any
    loss: FDivergenceLoss
    world: World
    gradients: GradientPath
    lockstep: bool
    parameters: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    average: ParameterAverage | None
    partition: LogZEstimate
    step_count: int
    proposal_copied_at: int | None
    last_samples: list[dict[str, Any]]
    _batch_loggers: list[Any]

    def _contexts(self) -> list[Any]:
        raise NotImplementedError

    def _autocast(self) -> Any:
        raise NotImplementedError

    def _frozen_copy(self, policy: Any) -> Any:
        raise NotImplementedError

    def _report(self, *scores: Any) -> dict[str, float]:
        """:func:`~disco.tuners.batches.step_metrics` of this loss and the reported features."""
        return step_metrics(self.loss.kind, self.config.features, *scores)

    @torch.no_grad()
    def _averaged_log_scores(self, samples: list[Any], context: Any) -> np.ndarray:
        """The averaged policy's log-probabilities of a batch (no gradient)."""
        assert self.average is not None
        if not samples:
            return np.empty(0)
        parts = []
        with self.average.swapped_in(), self._autocast():
            for part in slices(len(samples), self.config.scoring_batch_size):
                parts.append(cpu64(call_log_score(self.policy, samples[part], context)))
        return np.concatenate(parts)

    def _reported(self, chunk: Chunk) -> int:
        """How many of a chunk's samples the step's reported metrics use.

        Those among its context's first ``metrics_samples`` (all when 0).
        """
        m = self.config.metrics_samples or self.config.samples_per_context
        return max(0, min(chunk.size, m - chunk.start))

    def _scored_chunk(
        self,
        proposal: Any,
        chunk: Chunk,
        drawn: dict[int, list[Any]],
        reported: int | None = None,
    ) -> Scored:
        """Draw one chunk and score it with the target.

        Its first ``reported`` samples (all by default) are also scored with the reported
        features and the base.
        """
        samples, log_q = draw_chunk(proposal, chunk)
        drawn[chunk.index] = samples
        log_p = cpu64(call_log_score(self.target, samples, chunk.context))
        if len(log_p) != chunk.size:
            raise ValueError(
                f"the target returned {len(log_p)} log-scores for {chunk.size} samples"
            )
        base = self.base if self.config.kl_from_base else None
        phi, log_a = features_and_base(
            self.config.features, base, chunk.context, samples[:reported]
        )
        shown = [
            (getattr(x, "text", str(x)), float(lp))
            for x, lp in zip(samples[: max(0, 8 - chunk.start)], log_p)
        ]
        return Scored(log_q, log_p, phi, log_a, shown)

    def _learn_chunk(
        self,
        chunk: Chunk,
        samples: list[Any],
        scored: Scored,
        log_z: float,
        n_contexts: int,
        weight: float = 1.0,
    ) -> Learned:
        """Score one chunk with the policy and backpropagate its share of the loss.

        ``weight`` 0: a lockstep dummy, whose forward and backward passes change nothing.
        """
        cfg, n = self.config, self.config.samples_per_context
        log_pi_parts, weights, weighted, losses = [], [], [], []
        score_time = backward_time = 0.0
        for part in slices(chunk.size, cfg.scoring_batch_size):
            tf = time.perf_counter()
            with self._autocast():
                log_pi = call_log_score(self.policy, samples[part], chunk.context, grad=True)
            score_time += time.perf_counter() - tf
            tb = time.perf_counter()
            out = self.loss(
                log_pi, scored.log_p[part], scored.log_q[part], log_z, context=chunk.context
            )
            share = (part.stop - part.start) / n
            (out.loss * share / n_contexts * weight).backward()  # weight 1: exact
            losses.append(float(out.loss.detach()) * share)
            backward_time += time.perf_counter() - tb
            log_pi_parts.append(out.policy_log_probs)
            if chunk.index >= 0:  # not a lockstep pad
                self._show_batch(chunk.context, samples[part], scored, part, out.policy_log_probs)
            weights.append(out.weights)
            weighted.append(out.weighted_rewards)
        self.gradients.chunk_done()
        return Learned(
            np.concatenate(log_pi_parts),
            np.concatenate(weights),
            np.concatenate(weighted),
            losses,
            score_time,
            backward_time,
        )

    def _show_batch(
        self, context: Any, samples: list[Any], scored: Scored, part: slice, log_pi: Any
    ) -> None:
        """Hand a scoring batch to the loggers that look at batches (``log_batch``)."""
        seeing = [lg for lg in self._batch_loggers if hasattr(lg, "log_batch")]
        if not seeing:
            return
        log_scores = {
            "proposal": torch.from_numpy(np.array(scored.log_q[part], dtype=np.float64)),
            "policy": torch.as_tensor(np.asarray(log_pi, dtype=np.float64)),
            "target": torch.from_numpy(np.array(scored.log_p[part], dtype=np.float64)),
        }
        for logger in seeing:
            logger.log_batch(self.step_count + 1, context, samples, log_scores)

    def step(self) -> dict[str, float]:
        """One gradient step; returns its metrics (averaged over the step's contexts).

        The step's samples are cut into chunks keyed by ``(seed, step, context, chunk)`` and
        dealt to the ranks of :attr:`world`; per-sample results are gathered in chunk order and
        gradients summed, so the step is the same on any number of processes.
        """
        t0 = time.perf_counter()
        with self.gradients.whole_model():  # a sharded mode gathers the model for the step
            result = self._step()
        result["time/step"] = time.perf_counter() - t0
        return result

    def _step(self) -> dict[str, float]:
        cfg, world = self.config, self.world
        contexts = world.broadcast(self._contexts())  # rank 0's draw, should streams differ
        timings = {"time/sample": 0.0, "time/score": 0.0, "time/backward": 0.0}
        if self.average is not None:
            timings["time/average"] = 0.0  # scoring the step's samples under the average
        self.optimizer.zero_grad(set_to_none=True)
        work = _StepWork(
            contexts,
            plan_chunks(
                contexts,
                cfg.samples_per_context,
                cfg.sampling_batch_size,
                cfg.seed,
                "tune",
                self.step_count,
            ),
        )
        self._sample(work, timings)
        work.log_zs = [
            self._estimate_log_z(context, work.rows(position))
            for position, context in enumerate(contexts)
        ]
        self._learn(work, timings)
        averaged = self._score_under_average(work, timings)
        per_context = [
            self._context_metrics(work, averaged, position, context)
            for position, context in enumerate(contexts)
        ]
        return self._apply_step(per_context, timings)

    def _sample(self, work: _StepWork, timings: dict[str, float]) -> None:
        """Draw the step's chunks from the proposal and score them with the target."""

        def score(c: Chunk) -> Scored:
            return self._scored_chunk(self.proposal, c, work.drawn, self._reported(c))

        def pad() -> None:  # lockstep: a short rank's dummy chunk, kept for its backward pass
            work.padding["s"] = self._scored_chunk(self.proposal, work.dummy, work.drawn, 0)

        ts = time.perf_counter()
        work.scored = self.world.gather_chunks(work.chunks, score, pad if self.lockstep else None)
        timings["time/sample"] += time.perf_counter() - ts
        kill_point(f"tuning: step {self.step_count + 1} sampled")

    def _estimate_log_z(self, context: Any, rows: list[Scored]) -> float:
        """Fold a context's batch into its estimate of ``log Z``; an error when it has none."""
        log_p = np.concatenate([s.log_p for s in rows])
        log_q = np.concatenate([s.log_q for s in rows])
        ratios = np.where(log_p == -np.inf, -np.inf, log_p - log_q)
        log_z = self.partition.update(context, ratios)
        if not math.isfinite(log_z):
            raise ValueError(
                f"no sample so far has positive target probability in context {context!r}: the "
                "partition function cannot be estimated (is the target's support reachable?)"
            )
        return log_z

    def _learn(self, work: _StepWork, timings: dict[str, float]) -> None:
        """Backpropagate every chunk's share of the loss, then sum the gradients across ranks."""
        world, chunks, n_contexts = self.world, work.chunks, len(work.contexts)
        mine = {c.index for c in world.mine(chunks)}

        def learn(c: Chunk) -> Learned:
            scored, log_z = work.scored[c.index], work.log_zs[c.position]
            return self._learn_chunk(c, work.drawn[c.index], scored, log_z, n_contexts)

        def pad() -> Learned:  # lockstep: a short rank's dummy chunk, weighing nothing
            dummy, scored = work.dummy, work.padding["s"]
            return self._learn_chunk(dummy, work.drawn[-1], scored, work.log_zs[0], 1, 0.0)

        with self.gradients.accumulating():
            work.learned = world.gather_chunks(chunks, learn, pad if self.lockstep else None)
        for c, piece in zip(chunks, work.learned):
            if c.index in mine:
                timings["time/score"] += piece.score_time
                timings["time/backward"] += piece.backward_time
        kill_point(f"tuning: step {self.step_count + 1} backward passes done")
        tc = time.perf_counter()
        world.together(self.gradients.finish)
        timings["time/collectives"] = time.perf_counter() - tc

    def _score_under_average(self, work: _StepWork, timings: dict[str, float]) -> list[np.ndarray]:
        """The averaged policy's log-probabilities of the reported samples (none unaveraged)."""
        if self.average is None:
            return []
        ta = time.perf_counter()
        averaged = self.world.gather_chunks(
            work.chunks,
            lambda c: self._averaged_log_scores(
                work.drawn[c.index][: self._reported(c)], c.context
            ),
        )
        timings["time/average"] += time.perf_counter() - ta
        return averaged

    def _context_metrics(
        self, work: _StepWork, averaged: list[np.ndarray], position: int, context: Any
    ) -> dict[str, float]:
        """One context's figures for the step, and its batch fed to the loss's baseline."""
        picks = [k for k, c in enumerate(work.chunks) if c.position == position]

        def joined(values: list[Any]) -> Any:
            parts = [values[k] for k in picks]
            return None if parts[0] is None else np.concatenate(parts)

        scored, learned = work.scored, work.learned
        log_p = joined([s.log_p for s in scored])
        log_q = joined([s.log_q for s in scored])
        phi = joined([s.phi for s in scored])
        log_a = joined([s.log_a for s in scored])
        self.loss.record_batch(
            joined([piece.weights for piece in learned]),
            joined([piece.weighted for piece in learned]),
            context,
        )
        self.last_samples = [
            {"context": str(context), "text": text, "target_log_score": lp}
            for k in picks
            for text, lp in scored[k].shown
        ][:8]
        # The reported estimates use the batch's first metrics_samples samples (all by
        # default): the draws are exchangeable, so the first m are a random subset.
        m = self.config.metrics_samples or self.config.samples_per_context
        log_p, log_q = log_p[:m], log_q[:m]
        phi = None if phi is None else phi[:m]
        log_a = None if log_a is None else log_a[:m]
        log_pi_all = joined([piece.log_pi for piece in learned])[:m]
        log_z = work.log_zs[position]
        metrics = self._report(log_p, log_pi_all, log_q, log_z, phi, log_a)
        if self.average is not None:
            # The names without a prefix describe the policy tune() returns: the average.
            iterate = metrics
            log_avg = joined(averaged)[:m]
            metrics = self._report(log_p, log_avg, log_q, log_z, phi, log_a)
            metrics.update({f"iterate/{k}": v for k, v in iterate.items()})
        metrics["loss"] = float(sum(x for k in picks for x in learned[k].losses))
        return metrics

    def _apply_step(
        self, per_context: list[dict[str, float]], timings: dict[str, float]
    ) -> dict[str, float]:
        """Step the optimizer, the schedule and the average; the step's metrics."""
        cfg = self.config
        grad_norm = self.gradients.step(self.optimizer, list(self.parameters.values()))
        self.scheduler.step()
        if self.average is not None:
            self.average.update()
        self.step_count += 1
        result = {k: across_contexts(k, [m[k] for m in per_context]) for k in per_context[0]}
        result.update(timings)
        result["grad_norm"] = grad_norm
        result["lr"] = float(self.optimizer.param_groups[0]["lr"])
        result["baseline"] = self.loss.baseline
        if cfg.proposal == "offline" and self.step_count % cfg.proposal_update_interval == 0:
            result["proposal_updated"] = float(self._maybe_update_proposal(per_context))
        return result

    def _maybe_update_proposal(self, per_context: list[dict[str, float]]) -> bool:
        """Replace the frozen proposal by the policy when the policy is closer to the target.

        The policy is the one tune() returns: with averaging, the average of the iterates (less
        noisy than the last iterate, so a better proposal).
        """
        if self.proposal_copied_at == self.step_count - 1:
            # This step's estimates are of the policy the proposal was copied from: the two are
            # equal but for rounding, and a tie decided by rounding would depend on the order of
            # float sums, so on the number of processes.
            return False
        metric = self.config.proposal_update_metric
        # Both are estimated on the same samples from the proposal (before this step's update).
        policy_div = np.mean([m[f"{metric}_target_policy"] for m in per_context])
        proposal_div = np.mean([m[f"{metric}_target_proposal"] for m in per_context])
        if policy_div < proposal_div:
            with (
                self.average.swapped_in() if self.average is not None else contextlib.nullcontext()
            ):
                self.proposal = self._frozen_copy(self.policy)
            self.proposal_copied_at = self.step_count
            return True
        return False


@dataclasses.dataclass
class _StepWork:
    """What one step has computed so far, chunk by chunk (in the order of :attr:`chunks`)."""

    contexts: list[Any]
    chunks: list[Chunk]
    drawn: dict[int, list[Any]] = dataclasses.field(default_factory=dict)
    scored: list[Scored] = dataclasses.field(default_factory=list)
    learned: list[Learned] = dataclasses.field(default_factory=list)
    log_zs: list[float] = dataclasses.field(default_factory=list)
    # Lockstep: the scores of a short rank's pad chunk (a copy of the first, index -1).
    padding: dict[str, Scored] = dataclasses.field(default_factory=dict)

    @property
    def dummy(self) -> Chunk:
        return dataclasses.replace(self.chunks[0], index=-1)

    def rows(self, position: int) -> list[Scored]:
        """The scored chunks of the step's ``position``-th context."""
        return [s for c, s in zip(self.chunks, self.scored) if c.position == position]
