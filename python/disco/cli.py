"""The ``disco`` command: the whole path (express, tune, sample) offline, from flags or a config.

``disco demo`` runs it on the embedded model with a readable feature; ``disco run CONFIG.toml``
runs it from a configuration file; ``disco sample`` draws QRS or IMH samples from a saved EBM;
``disco inspect RUN_DIR`` prints a run's summary. Errors a user can act on print one line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["main"]

LOSSES = {
    "kl": "KLLoss",
    "reverse_kl": "ReverseKLLoss",
    "tv": "TVLoss",
    "js": "JSLoss",
    "chi2": "ChiSquareLoss",
    "reverse_chi2": "ReverseChiSquareLoss",
}


class UserError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""

    def __init__(self, what: str, key: str, fix: str) -> None:
        super().__init__(f"{what} ({key}): {fix}")


@dataclass
class RunSpec:
    """Everything one run needs, from flags or a config file."""

    out: Path
    model: str | None = None
    length: int = 30
    temperature: float = 1.0
    context: str = ""
    features: list[dict[str, Any]] = field(
        default_factory=lambda: [{"type": "word", "word": "LORD", "moment": 0.5}]
    )
    fit_samples: int = 2048
    tuner: dict[str, Any] = field(default_factory=dict)
    loss: str = "kl"
    acceptance_rate: float = 0.5
    beta: float | None = None
    estimator_samples: int = 2048
    qrs_samples: int = 64
    eval_samples: int = 256
    seed: int = 0


def _quick(out: Path, model: str | None, seed: int) -> RunSpec:
    return RunSpec(
        out=out,
        model=model,
        length=20,
        fit_samples=256,
        seed=seed,
        estimator_samples=256,
        qrs_samples=16,
        eval_samples=128,
        tuner={
            "n_steps": 8,
            "samples_per_context": 32,
            "learning_rate": 5e-4,
            "sampling_batch_size": 32,
            "scoring_batch_size": 32,
        },
    )


def _full(out: Path, model: str | None, seed: int) -> RunSpec:
    return RunSpec(
        out=out,
        model=model,
        seed=seed,
        tuner={
            "n_steps": 60,
            "samples_per_context": 128,
            "learning_rate": 3e-4,
            "sampling_batch_size": 64,
            "scoring_batch_size": 64,
        },
    )


def _features(specs: list[dict[str, Any]]) -> tuple[list[Any], list[float]]:
    from disco.features import feature
    from disco.scorers import BooleanScorer

    if not specs:
        raise UserError(
            "no features",
            "features",
            "add at least one [[features]] table with a type and a moment",
        )
    scorers, moments = [], []
    for i, spec in enumerate(specs):
        key = f"features[{i}]"
        if "moment" not in spec:
            raise UserError(
                "a feature has no target moment", f"{key}.moment", "add moment = <number>"
            )
        try:
            scorer = feature(spec)
        except ValueError as err:
            raise UserError(
                str(err),
                f"{key}.type",
                "see the feature types in the README's configuration section",
            ) from None
        moment = spec["moment"]
        if not isinstance(moment, int | float) or not math.isfinite(moment):
            raise UserError(
                f"moment {moment!r} is not a finite number", f"{key}.moment", "give a number"
            )
        if isinstance(scorer, BooleanScorer) and not 0.0 <= moment <= 1.0:
            raise UserError(
                f"moment {moment} of a boolean feature is outside [0, 1]",
                f"{key}.moment",
                "a boolean's moment is the fraction of samples where it holds",
            )
        scorers.append(scorer)
        moments.append(float(moment))
    return scorers, moments


def _lm(spec: RunSpec, freeze: bool = True) -> Any:
    from disco.distributions import LMDistribution

    if spec.model is not None and not Path(spec.model).exists() and "/" not in spec.model:
        raise UserError(
            f"model {spec.model!r} not found",
            "model.path",
            "give a local model folder or a Hub name (org/name)",
        )
    try:
        return LMDistribution(
            spec.model, length=spec.length, temperature=spec.temperature, freeze=freeze
        )
    except OSError as err:
        raise UserError(
            str(err).splitlines()[0], "model.path", "check the path, or that the Hub is reachable"
        ) from None


def _rate(scorer: Any, samples: list[Any], context: str) -> float:
    return float(scorer.score(samples, context).mean()) if samples else math.nan


def _plot_tuning(
    history: list[dict[str, float]], moment_key: str, target: float, path: Path
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    steps = range(1, len(history) + 1)
    left, right = fig.subplots(1, 2)
    left.plot(steps, [h.get(moment_key, math.nan) for h in history], label="policy (IS estimate)")
    left.axhline(target, color="k", linestyle="--", label="target")
    left.set_xlabel("step")
    left.set_ylabel(moment_key.removeprefix("moment/"))
    left.legend()
    right.plot(steps, [h["kl_target_policy"] for h in history], label="KL(p || policy)")
    right.plot(
        steps, [h.get("kl_policy_base", math.nan) for h in history], label="KL(policy || base)"
    )
    right.set_xlabel("step")
    right.set_ylabel("nats")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def execute(spec: RunSpec) -> dict[str, Any]:
    """Run the whole path; write the report folder; return the report."""
    import torch

    from disco.io import save_ebm
    from disco.samplers import QRSEstimator, QuasiRejectionSampler
    from disco.tuners import Tuner, TunerConfig
    from disco.tuners import losses as loss_module
    from disco.tuners.loggers import ConsoleLogger, JSONLogger

    if spec.loss not in LOSSES:
        raise UserError(
            f"unknown loss {spec.loss!r}", "tuner.loss", f"use one of {', '.join(LOSSES)}"
        )
    unknown = sorted(set(spec.tuner) - set(TunerConfig.field_help()))
    if unknown:
        raise UserError(
            f"unknown tuner setting {unknown[0]!r}",
            f"tuner.{unknown[0]}",
            "see TunerConfig.field_help() for the valid settings",
        )
    scorers, moments = _features(spec.features)
    spec.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    started = time.perf_counter()
    base = _lm(spec)
    report: dict[str, Any] = {
        "model": spec.model or "embedded KJV GPT-2",
        "context": spec.context,
        "features": [s.name for s in scorers],
        "targets": moments,
        "interrupted": False,
    }
    print(
        f"disco: base model {report['model']}; fitting the target on {spec.fit_samples} samples ...",
        file=sys.stderr,
    )
    try:
        target = base.constrain(
            scorers,
            moments,
            context=spec.context,
            n_samples=spec.fit_samples,
            sampling_size=min(256, spec.fit_samples),
        )
    except ValueError as err:
        raise UserError(
            str(err), "features", "choose moments the base model can reach, or draw more samples"
        ) from None
    print(target.fit_report, file=sys.stderr)
    save_ebm(target, spec.out / "ebm")
    report["coefficients"] = dict(
        zip(target.fit_report.features, target.fit_report.coefficients.tolist())
    )
    base_samples, _ = base.sample(spec.context, spec.eval_samples)

    policy = _lm(spec, freeze=False)
    loss = getattr(loss_module, LOSSES[spec.loss])()
    settings = {"seed": spec.seed, "checkpoint_dir": str(spec.out / "checkpoints"), **spec.tuner}
    tuner = Tuner(
        policy,
        target,
        loss,
        context=spec.context,
        base=base,
        kl_from_base=True,
        features=tuple(scorers),
        loggers=[ConsoleLogger(), JSONLogger(spec.out / "metrics.jsonl")],
        **settings,
    )
    try:
        history = tuner.tune()
    except KeyboardInterrupt:
        report["interrupted"] = True
        report["steps"] = tuner.step_count
        (spec.out / "report.json").write_text(json.dumps(report, indent=2))
        raise
    policy.model.save_pretrained(spec.out / "policy")
    policy.tokenizer.save_pretrained(spec.out / "policy")
    tuned_samples, _ = policy.sample(spec.context, spec.eval_samples)

    estimator = QRSEstimator(
        target, policy, context=spec.context, n_samples=spec.estimator_samples, progress=False
    )
    beta = (
        spec.beta
        if spec.beta is not None
        else estimator.beta_for_acceptance_rate(spec.acceptance_rate)
    )
    sampler = QuasiRejectionSampler(target, policy, beta=beta, seed=spec.seed)
    qrs = sampler.sample_n(
        spec.qrs_samples, spec.context, progress=False, max_proposals=200 * spec.qrs_samples
    )
    estimator.plot(spec.out / "qrs.png")
    moment_key = f"moment/{scorers[0].name}"
    _plot_tuning(history, moment_key, moments[0], spec.out / "tuning.png")

    first = scorers[0]
    report.update(
        {
            "base_rate": _rate(first, base_samples, spec.context),
            "tuned_rate": _rate(first, tuned_samples, spec.context),
            "qrs_rate": _rate(first, qrs.samples, spec.context),
            "kl_policy_base": history[-1]["kl_policy_base"],
            "kl_target_policy": history[-1]["kl_target_policy"],
            "qrs_beta": float(beta),
            "qrs_acceptance_rate": estimator.acceptance_rate_at_beta(beta),
            "qrs_kl_to_target": estimator.divergence_at_beta(beta, "kl"),
            "qrs_tv_to_target": estimator.divergence_at_beta(beta, "tv"),
            "qrs_empirical_acceptance_rate": sampler.statistics(spec.context).acceptance_rate,
            "steps": tuner.step_count,
            "seconds": time.perf_counter() - started,
        }
    )
    with open(spec.out / "samples.jsonl", "w") as f:
        for source, samples in (
            ("base", base_samples),
            ("tuned", tuned_samples),
            ("qrs", qrs.samples),
        ):
            for s in samples:
                f.write(
                    json.dumps(
                        {
                            "source": source,
                            "text": s.text,
                            first.name: bool(first.score([s], spec.context)[0]),
                        }
                    )
                    + "\n"
                )
    (spec.out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    print(summary_table(report))
    print(f"\nreport folder: {spec.out}")
    return report


def summary_table(report: dict[str, Any]) -> str:
    """The before/after table printed at the end of a run."""
    rows = [
        (f"rate of {report['features'][0]}: base model", f"{report['base_rate']:.3f}"),
        ("target", f"{report['targets'][0]:.3f}"),
        ("tuned policy", f"{report['tuned_rate']:.3f}"),
        ("QRS samples on the tuned policy", f"{report['qrs_rate']:.3f}"),
        ("KL(policy || base), nats", f"{report['kl_policy_base']:.4f}"),
        ("KL(target || policy), nats", f"{report['kl_target_policy']:.4f}"),
        (
            f"QRS beta (for acceptance {report['qrs_acceptance_rate']:.2f})",
            f"{report['qrs_beta']:.4g}",
        ),
        ("QRS KL(target || output), nats", f"{report['qrs_kl_to_target']:.4f}"),
        ("QRS TV(target, output)", f"{report['qrs_tv_to_target']:.4f}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def _load_config(path: Path) -> dict[str, Any]:
    import importlib

    try:
        tomllib: Any = importlib.import_module("tomllib")
    except ImportError:  # Python 3.10
        try:
            tomllib = importlib.import_module("tomli")
        except ImportError:
            raise UserError(
                "reading TOML needs Python 3.11 or the tomli package",
                str(path),
                "pip install tomli",
            ) from None
    if not path.exists():
        raise UserError(f"config file {path} not found", "CONFIG", "give the path of a .toml file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserError(
            f"malformed TOML: {err}", path.name, "fix the syntax at that line"
        ) from None


def spec_from_config(config: dict[str, Any], out: Path | None) -> RunSpec:
    """Build a :class:`RunSpec` from a parsed config (unknown keys are errors)."""
    sections = {"model", "context", "features", "tuner", "sampler", "output", "seed", "fit"}
    for key in config:
        if key not in sections:
            raise UserError(
                f"unknown key {key!r}", key, f"valid top-level keys: {', '.join(sorted(sections))}"
            )
    model = config.get("model", {})
    for key in model:
        if key not in ("path", "length", "temperature"):
            raise UserError(
                f"unknown key {key!r}", f"model.{key}", "valid keys: path, length, temperature"
            )
    sampler = config.get("sampler", {})
    for key in sampler:
        if key not in ("acceptance_rate", "beta", "n_samples", "estimator_samples"):
            raise UserError(
                f"unknown key {key!r}",
                f"sampler.{key}",
                "valid keys: acceptance_rate, beta, n_samples, estimator_samples",
            )
    tuner = dict(config.get("tuner", {}))
    loss = tuner.pop("loss", "kl")
    out_dir = out or Path(config.get("output", {}).get("dir", "disco-run"))
    spec = RunSpec(
        out=out_dir,
        model=model.get("path"),
        length=int(model.get("length", 30)),
        temperature=float(model.get("temperature", 1.0)),
        context=str(config.get("context", "")),
        features=list(config.get("features", [])),
        fit_samples=int(config.get("fit", {}).get("n_samples", 2048)),
        tuner=tuner,
        loss=str(loss),
        acceptance_rate=float(sampler.get("acceptance_rate", 0.5)),
        beta=sampler.get("beta"),
        qrs_samples=int(sampler.get("n_samples", 64)),
        estimator_samples=int(sampler.get("estimator_samples", 2048)),
        seed=int(config.get("seed", 0)),
    )
    return spec


def _sample(args: argparse.Namespace) -> None:
    from disco.io import load_ebm
    from disco.samplers import IMHSampler, QRSEstimator, QuasiRejectionSampler

    if not (Path(args.ebm) / "ebm.json").exists():
        raise UserError(
            f"no saved EBM in {args.ebm}",
            "EBM_DIR",
            "give the ebm folder a run wrote (RUN_DIR/ebm)",
        )
    ebm = load_ebm(args.ebm)
    proposal = _lm(RunSpec(out=Path("."), model=args.proposal, length=args.length))
    if args.method == "imh":
        out = IMHSampler(ebm, proposal, seed=args.seed).sample_n(args.n, args.context)
    else:
        beta = args.beta
        if beta is None:
            beta = QRSEstimator(
                ebm,
                proposal,
                context=args.context,
                n_samples=args.estimator_samples,
                progress=False,
            ).beta_for_acceptance_rate(args.acceptance_rate)
        out = QuasiRejectionSampler(ebm, proposal, beta=beta, seed=args.seed).sample_n(
            args.n, args.context
        )
    for s, lp in zip(out.samples, out.target_log_scores.tolist()):
        print(json.dumps({"text": s.text, "target_log_score": lp}))


def _inspect(run_dir: Path) -> None:
    path = run_dir / "report.json"
    if not path.exists():
        raise UserError(
            f"no report.json in {run_dir}",
            "RUN_DIR",
            "give a folder written by disco demo or disco run",
        )
    report = json.loads(path.read_text())
    print(
        f"run: {run_dir}  model: {report.get('model')}  features: {', '.join(report.get('features', []))}"
    )
    if report.get("interrupted"):
        print(f"interrupted after {report.get('steps')} steps: partial report")
        return
    print(summary_table(report))
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        from disco.tuners.loggers import read_jsonl

        steps = [r for r in read_jsonl(metrics) if "step" in r and "samples" not in r]
        if steps:
            last = steps[-1]
            print(
                f"last step {last['step']}: loss {last['loss']:.4g}, KL(target || policy) {last['kl_target_policy']:.4g}"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disco", description="Distributional control of generative models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the whole path on the embedded model, offline")
    demo.add_argument(
        "--quick", action="store_true", help="a sub-minute version (small samples, few steps)"
    )
    demo.add_argument("--out", type=Path, default=Path("disco-demo"), help="report folder")
    demo.add_argument(
        "--model", default=None, help="local model folder or Hub name (default: embedded)"
    )
    demo.add_argument("--seed", type=int, default=0)
    run = sub.add_parser("run", help="the whole path from a TOML configuration file")
    run.add_argument("config", type=Path)
    run.add_argument(
        "--out", type=Path, default=None, help="report folder (overrides [output] dir)"
    )
    sample = sub.add_parser("sample", help="QRS or IMH samples from a saved EBM")
    sample.add_argument("ebm", help="folder written by save_ebm (a run's RUN_DIR/ebm)")
    sample.add_argument(
        "--proposal", default=None, help="proposal model folder (default: embedded)"
    )
    sample.add_argument("--method", choices=("qrs", "imh"), default="qrs")
    sample.add_argument("--n", type=int, default=10)
    sample.add_argument("--beta", type=float, default=None)
    sample.add_argument("--acceptance-rate", type=float, default=0.5)
    sample.add_argument("--estimator-samples", type=int, default=1024)
    sample.add_argument("--context", default="")
    sample.add_argument("--length", type=int, default=30)
    sample.add_argument("--seed", type=int, default=0)
    inspect = sub.add_parser("inspect", help="a run's summary")
    inspect.add_argument("run_dir", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``disco`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            spec = (_quick if args.quick else _full)(args.out, args.model, args.seed)
            execute(spec)
        elif args.command == "run":
            execute(spec_from_config(_load_config(args.config), args.out))
        elif args.command == "sample":
            _sample(args)
        else:
            _inspect(args.run_dir)
    except UserError as err:
        print(f"disco: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "disco: interrupted; the last checkpoint and a partial report.json are in the run folder",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
