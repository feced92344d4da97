"""Tuning a policy towards a target: DPG, CDPG and f-DPG over six f-divergences."""

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
