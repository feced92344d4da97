"""The Python face of the Rust core: log-space reductions, divergence estimates, the max-ent fit.

This package is the only door to ``disco._core``. Every function accepts numpy arrays,
Python sequences or torch tensors (any float dtype, any device), converts them once to
contiguous float64 numpy, and hands them to a Rust kernel that releases the interpreter lock.

Log-scores may be ``-inf`` (probability zero) and are handled exactly; NaN, ``+inf``, length
mismatches and wrong shapes raise ``ValueError`` naming the argument and the position.

Modules, by concern: ``logspace`` (reductions and importance weights), ``divergences``
(divergences, ``log Z``, f-DPG rewards, the tuner's metrics), ``qrs`` (Quasi-Rejection
Sampling), ``stderr`` (estimates with their standard errors), ``maxent`` (the
coefficient fit), ``text`` (linear-time patterns); ``_convert``
turns user arrays into what the core reads. Every public name is importable from here.
"""

from disco.numerics._convert import (
    ArrayLike,
    BoolArray,
    FloatArray,
    _as_scalar,
    _at_most_1d,
    _to_float64,
    as_matrix,
    as_vector,
)
from disco.numerics.divergences import (
    DivergenceKind,
    FDivergenceKind,
    _divergence,
    estimate_log_z,
    f_divergence,
    f_pseudo_rewards,
    js_divergence,
    kl_divergence,
    reverse_kl_divergence,
    tuner_metrics,
    tv_distance,
)
from disco.numerics.logspace import (
    effective_sample_size,
    logmeanexp,
    logsumexp,
    normalized_weights,
    weighted_moments,
)
from disco.numerics.maxent import FitResult, fit_coefficients
from disco.numerics.qrs import (
    IMHRun,
    QRSCurve,
    QRSIndex,
    beta_for_acceptance_rate,
    imh_chain,
    qrs_accept,
    qrs_curve,
)
from disco.numerics.stderr import (
    Estimate,
    QRSPoint,
    divergence_with_stderr,
    effective_sample_size_with_stderr,
    mean_of_independent,
    qrs_point,
    sample_means_with_stderr,
    weighted_moments_with_stderr,
    z_score,
)
from disco.numerics.text import TextPattern

__all__ = [
    "ArrayLike",
    "BoolArray",
    "DivergenceKind",
    "Estimate",
    "FDivergenceKind",
    "FitResult",
    "FloatArray",
    "IMHRun",
    "QRSCurve",
    "QRSIndex",
    "QRSPoint",
    "TextPattern",
    "as_matrix",
    "as_vector",
    "beta_for_acceptance_rate",
    "divergence_with_stderr",
    "effective_sample_size",
    "effective_sample_size_with_stderr",
    "estimate_log_z",
    "f_divergence",
    "f_pseudo_rewards",
    "fit_coefficients",
    "imh_chain",
    "js_divergence",
    "kl_divergence",
    "logmeanexp",
    "logsumexp",
    "mean_of_independent",
    "normalized_weights",
    "qrs_accept",
    "qrs_curve",
    "qrs_point",
    "reverse_kl_divergence",
    "sample_means_with_stderr",
    "tuner_metrics",
    "tv_distance",
    "weighted_moments",
    "weighted_moments_with_stderr",
    "z_score",
]
# Private helpers other modules and tests reach through the package (not part of `__all__`).
_PRIVATE = (_as_scalar, _at_most_1d, _divergence, _to_float64)
