"""One tuning loop for DPG, CDPG and f-DPG (DESIGN §5)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disco import numerics
from disco._calls import call_log_score
from disco._crash_points import kill_point
from disco._lock import exclusive
from disco._torch_modules import device_of, torch_module, trainable_parameters
from disco.distributed import Chunk, current_world, draw_chunk, plan_chunks
from disco.distributions.contexts import resolve_contexts
from disco.parallel import for_tuner
from disco.tuners import checkpoint
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
from disco.tuners.losses import FDivergenceLoss, KLLoss
from disco.tuners.optimization import autocast, make_optimizer, make_scheduler
from disco.tuners.stopping import has_converged

__all__ = ["Tuner"]


def _in_original_spelling(loss: Any, settings: dict[str, Any]) -> bool:
    """Whether a call uses the original disco's forms.

    Those are its setting names, a proposal in third place or as ``proposal=``, or features as
    ``(name, scorer)`` pairs.
    """
    names = {f.name for f in dataclasses.fields(TunerConfig)}
    return (
        bool(set(settings) - names)
        or (loss is not None and not isinstance(loss, FDivergenceLoss))
        or not isinstance(settings.get("proposal", "online"), str)
        or any(isinstance(f, tuple) for f in settings.get("features", ()))
    )


def _from_original(
    target: Any, loss: Any, given: dict[str, Any], settings: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The loss and the native keywords for a call in the original's forms."""
    from disco.compat import tuner_arguments  # the alias layer holds the translation

    # left at their defaults: "" for the context (None is a context too), None for the others
    given = {
        k: v
        for k, v in given.items()
        if not (isinstance(v, str) and v == "" if k == "context" else v is None)
    }
    native = tuner_arguments(target, [] if loss is None else [loss], {**given, **settings}, "loss")
    return native.pop("loss", None), native


class Tuner:
    """Tunes a policy ``pi`` towards a target EBM ``P`` by minimising ``D_f(pi ‖ p)``.

    Parameters
    ----------
    policy:
        The distribution to tune (an ``EnumerableLM``, an ``LMDistribution`` created with
        ``freeze=False``, ...): it samples, scores with ``grad=True`` and has trainable parameters.
    target:
        The EBM (anything with ``log_score(samples, context)``), e.g. from ``base.constrain``.
    loss:
        An :class:`~disco.tuners.losses.FDivergenceLoss`; default forward KL (DPG).
    context, context_distribution:
        One fixed context, or a distribution of contexts drawn ``contexts_per_step`` at a time
        (conditional tuning, CDPG).
    base:
        The original model, for reporting ``KL(pi ‖ base)`` when ``kl_from_base`` is set.
    proposal_distribution:
        Offline tuning: sample from this distribution (replaced by a frozen copy of the policy
        whenever the policy is closer to the target); default: a frozen copy of the policy.
    loggers:
        Objects with ``start(config)``, ``log(step, metrics)`` and ``close()`` (see
        :mod:`disco.tuners.loggers`).
    config, **settings:
        A :class:`TunerConfig`, and/or settings overriding it by name (an unknown name is an error).
    """

    default_loss: type[FDivergenceLoss] = KLLoss

    def __init__(
        self,
        policy: Any,
        target: Any,
        loss: FDivergenceLoss | None = None,
        *,
        context: Any = "",
        context_distribution: Any = None,
        base: Any = None,
        loggers: Sequence[Any] = (),
        config: TunerConfig | None = None,
        proposal_distribution: Any = None,
        **settings: Any,
    ) -> None:
        given = {
            "context": context,
            "context_distribution": context_distribution,
            "base": base,
            "proposal_distribution": proposal_distribution,
        }
        if _in_original_spelling(loss, settings):
            loss, settings = _from_original(target, loss, given, settings)
            given = {k: settings.pop(k, "" if k == "context" else None) for k in given}
        self.config = (config or TunerConfig()).replace(**settings)
        cfg = self.config
        self.policy = policy
        self.target = target
        self.loss = loss or self.default_loss(
            baseline=cfg.baseline, baseline_window=cfg.baseline_window, max_log_t=cfg.max_log_t
        )
        self.context = given["context"]
        self.context_distribution = given["context_distribution"]
        self.base = given["base"]
        if cfg.kl_from_base and self.base is None:
            raise ValueError("kl_from_base=True needs the tuner's base distribution (base=...)")
        self.loggers = list(loggers)
        self._set_up_training()
        self._set_up_proposal(given["proposal_distribution"])
        self._set_up_state()

    # --- setup --------------------------------------------------------------------------

    def _set_up_training(self) -> None:
        """The parallel mode, then the optimizer and schedule over the parameters it leaves."""
        cfg = self.config
        self.module = torch_module(self.policy)
        self.parameters = trainable_parameters(self.module)
        if not self.parameters:
            raise ValueError("the policy has no trainable parameters (create it with freeze=False)")
        self.world = current_world()
        others = {
            "target": self.target,
            "base": self.base,
            **{f"features[{k}]": f for k, f in enumerate(cfg.features)},
        }
        self.gradients = for_tuner(
            cfg, self.policy, list(self.parameters.values()), self.world, others
        )
        # Lockstep: every rank calls the sharded model alike (a dummy chunk pads a short share).
        self.lockstep = self.gradients.lockstep
        self.parameters = trainable_parameters(self.module)  # a mode may replace them (shards)
        self.device = device_of(self.module)
        self.optimizer = make_optimizer(cfg, list(self.parameters.values()))
        self.gradients.prepare(self.optimizer, cfg.max_grad_norm)
        self.scheduler = make_scheduler(cfg, self.optimizer)

    def _set_up_proposal(self, proposal_distribution: Any) -> None:
        """What the step samples from, and the parameter average (both may copy the policy)."""
        cfg = self.config
        if proposal_distribution is not None and cfg.proposal != "offline":
            raise ValueError("a proposal distribution means offline tuning: set proposal='offline'")
        if proposal_distribution is not None:
            self.proposal = proposal_distribution
        else:
            self.proposal = (
                self.policy if cfg.proposal == "online" else self._frozen_copy(self.policy)
            )
        self.average = (
            ParameterAverage(self.parameters, cfg.averaging_decay, cfg.averaging_power)
            if cfg.averaging == "ema"
            else None
        )

    def _set_up_state(self) -> None:
        """What the loop keeps from step to step (all of it in a checkpoint)."""
        self.step_count = 0
        # The step after which the offline proposal was last replaced by the policy (None: never).
        self.proposal_copied_at: int | None = None
        self.partition = LogZEstimate()
        self.history: list[dict[str, float]] = []
        self.last_samples: list[dict[str, Any]] = []
        self.rng = np.random.default_rng(self.config.seed)
        self._seeded = False
        self._batch_loggers: list[Any] = []  # the loggers of a running tune(), on rank 0
        # Set by request_stop (from a signal handler, say); honoured at the next step boundary.
        self.stop_requested = False
        self.stopped = False  # whether the last tune() ended early on a request

    @staticmethod
    def _frozen_copy(policy: Any) -> Any:
        copy = policy.clone()
        for p in torch_module(copy).parameters():
            p.requires_grad_(False)
        return copy

    def _autocast(self) -> Any:
        return autocast(self.config.autocast, self.device)

    # --- partition function --------------------------------------------------------------

    def log_z(self, context: Any = "") -> float:
        """The current estimate of ``log Z`` for a context (``nan`` if it was never seen)."""
        return self.partition.log_z(context)

    @property
    def log_z_sums(self) -> dict[str, tuple[float, float]]:
        """Per context, ``(log Σ w_b Z_b, log Σ w_b)`` over its batches (see :class:`LogZEstimate`)."""
        return self.partition.sums

    # --- the loop ----------------------------------------------------------------------------

    def _contexts(self) -> list[Any]:
        return resolve_contexts(
            self.context,
            None,
            self.context_distribution,
            self.config.contexts_per_step,
            rng=self.rng,
        )

    def _metrics(
        self,
        log_p: np.ndarray,
        log_pi: np.ndarray,
        log_q: np.ndarray,
        log_z: float,
        phi: np.ndarray | None,
        log_a: np.ndarray | None,
    ) -> dict[str, float]:
        features = self.config.features
        return step_metrics(self.loss.kind, features, log_p, log_pi, log_q, log_z, phi, log_a)

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
        dummy = work.dummy
        ts = time.perf_counter()
        work.scored = self.world.gather_chunks(
            work.chunks,
            lambda c: self._scored_chunk(self.proposal, c, work.drawn, self._reported(c)),
            (lambda: work.padding.update(s=self._scored_chunk(self.proposal, dummy, work.drawn, 0)))
            if self.lockstep
            else None,
        )
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
        with self.gradients.accumulating():
            work.learned = world.gather_chunks(
                chunks,
                lambda c: self._learn_chunk(
                    c,
                    work.drawn[c.index],
                    work.scored[c.index],
                    work.log_zs[c.position],
                    n_contexts,
                ),
                (
                    lambda: self._learn_chunk(
                        work.dummy, work.drawn[-1], work.padding["s"], work.log_zs[0], 1, 0.0
                    )
                )
                if self.lockstep
                else None,
            )
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
        metrics = self._metrics(log_p, log_pi_all, log_q, log_z, phi, log_a)
        if self.average is not None:
            # The names without a prefix describe the policy tune() returns: the average.
            iterate = metrics
            log_avg = joined(averaged)[:m]
            metrics = self._metrics(log_p, log_avg, log_q, log_z, phi, log_a)
            metrics.update({f"iterate/{k}": v for k, v in iterate.items()})
        metrics["loss"] = float(sum(x for k in picks for x in learned[k].losses))
        return metrics

    def _apply_step(
        self, per_context: list[dict[str, float]], timings: dict[str, float]
    ) -> dict[str, float]:
        """Step the optimizer, the schedule and the average; the step's metrics."""
        cfg = self.config
        grad_norm = self.gradients.step(list(self.parameters.values()))
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

    def tune(self, n_steps: int | None = None) -> list[dict[str, float]]:
        """Run the loop (the remaining steps, or ``n_steps`` more); returns the metric history.

        With a ``checkpoint_dir`` the folder has one writer: this process (rank 0) holds an OS
        lock on it until ``tune()`` returns, and a ``RuntimeError`` naming the folder and the
        holder's PID is raised (on every rank) when another process holds it. After
        :meth:`request_stop` the loop ends at the next step boundary, after that step's checkpoint,
        and :attr:`stopped` is set.
        """
        folder = self.config.checkpoint_dir
        with contextlib.ExitStack() as held:
            if folder:
                self.world.together(
                    lambda: held.enter_context(exclusive(folder)) if self.world.is_main else None
                )
            return self._tune(n_steps)

    def request_stop(self) -> None:
        """Ask :meth:`tune` to stop at the end of the step in progress (safe in a signal handler).

        Under ``torch.distributed`` one rank's request stops every rank after the same step.
        """
        self.stop_requested = True

    def stop_agreed(self) -> bool:
        """Whether any rank has requested a stop; every rank calls it at the same point."""
        return any(self.world.all_gather(self.stop_requested))

    def _tune(self, n_steps: int | None) -> list[dict[str, float]]:
        cfg = self.config
        self.stopped = False
        if not self._seeded and self.step_count == 0:
            torch.manual_seed(cfg.seed)
            random.seed(cfg.seed)
            self._seeded = True
        last = cfg.n_steps if n_steps is None else self.step_count + n_steps
        if self.average is not None:
            self.average.release()  # train the iterate; the average comes back at the end
        # A call after the stopping rule fired judges its own steps, or it would stop at once.
        first_of_call = len(self.history)
        loggers = self.loggers if self.world.is_main else []  # one process reports
        self._batch_loggers = loggers
        for logger in loggers:
            logger.start(
                {**cfg.to_dict(), "loss": type(self.loss).__name__, "start_step": self.step_count}
            )
        saved = False
        try:
            while self.step_count < last:
                metrics = self.step()
                if (
                    cfg.validation_interval
                    and cfg.validation_contexts
                    and self.step_count % cfg.validation_interval == 0
                ):
                    metrics.update(self.validate())
                self.history.append(metrics)
                for logger in loggers:
                    logger.log(self.step_count, metrics)
                kill_point(f"tuning: step {self.step_count} logged")
                saved = bool(
                    cfg.checkpoint_dir
                    and cfg.checkpoint_interval
                    and self.step_count % cfg.checkpoint_interval == 0
                )
                if saved:
                    self.save_checkpoint()
                # After the checkpoint: a request made while it was written stops here too.
                if self.stop_agreed():
                    self.stop_requested, self.stopped = False, True
                    break
                if self.converged(since=first_of_call):
                    break
            if cfg.checkpoint_dir and not (self.stopped and saved):
                self.save_checkpoint()
            if self.average is not None:
                self.average.hold()
            self.gradients.hand_over()  # the tuned policy usable without collectives
        finally:
            self._batch_loggers = []
            for logger in loggers:
                logger.close()
        return self.history

    def converged(self, since: int = 0) -> bool:
        """Whether the divergence estimate has stopped improving (``stopping_window`` > 0).

        Only the steps of the history from index ``since`` on are considered (see
        :func:`~disco.tuners.stopping.has_converged`).
        """
        values = [h["divergence"] for h in self.history[since:] if "divergence" in h]
        return has_converged(values, self.config.stopping_window)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Estimate the divergences on the validation contexts with fresh policy samples.

        The policy is the one tune() returns: the average of the iterates, when averaging.
        """
        cfg = self.config
        contexts = list(cfg.validation_contexts)
        chunks = plan_chunks(
            contexts,
            cfg.validation_samples,
            cfg.sampling_batch_size,
            cfg.seed,
            "validate",
            self.step_count,
        )
        with (
            self.average.swapped_in() if self.average is not None else contextlib.nullcontext(),
            self.gradients.whole_model(),
        ):
            scored = self.world.gather_chunks(
                chunks,
                lambda c: self._scored_chunk(self.policy, c, {}),
                (lambda: draw_chunk(self.policy, chunks[0])) if self.lockstep else None,
            )
        rows = []
        for position, context in enumerate(contexts):
            mine = [s for c, s in zip(chunks, scored) if c.position == position]
            log_p = np.concatenate([s.log_p for s in mine])
            log_q = np.concatenate([s.log_q for s in mine])
            phi = None if mine[0].phi is None else np.concatenate([s.phi for s in mine])
            log_a = None if mine[0].log_a is None else np.concatenate([s.log_a for s in mine])
            ratios = np.where(log_p == -np.inf, -np.inf, log_p - log_q)
            log_z = self.log_z(context)
            if not math.isfinite(log_z):
                log_z = numerics.logmeanexp(ratios)
            rows.append(self._metrics(log_p, log_q, log_q, log_z, phi, log_a))
        return {f"validation/{k}": float(np.mean([r[k] for r in rows])) for k in rows[0]}

    # --- checkpoints (disco.tuners.checkpoint holds the format) ----------------------------

    def save_checkpoint(self, directory: str | os.PathLike[str] | None = None) -> Path:
        """Write a checkpoint atomically; returns its folder (``checkpoint_dir/step-NNNNNNNN``).

        Every rank holds the same state (a sharded mode gathers it whole first), so rank 0
        alone writes it (a failure there is raised on every rank); it loads under any number of
        processes.
        """
        whole = self.gradients.whole_state(self.parameters, self.optimizer)

        def write() -> Path | None:
            if not self.world.is_main:
                return None
            if self.average is not None and self.average.held:  # the checkpoint holds the iterate
                with self.average.iterate_in_place():
                    return checkpoint.save(self, directory, whole)
            return checkpoint.save(self, directory, whole)

        folder = self.world.together(write)
        return self.world.broadcast(folder)  # type: ignore[return-value]

    def load_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Restore a checkpoint folder, or the newest intact one under a checkpoint root.

        Returns the folder restored; damaged checkpoints are skipped with a warning naming the
        bad file (see :mod:`disco.tuners.checkpoint`).
        """
        return checkpoint.load(self, path)


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
