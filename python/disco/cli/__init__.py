"""The ``disco`` command: the whole path (express, tune, sample) offline, from flags or a config.

``disco demo`` runs it on the embedded model with a readable feature; ``disco run CONFIG.toml``
runs it from a configuration file (and ``--resume`` continues an interrupted run); ``disco
sample`` draws QRS or IMH samples from a saved EBM; ``disco inspect RUN_DIR`` prints a run's
summary; ``disco list`` shows what each extension point holds (losses, feature types, loggers,
samplers). A problem the user can fix prints one line, ``disco: error: <what> (<key>): <fix>``,
and exits with status 2.

The modules: :mod:`~disco.cli.config` (one dataclass per configuration section, checked from
the file alone; :mod:`~disco.cli.values` its shared value checks), :mod:`~disco.cli.sources` (the
files a configuration names),
:mod:`~disco.cli.build` (the run's objects, and the checks that need them),
:mod:`~disco.cli.pipeline` (the run's stages), :mod:`~disco.cli.sampling`, :mod:`~disco.cli.report`,
:mod:`~disco.cli.files`, :mod:`~disco.cli.interrupt` (Ctrl-C, SIGTERM, SIGUSR1) and
:mod:`~disco.cli.commands` (the subcommand table and :func:`main`).
"""

from typing import TYPE_CHECKING

from disco._lazy import lazy_exports

if TYPE_CHECKING:
    from disco.cli.build import build_feature, check_feature
    from disco.cli.commands import main
    from disco.cli.config import RunConfig, check_config, demo_config, load_config
    from disco.cli.errors import TuningInterrupted, UserError
    from disco.cli.pipeline import run_pipeline
    from disco.cli.report import format_table

__all__ = [
    "RunConfig",
    "TuningInterrupted",
    "UserError",
    "build_feature",
    "check_config",
    "check_feature",
    "demo_config",
    "format_table",
    "load_config",
    "main",
    "run_pipeline",
]

# Imported on first use: the command's start, its --help and a configuration's mistakes cost
# neither torch nor transformers.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "RunConfig": "disco.cli.config",
        "TuningInterrupted": "disco.cli.errors",
        "UserError": "disco.cli.errors",
        "build_feature": "disco.cli.build",
        "check_config": "disco.cli.config",
        "check_feature": "disco.cli.build",
        "demo_config": "disco.cli.config",
        "format_table": "disco.cli.report",
        "load_config": "disco.cli.config",
        "main": "disco.cli.commands",
        "run_pipeline": "disco.cli.pipeline",
    },
)
