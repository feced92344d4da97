"""The whole path of a run, in stages: fit the target, tune a policy, sample with QRS, report.

Each stage seeds torch from the run's seed and the stage's name, so a stage draws the same
whether or not the run was resumed before it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from disco._lock import FolderInUseError, exclusive
from disco.cli import files, report
from disco.cli.build import build_feature, load_lm, make_loggers, make_policy, make_tuner
from disco.cli.config import RunConfig
from disco.cli.errors import TuningInterrupted, UserError, first_line
from disco.cli.interrupt import StopBetweenSteps, StoppedBetweenSteps
from disco.cli.sampling import draw, draw_exactly, qrs_log_beta, shares
from disco.cli.sources import MAX_CONFIG_BYTES
from disco.distributed import current_world

__all__ = ["run_pipeline"]


def _stage_seed(seed: int, stage: str) -> int:
    """A seed for one stage of the run, so it draws the same whether or not the run resumed."""
    digest = hashlib.sha256(f"{seed}:{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _interactive() -> bool:
    """Progress bars only on a terminal: logs and pipes get plain lines."""
    return sys.stderr.isatty()


def _comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that must match for a run to be resumed (more steps and output may differ)."""
    plain = json.loads(json.dumps(cfg))
    plain["tuner"].pop("n_steps", None)
    plain.pop("output", None)
    return plain


def _no_run(out: Path) -> UserError:
    return UserError(f"no run to resume in {out}", "--resume", "resume a run that began tuning")


def check_resumable(cfg: Mapping[str, Any], out: Path) -> None:
    """``out`` holds a run with a checkpoint and the same settings as ``cfg`` (but n_steps, [output])."""
    from disco.tuners import checkpoint

    saved = out / "config.json"
    if not (out / "ebm" / "ebm.json").is_file() or not saved.is_file():
        raise _no_run(out)
    if checkpoint.find(out / "checkpoints") is None:
        raise UserError(
            f"no checkpoint in {out / 'checkpoints'}", "--resume", "run again without --resume"
        )
    try:
        if saved.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError("too large")
        recorded = json.loads(saved.read_bytes().decode("utf-8"))
        before = _comparable(recorded)
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError) as err:
        raise UserError(
            f"{saved} is unreadable ({err})", "--resume", "run again without --resume"
        ) from None
    now = _comparable(cfg)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise UserError(
            f"the configuration's {', '.join(changed)} differ from the run's (config.json)",
            "--resume",
            "resume with the run's settings (only tuner.n_steps and [output] may change)",
        )


class _Run:
    """One run's settings, folder and what its stages have made so far."""

    def __init__(self, cfg: RunConfig, out: Path, *, resume: bool, allow_imports: bool) -> None:
        self.cfg = cfg
        self.out = out
        self.resume = resume
        self.allow_imports = allow_imports
        self.checkpoints = out / "checkpoints"
        self.features = [
            build_feature(spec, i, allow_imports=allow_imports)
            for i, spec in enumerate(cfg.features)
        ]
        self.moments = [float(s["moment"]) for s in cfg.features]
        self.names = [f.name for f in self.features]
        self.report: dict[str, Any] = {
            "model": cfg.model.path or "embedded KJV GPT-2",
            "contexts": cfg.contexts,
            "features": self.names,
            "targets": self.moments,
            "seed": cfg.seed,
            "world_size": current_world().size,
            "interrupted": False,
        }

    def seed_stage(self, stage: str) -> None:
        """Seed torch for ``stage`` of this run."""
        import torch

        torch.manual_seed(_stage_seed(self.cfg.seed, stage))

    # ------------------------------------------------------------------------------ fit

    def fit(self, base: Any) -> Any:
        """The target EBM: fitted on base samples and saved, or (resuming) loaded."""
        from disco._crash_points import kill_point
        from disco.io import load_ebm, save_ebm

        if self.resume:
            try:
                return load_ebm(self.out / "ebm", allow_imports=self.allow_imports)
            except (ValueError, OSError) as err:
                raise UserError(
                    f"cannot load the run's EBM: {err}", "--resume", "rerun it"
                ) from None
        contexts, n = self.cfg.contexts, self.cfg.fit.n_samples
        main = current_world().is_main  # every rank runs the pipeline; rank 0 writes and prints
        if main:
            print(
                f"disco: fitting the target's coefficients on {n} base samples ...", file=sys.stderr
            )
        where: dict[str, Any] = (
            {"context": contexts[0]} if len(contexts) == 1 else {"contexts": contexts}
        )
        try:
            target = base.constrain(
                self.features,
                self.moments,
                n_samples=n,
                sampling_size=min(256, n),
                progress=_interactive(),
                seed=_stage_seed(self.cfg.seed, "fit"),
                **where,
            )
        except ValueError as err:
            raise UserError(
                f"cannot fit the constraints: {err}",
                "features",
                "choose moments the base model can reach, or draw more samples ([fit] n_samples)",
            ) from None
        if main:
            print(target.fit_report, file=sys.stderr)
        try:
            if main:
                save_ebm(target, self.out / "ebm")
        except ValueError as err:
            raise UserError(str(err), "features", "use features that can be saved") from None
        kill_point("run: ebm saved")
        return target

    # ----------------------------------------------------------------------------- tune

    def _tuner(self, policy: Any, target: Any, base: Any) -> Any:
        from disco.tuners import checkpoint

        tuner = make_tuner(
            self.cfg,
            policy,
            target,
            base,
            loggers=make_loggers(self.out, self.cfg.output.loggers, append=self.resume),
            features=tuple(self.features),
            kl_from_base=True,
            checkpoint_dir=str(self.checkpoints),
        )
        if self.resume:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", checkpoint.CheckpointWarning)
                try:
                    tuner.load_checkpoint(self.checkpoints)
                except checkpoint.CheckpointError as err:
                    raise UserError(str(err), "--resume", "run again without --resume") from None
            for warning in caught:
                print(f"disco: warning: {warning.message}", file=sys.stderr)
            files.keep_steps_up_to(self.out / "metrics.jsonl", tuner.step_count)
            print(f"disco: resuming after step {tuner.step_count}", file=sys.stderr)
        return tuner

    def stopped(self, interrupt: KeyboardInterrupt) -> TuningInterrupted:
        """Record in a partial report where the run stopped (its newest checkpoint's step).

        The exception to raise then. At a step boundary that checkpoint is the step just
        finished; stopped at once, it is the last one written before.
        """
        from disco.tuners import checkpoint

        signum = getattr(interrupt, "signum", signal.SIGINT)
        self.report["interrupted"] = True
        self.report["signal"] = signal.Signals(signum).name
        latest = checkpoint.find(self.checkpoints)
        self.report["steps"] = 0 if latest is None else int(latest.name.removeprefix("step-"))
        if latest is not None:
            self.report["checkpoint"] = str(latest)
        files.write_report(self.out, self.report)
        return TuningInterrupted(signum)

    def tune(
        self, target: Any, base: Any, stopper: StopBetweenSteps
    ) -> tuple[Any, list[dict[str, float]], int]:
        """The tuned (frozen, saved) policy, the per-step metrics and the number of steps.

        A stop signal during tuning ends it after the step in progress and its checkpoint
        (:class:`StoppedBetweenSteps`, on every rank at the same step).
        """
        from disco._crash_points import kill_point
        from disco.features import FeatureError
        from disco.parallel import whole_state_dict

        policy = make_policy(self.cfg.model, self.cfg.lora)
        tuner = self._tuner(policy, target, base)
        files.write_report(
            self.out, {**self.report, "interrupted": True, "steps": tuner.step_count}
        )
        try:
            stopper.watch(tuner)
            try:
                history = tuner.tune()
            finally:
                stopper.watch(None)
            # A signal during the last step's checkpoint was not seen by tune(): stop now.
            if tuner.stopped or tuner.stop_agreed():
                signals = [s for s in current_world().all_gather(stopper.signum) if s]
                raise StoppedBetweenSteps(signals[0] if signals else signal.SIGTERM)
        except FeatureError as err:
            raise UserError(str(err), "features", "fix the feature's function") from None
        except OSError as err:
            raise UserError(
                f"cannot write to the run folder: {err}",
                "output.dir",
                "free some space; report.json and the last checkpoint are intact, and "
                "disco run CONFIG --out RUN_DIR --resume continues",
            ) from None
        except (ValueError, RuntimeError) as err:
            raise UserError(
                f"tuning failed: {first_line(err)}",
                "tuner",
                "see the message; e.g. more samples_per_context, or a smaller learning_rate",
            ) from None
        policy.freeze()
        # gathered whole if the parallel mode shards it: every rank takes part
        whole = whole_state_dict(policy.model)
        if current_world().is_main:
            files.save_policy(policy, self.out / "policy", whole)
            kill_point("run: policy saved")
            report.try_plot(
                lambda: report.plot_tuning(
                    history, self.names, self.moments, self.out / "tuning.png"
                ),
                "tuning.png",
            )
        return policy, history, tuner.step_count

    # --------------------------------------------------------------------------- sample

    def evaluate(self, target: Any, policy: Any, base: Any) -> Any:
        """The tuned policy against the target, on one set of fresh samples of it.

        As many as the larger of ``eval_samples`` and the sampler's ``estimation_samples``; the
        samples are kept, for samples.jsonl and QRS's estimates.
        """
        from disco.evaluation import evaluate

        n = max(self.cfg.output.eval_samples, self.cfg.sampler.estimation_samples)
        return evaluate(
            policy,
            target,
            n=n,
            base=base,
            features=self.features,
            contexts=self.cfg.contexts,
            seed=_stage_seed(self.cfg.seed, "evaluate"),
            keep_samples=True,
        )

    def sample(
        self, target: Any, policy: Any, evaluation: Any
    ) -> tuple[list[tuple[str, list[Any]]], dict[str, Any]]:
        """QRS samples of the target through the tuned policy, and QRS's figures for the report.

        QRS's estimates rest on the evaluation's samples of the policy, so the curve's end at
        acceptance 1 is the table's KL(target || policy).
        """
        from disco import numerics
        from disco.samplers import SAMPLERS, QRSEstimator

        settings = self.cfg.sampler
        groups = evaluation.contexts
        estimator = QRSEstimator.from_log_scores(
            [g.log_target for g in groups],
            [g.log_policy for g in groups],
            contexts=[g.context for g in groups],
        )
        counts = shares(settings.n_samples, self.cfg.contexts)
        log_beta, rate = qrs_log_beta(
            estimator, settings.beta, settings.acceptance_rate, max(n for _, n in counts)
        )
        if current_world().is_main:
            report.try_plot(lambda: estimator.plot(self.out / "qrs.png"), "qrs.png")
        points = [
            numerics.qrs_point(g.log_target - g.log_policy, log_beta=log_beta) for g in groups
        ]
        at_beta = {
            key: numerics.mean_of_independent([getattr(p, key) for p in points])
            for key in ("acceptance_rate", "kl", "tv")
        }
        sampler = SAMPLERS["qrs"].build(target, policy, seed=self.cfg.seed, log_beta=log_beta)
        import torch

        with torch.no_grad():
            drawn = [(c, draw_exactly("qrs", sampler, n, c).samples) for c, n in counts]
        observed = sampler.statistics()
        return drawn, {
            "qrs_beta": sampler.beta,
            "qrs_log_beta": log_beta,
            "qrs_estimated_acceptance": rate,
            "qrs_estimated_acceptance_stderr": at_beta["acceptance_rate"].stderr,
            "qrs_acceptance": observed.acceptance_rate,
            "qrs_acceptance_stderr": observed.standard_error,
            "qrs_estimated_kl": estimator.divergence_at_beta(divergence="kl", log_beta=log_beta),
            "qrs_estimated_kl_stderr": at_beta["kl"].stderr,
            "qrs_estimated_tv": estimator.divergence_at_beta(divergence="tv", log_beta=log_beta),
            "qrs_estimated_tv_stderr": at_beta["tv"].stderr,
        }


def _figures(evaluation: Any) -> dict[str, Any]:
    """The evaluation's averaged figures as the report's flat keys, each with its ``_stderr``."""
    out: dict[str, Any] = {"evaluation_samples": evaluation.n}
    moments = list(evaluation.policy_moments.values())
    out["tuned_rate"] = [e.value for e in moments]
    out["tuned_rate_stderr"] = [e.stderr for e in moments]
    for key in (
        "kl_policy_base",
        "kl_target_policy",
        "tv_target_policy",
        "js_target_policy",
        "ess",
    ):
        estimate = getattr(evaluation, key)
        out[key], out[f"{key}_stderr"] = estimate.value, estimate.stderr
    return out


def run_pipeline(
    cfg: Mapping[str, Any] | RunConfig,
    out: Path,
    *,
    resume: bool = False,
    allow_imports: bool = False,
) -> dict[str, Any]:
    """Fit the EBM, tune a policy, sample with QRS; write the run folder; return the report.

    ``cfg`` is what :func:`~disco.cli.check_config` returns (or its :class:`RunConfig`). The
    folder gets ``config.json`` (the settings, normalised), ``ebm/``, ``policy/``,
    ``checkpoints/``, ``metrics.jsonl``, ``samples.jsonl``, ``report.json``, ``tuning.png``
    and ``qrs.png``. With ``resume``, the saved EBM and the latest checkpoint in ``out`` are
    loaded and tuning continues from there: from the newest intact checkpoint (damaged ones are
    skipped with a warning), with the steps logged after it dropped from ``metrics.jsonl``, so
    the run ends as the uninterrupted one would (same report, bit-identical weights).

    One writer per folder: the folder's lock is held (on rank 0) for the whole run, and a
    second writer gets a :class:`UserError` naming the process that holds it. SIGINT, SIGTERM
    and SIGUSR1 stop the run: during tuning after the step in progress and its checkpoint,
    otherwise (or on a second signal) at once; either way a partial report records the step
    and :class:`TuningInterrupted` is raised.
    """
    started = time.perf_counter()
    settings = cfg if isinstance(cfg, RunConfig) else RunConfig.from_normalised(cfg)
    if resume and not out.is_dir():
        raise _no_run(out)
    run = _Run(settings, out, resume=resume, allow_imports=allow_imports)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        _hold(out, held)  # before judging the folder: another writer may be changing it
        if resume:
            check_resumable(settings.as_dict(), out)
        with StopBetweenSteps() as stopper:
            try:
                return _stages(run, stopper, started)
            except KeyboardInterrupt as interrupt:
                raise run.stopped(interrupt) from None


def _hold(out: Path, held: contextlib.ExitStack) -> None:
    """Take the run folder's lock on rank 0 until ``held`` closes; refused on every rank."""
    world = current_world()
    try:
        world.together(lambda: held.enter_context(exclusive(out)) if world.is_main else None)
    except FolderInUseError as err:
        raise UserError(
            f"{out} is in use: {err.holder} is writing to it",
            "--out",
            "wait for that run to end, or write to another folder",
        ) from None


def _stages(run: _Run, stopper: StopBetweenSteps, started: float) -> dict[str, Any]:
    """The run's stages, in order, with the run folder held."""
    import torch

    from disco._crash_points import kill_point

    settings, out, resume = run.cfg, run.out, run.resume
    plain = settings.as_dict()
    if not resume and current_world().is_main:
        shutil.rmtree(run.checkpoints, ignore_errors=True)  # never resume another run's policy
        files.write_atomically(out / "config.json", json.dumps(plain, indent=2))
    torch.manual_seed(settings.seed)

    base = load_lm(settings.model)
    target = run.fit(base)
    run.report["coefficients"] = report.coefficients(target)
    run.seed_stage("base samples")
    base_drawn = draw(
        base, settings.contexts, settings.output.eval_samples, settings.seed, "base samples"
    )
    run.report["base_rate"], run.report["base_rate_stderr"] = report.rates_with_stderr(
        run.features, base_drawn
    )

    policy, _, steps = run.tune(target, base, stopper)
    run.seed_stage("tuned samples")
    evaluation = run.evaluate(target, policy, base)
    # samples.jsonl keeps eval_samples of them, as many as of the base model.
    kept = dict(shares(settings.output.eval_samples, settings.contexts))
    tuned_drawn = [(g.context, g.samples[: kept.get(g.context, 0)]) for g in evaluation.contexts]
    qrs_drawn, qrs_figures = run.sample(target, policy, evaluation)

    qrs_rate, qrs_rate_stderr = report.rates_with_stderr(run.features, qrs_drawn)
    run.report.update(
        {
            **_figures(evaluation),
            "qrs_rate": qrs_rate,
            "qrs_rate_stderr": qrs_rate_stderr,
            **qrs_figures,
            "steps": steps,
            "seconds": time.perf_counter() - started,
        }
    )
    run.report["verdicts"] = report.verdicts(run.report)
    drawn = {"base": base_drawn, "tuned": tuned_drawn, "qrs": qrs_drawn}
    files.write_jsonl(out / "samples.jsonl", report.sample_rows(run.features, run.names, drawn))
    kill_point("run: samples written")
    files.write_report(out, run.report)
    if current_world().is_main:
        print(report.format_table(run.report))
        print(f"\nreport folder: {out}")
    return run.report
