"""The original disco's module paths, made from one table, and the core's references up to them.

The original ``disco`` kept each class in a module of its own (``disco.scorers.boolean_scorer``,
``disco.tuners.dpg_tuner`` ...). Here those modules are no files: :data:`ORIGINAL_MODULES` maps
each path to the names it held and the module that holds each name now, and a finder on
``sys.meta_path`` (installed by ``import disco``) builds such a module on first import from that
table. This module imports nothing from the package at import time, so ``import disco`` stays
light and no layer below the alias layer is loaded by it.

:data:`UPWARD_REFERENCES` lists the only places where a module below the alias layer refers to
it (lazily, on first use of one of the original's spellings); the import-layer test allows those
and no others.
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:  # importlib.abc costs an import of typing machinery: typed only
    from importlib.abc import Loader

__all__ = ["ORIGINAL_MODULES", "UPWARD_REFERENCES", "install"]

_D = "disco.distributions"
_S = "disco.scorers"

#: The original's module path -> {name: the module that defines it now}.
ORIGINAL_MODULES: dict[str, dict[str, str]] = {
    f"{_D}.lm_distribution": {"LMDistribution": f"{_D}.lm", "TextSample": f"{_D}.base"},
    f"{_D}.context_distribution": {"ContextDistribution": f"{_D}.contexts"},
    f"{_D}.single_context_distribution": {"SingleContextDistribution": f"{_D}.contexts"},
    f"{_D}.dataset_context_distribution": {"DatasetContextDistribution": f"{_D}.contexts"},
    f"{_S}.scorer": {"Scorer": f"{_S}.base"},
    f"{_S}.boolean_scorer": {"BooleanScorer": f"{_S}.base"},
    f"{_S}.positive_scorer": {"PositiveScorer": f"{_S}.base", "Product": f"{_S}.base"},
    f"{_S}.exponential_scorer": {"ExponentialScorer": f"{_S}.base"},
    f"{_S}.pipeline_scorer": {"PipelineScorer": f"{_S}.pipeline"},
    "disco.samplers.accumulation_sampler": {"AccumulationSampler": "disco.samplers.accumulation"},
    "disco.samplers.quasi_rejection_sampler": {
        "QuasiRejectionSampler": "disco.samplers.qrs",
        "QuasiRejectionSamplerEstimator": "disco.samplers.estimator",
    },
    "disco.tuners.dpg_tuner": {"DPGTuner": "disco.tuners.front_ends"},
    "disco.tuners.cdpg_tuner": {"CDPGTuner": "disco.tuners.front_ends"},
    "disco.tuners.fdpg_tuner": {"FDPGTuner": "disco.tuners.front_ends"},
    "disco.tuners.fcdpg_tuner": {"FCDPGTuner": "disco.tuners.front_ends"},
    "disco.tuners.loggers.json": {"JSONLogger": "disco.tuners.loggers.jsonl"},
}

#: (module below the alias layer, alias-layer module it imports lazily, what for). Each is an
#: import inside a function, run only when a caller uses one of the original's spellings.
UPWARD_REFERENCES: tuple[tuple[str, str, str], ...] = (
    ("disco.distributions.base", "disco.compat", "BaseDistribution(score_fn)"),
    ("disco.distributions.constraints", "disco.compat", "constrain's original keywords"),
    ("disco.distributions.lm", "disco.compat", "network=, nature= and .network, .params ..."),
    ("disco.tuners.front_ends", "disco.compat", "a proposal or loss in the original's third place"),
    ("disco.tuners.tuner", "disco.compat", "Tuner(...) with the original's setting names"),
    ("disco.tuners.loggers.base", "disco.compat", "Logger(tuner, ...)"),
    ("disco.tuners.loggers.base", "disco._compat_observer", "BaseTunerObserver, by __getattr__"),
)


class _OriginalModules:
    """Finds and loads the modules of :data:`ORIGINAL_MODULES` (a ``sys.meta_path`` entry)."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        if fullname not in ORIGINAL_MODULES:
            return None
        return ModuleSpec(
            fullname, cast("Loader", self), origin=f"alias of the original disco ({__name__})"
        )

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        names = ORIGINAL_MODULES[module.__name__]
        for name, home in names.items():
            setattr(module, name, getattr(importlib.import_module(home), name))
        module.__dict__["__all__"] = list(names)
        module.__doc__ = "The original disco's module path for " + ", ".join(
            f"``{home}.{name}``" for name, home in names.items()
        )


_FINDER = _OriginalModules()


def install() -> None:
    """Put the finder of the original's module paths on ``sys.meta_path`` (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
