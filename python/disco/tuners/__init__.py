"""Tuning a policy towards a target: DPG, CDPG and f-DPG over six f-divergences."""

from disco.tuners.config import TunerConfig
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
from disco.tuners.tuner import CDPGTuner, DPGTuner, FCDPGTuner, FDPGTuner, Tuner

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
