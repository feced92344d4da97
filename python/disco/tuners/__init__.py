"""Tuning a policy towards a target: DPG, CDPG and f-DPG over six f-divergences.

Each name is imported on first use, so the settings (:mod:`disco.tuners.config`) and the
loggers load without torch (the ``disco`` command checks a configuration before any model).
"""

from typing import TYPE_CHECKING

from disco._lazy import lazy_exports

if TYPE_CHECKING:
    from disco.tuners.config import TunerConfig
    from disco.tuners.front_ends import CDPGTuner, DPGTuner, FCDPGTuner, FDPGTuner
    from disco.tuners.losses import (
        ChiSquaredLoss,
        ChiSquareLoss,
        FDivergenceLoss,
        JSLoss,
        KLLoss,
        ReverseChiSquaredLoss,
        ReverseChiSquareLoss,
        ReverseKLLoss,
        TVLoss,
    )
    from disco.tuners.tuner import Tuner

__all__ = [
    "CDPGTuner",
    "ChiSquareLoss",
    "ChiSquaredLoss",
    "DPGTuner",
    "FCDPGTuner",
    "FDPGTuner",
    "FDivergenceLoss",
    "JSLoss",
    "KLLoss",
    "ReverseChiSquareLoss",
    "ReverseChiSquaredLoss",
    "ReverseKLLoss",
    "TVLoss",
    "Tuner",
    "TunerConfig",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TunerConfig": "disco.tuners.config",
        **dict.fromkeys(
            ("CDPGTuner", "DPGTuner", "FCDPGTuner", "FDPGTuner"), "disco.tuners.front_ends"
        ),
        **dict.fromkeys(
            (
                "ChiSquareLoss",
                "ChiSquaredLoss",
                "FDivergenceLoss",
                "JSLoss",
                "KLLoss",
                "ReverseChiSquareLoss",
                "ReverseChiSquaredLoss",
                "ReverseKLLoss",
                "TVLoss",
            ),
            "disco.tuners.losses",
        ),
        "Tuner": "disco.tuners.tuner",
    },
)
