"""The subcommands, their arguments and ``main``: one table row a subcommand."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from disco.cli.config import check_acceptance_rate, demo_config, load_config, user_beta
from disco.cli.errors import TuningInterrupted, UserError
from disco.cli.report import format_table

__all__ = ["COMMANDS", "main"]

# The name to `pip install` (`disco` on PyPI is another project); the import name is `disco`.
DISTRIBUTION = "disco-control"
ALLOW_IMPORTS_HELP = (
    "let 'function' features import their Python modules (importing runs them; only for code "
    "you trust)"
)
# What `disco list` shows: each extension point's registry, by where it lives.
REGISTRIES = {
    "losses": ("disco.tuners.losses", "LOSSES", "[tuner] loss"),
    "features": ("disco.features", "FEATURE_TYPES", "[[features]] type"),
    "loggers": ("disco.tuners.loggers", "LOGGERS", "[output] loggers"),
    "samplers": ("disco.samplers", "SAMPLERS", "disco sample --method"),
}


@contextlib.contextmanager
def _joined() -> Iterator[None]:
    """Under torchrun / accelerate launch: in their process group for the block, left together.

    One process is a world of one, and joins nothing.
    """
    from transformers.utils import logging as transformers_logging

    from disco.distributed import init_from_environment

    transformers_logging.disable_progress_bar()  # loading bars would bury disco's own output
    world = init_from_environment()
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        if world.size > 1:
            import torch

            if succeeded:
                # Leave together: a rank that tears its group down while rank 0 still writes
                # the report closes connections under gloo's threads there.
                world.barrier()
            torch.distributed.destroy_process_group()


def _demo(args: argparse.Namespace) -> None:
    cfg = demo_config(args.quick, args.model, args.seed)
    from disco.cli.pipeline import run_pipeline

    with _joined():
        run_pipeline(cfg, args.out)


def _run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, allow_imports=args.allow_imports)
    out = args.out or Path(cfg["output"]["dir"])
    from disco.cli.pipeline import run_pipeline  # torch: after the configuration's checks

    with _joined():
        run_pipeline(cfg, out, resume=args.resume, allow_imports=args.allow_imports)


def _load_ebm(args: argparse.Namespace) -> Any:
    from disco.features import ImportNotAllowedError
    from disco.io import load_ebm

    try:
        return load_ebm(
            args.ebm, trust_remote_code=args.trust_remote_code, allow_imports=args.allow_imports
        )
    except ImportNotAllowedError as err:
        raise UserError(
            f"cannot load the EBM: {err.what}",
            "EBM_DIR",
            "pass --allow-imports if you trust that code",
        ) from None
    except (ValueError, OSError, KeyError) as err:
        raise UserError(f"cannot load the EBM: {err}", "EBM_DIR", "save it again") from None


def _check_sample_arguments(args: argparse.Namespace) -> Any:
    """The sampling method of ``--method``, once every argument is known to be usable."""
    from disco.samplers import SAMPLERS

    if not (Path(args.ebm) / "ebm.json").is_file():
        raise UserError(
            f"no saved EBM in {args.ebm}", "EBM_DIR", "give the ebm folder of a run (RUN_DIR/ebm)"
        )
    try:
        method = SAMPLERS.lookup(args.method)
    except ValueError as err:
        raise UserError(str(err), "--method", "disco list samplers shows them") from None
    if args.n < 1:
        raise UserError(f"--n {args.n} is not positive", "--n", "ask for at least one sample")
    if args.beta is not None:
        user_beta(args.beta, "--beta")
    check_acceptance_rate(args.acceptance_rate, "--acceptance-rate")
    if args.length is not None and args.length < 1:
        raise UserError(f"--length {args.length} is not positive", "--length", "use 1 or more")
    return method


def _sample(args: argparse.Namespace) -> None:
    method = _check_sample_arguments(args)
    with _joined():
        _sample_joined(args, method)


def _sample_joined(args: argparse.Namespace, method: Any) -> None:
    """``disco sample`` once its arguments are known to be usable."""
    import torch

    from disco.cli.build import load_lm
    from disco.cli.config import ModelSection
    from disco.cli.files import write_jsonl
    from disco.cli.sampling import draw_exactly, qrs_log_beta
    from disco.cli.sources import model_path
    from disco.samplers import QRSEstimator

    target = _load_ebm(args)
    torch.manual_seed(args.seed)
    base = target.factors[0]
    if args.proposal is None:  # the EBM's own base model: same tokenizer, same length
        proposal = base
    else:
        length = args.length or getattr(base, "length", 30)
        proposal = load_lm(ModelSection(path=model_path(args.proposal, None), length=length))
    with torch.no_grad():
        log_beta = None
        if method.tempered and args.beta is not None:
            log_beta = math.log(args.beta)
        elif method.tempered:
            estimator = QRSEstimator(
                target,
                proposal,
                context=args.context,
                n_samples=args.estimation_samples,
                progress=False,
            )
            log_beta, _ = qrs_log_beta(estimator, None, args.acceptance_rate, args.n)
        sampler = method.build(target, proposal, seed=args.seed, log_beta=log_beta)
        drawn = draw_exactly(args.method, sampler, args.n, args.context)
    rows = [
        {"text": s.text, "target_log_score": float(lp)}
        for s, lp in zip(drawn.samples, drawn.target_log_scores.tolist())
    ]
    from disco.distributed import current_world

    if args.output:
        write_jsonl(Path(args.output), rows)
    elif not current_world().is_main:  # every rank holds the same samples: rank 0 prints
        pass
    else:
        for row in rows:
            print(json.dumps(row))


def _inspect(args: argparse.Namespace) -> None:
    run_dir: Path = args.run_dir
    path = run_dir / "report.json"
    if not path.is_file():
        raise UserError(
            f"no report.json in {run_dir}", "RUN_DIR", "give a folder written by disco demo or run"
        )
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"unreadable report.json: {err}", "RUN_DIR", "rerun the command") from None
    print(f"run {run_dir}: model {report.get('model')}, contexts {len(report.get('contexts', []))}")
    if report.get("interrupted"):
        print(
            f"interrupted after {report.get('steps')} steps (partial report); "
            "continue it with: disco run CONFIG --out RUN_DIR --resume"
        )
    else:
        print(format_table(report))
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        from disco.tuners.loggers import read_jsonl

        steps = [r for r in read_jsonl(metrics) if "step" in r and "loss" in r]
        if steps:
            last = steps[-1]
            print(
                f"last step {last['step']}: loss {last['loss']:.4g}, "
                f"KL(target || policy) {last.get('kl_target_policy', math.nan):.4g}"
            )


def _list(args: argparse.Namespace) -> None:
    import importlib

    for name in [args.what] if args.what else list(REGISTRIES):
        module, attribute, where = REGISTRIES[name]
        registry = getattr(importlib.import_module(module), attribute)
        print(f"{name} ({where}):")
        width = max(len(entry) for entry in registry)
        for entry in registry:
            print(f"  {entry:{width}}  {registry.about(entry).replace('``', '')}")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a sub-minute version (for tests)")
    parser.add_argument("--out", type=Path, default=Path("disco-demo"), help="report folder")
    parser.add_argument(
        "--model", default=None, help="model folder or Hub name (default: embedded)"
    )
    parser.add_argument("--seed", type=int, default=0)


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="report folder (overrides [output])")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its checkpoint"
    )
    parser.add_argument("--allow-imports", action="store_true", help=ALLOW_IMPORTS_HELP)


def _sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ebm", help="a folder written by save_ebm (a run's RUN_DIR/ebm)")
    parser.add_argument(
        "--proposal",
        default=None,
        help="proposal model folder, e.g. RUN_DIR/policy (default: the EBM's base model)",
    )
    parser.add_argument("--method", default="qrs", help="qrs (default) or imh: disco list samplers")
    parser.add_argument("--n", type=int, default=10, help="samples to output")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--beta", type=float, default=None, help="QRS beta")
    group.add_argument(
        "--acceptance-rate", type=float, default=0.5, help="QRS: choose beta for this rate"
    )
    parser.add_argument("--estimation-samples", type=int, default=1024)
    parser.add_argument("--context", default="")
    parser.add_argument(
        "--length",
        type=int,
        default=None,
        help="new tokens of --proposal (default: the EBM base's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write the JSON lines here, not stdout")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let the EBM's base model run its own Python code (only for a source you trust)",
    )
    parser.add_argument("--allow-imports", action="store_true", help=ALLOW_IMPORTS_HELP)


def _inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path)


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what", nargs="?", choices=list(REGISTRIES), help="which (default: all of them)"
    )


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, how it reads its arguments, and what it does."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]


COMMANDS = {
    "demo": Command("the whole path on the embedded model, offline", _demo_arguments, _demo),
    "run": Command("the whole path from a TOML configuration file", _run_arguments, _run),
    "sample": Command(
        "QRS or IMH samples from a saved EBM, as JSON lines", _sample_arguments, _sample
    ),
    "inspect": Command("print a run's summary", _inspect_arguments, _inspect),
    "list": Command(
        "what can be chosen: losses, feature types, loggers, samplers", _list_arguments, _list
    ),
}


def _parser() -> argparse.ArgumentParser:
    from disco import __version__  # the Rust core's, i.e. Cargo.toml's: one source

    parser = argparse.ArgumentParser(
        prog="disco", description="Distributional control of generative models."
    )
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.arguments(sub.add_parser(name, help=command.help))
    return parser


def _report(err: BaseException) -> tuple[str, int] | None:
    """The line to print and the exit status for a failure a user can act on (else ``None``)."""
    if isinstance(err, UserError):
        return f"disco: error: {err}", 2
    # Only a loaded module can have raised its own error: looked up, not imported, so that a
    # failure before any feature or weights file stays as quick as the command's start.
    features = sys.modules.get("disco.features")
    if features is not None and isinstance(err, features.FeatureError):
        # a function feature failed while scoring (fit, sampling)
        return f"disco: error: {err} (features): fix the feature's function", 2
    safetensors = sys.modules.get("safetensors")
    if isinstance(err, OSError) or (
        safetensors is not None and isinstance(err, safetensors.SafetensorError)
    ):  # a full disk, an unwritable folder
        return f"disco: error: {err} (output): check the output folder", 2
    if isinstance(err, TuningInterrupted):  # exit status: 128 + the signal, as a shell shows it
        return (
            f"disco: interrupted ({signal.Signals(err.signum).name}); report.json (partial) and "
            "the last checkpoint are in the run folder: disco run CONFIG --out RUN_DIR --resume "
            "continues it",
            128 + err.signum,
        )
    if isinstance(err, KeyboardInterrupt):
        return "disco: interrupted", 128 + signal.SIGINT
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``disco`` command; returns the exit status.

    Errors become one line on stderr and an exit status. torch and transformers are imported
    only by the commands that use them, after what can be checked without them.
    """
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            # raised between peft and transformers versions; nothing a user can act on
            warnings.filterwarnings(
                "ignore",
                message="`is_gradient_checkpointing` is deprecated",
                category=FutureWarning,
            )
            COMMANDS[args.command].run(args)
    except (Exception, KeyboardInterrupt) as err:
        reported = _report(err)
        if reported is None:
            raise
        print(reported[0], file=sys.stderr)
        return reported[1]
    return 0
