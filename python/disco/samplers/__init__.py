"""Samplers: drawing in batches, Quasi-Rejection Sampling and its estimator, and IMH (DESIGN §6)."""

from disco.samplers.accumulation import AccumulationSampler
from disco.samplers.estimator import QRSEstimator, QuasiRejectionSamplerEstimator
from disco.samplers.imh import ChainStatistics, IMHSampler
from disco.samplers.qrs import AcceptanceStatistics, QRSSamples, QuasiRejectionSampler

__all__ = [
    "AcceptanceStatistics",
    "AccumulationSampler",
    "ChainStatistics",
    "IMHSampler",
    "QRSEstimator",
    "QRSSamples",
    "QuasiRejectionSampler",
    "QuasiRejectionSamplerEstimator",
]
