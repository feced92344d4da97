"""One tuning loop for DPG, CDPG and f-DPG (docs/design.md §6)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disco import numerics
from disco._crash_points import kill_point
from disco._lock import exclusive
from disco._torch_modules import device_of, torch_module, trainable_parameters
from disco.distributed import current_world, draw_chunk, plan_chunks
from disco.distributions.contexts import resolve_contexts
from disco.parallel import for_tuner
from disco.tuners import checkpoint
from disco.tuners.averaging import ParameterAverage
from disco.tuners.config import TunerConfig
from disco.tuners.log_z import LogZEstimate
from disco.tuners.losses import FDivergenceLoss, KLLoss
from disco.tuners.optimization import autocast, make_optimizer, make_scheduler
from disco.tuners.step import TuningStep
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


class Tuner(TuningStep):
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
            rows.append(self._report(log_p, log_q, log_q, log_z, phi, log_a))
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
