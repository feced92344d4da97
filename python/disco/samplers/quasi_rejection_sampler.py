"""The original disco's module path for QRS and its estimator."""

from disco.samplers.estimator import QuasiRejectionSamplerEstimator
from disco.samplers.qrs import QuasiRejectionSampler

__all__ = ["QuasiRejectionSampler", "QuasiRejectionSamplerEstimator"]
