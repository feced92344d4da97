"""Type stubs for the Rust extension ``disco._core`` (use ``disco.numerics`` instead)."""

from collections.abc import Sequence
from typing import TypeAlias, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ConvergenceError",
    "QrsIndex",
    "TextPattern",
    "__version__",
    "divergence",
    "divergence_grouped",
    "divergence_stderr",
    "effective_sample_size",
    "effective_sample_size_stderr",
    "estimate_log_z",
    "f_divergence",
    "f_pseudo_rewards",
    "fit_coefficients",
    "imh_chain",
    "logmeanexp",
    "logsumexp",
    "normalized_weights",
    "qrs_accept",
    "qrs_point_stderr",
    "tuner_metrics",
    "weighted_moments",
    "weighted_moments_stderr",
]
__version__: str

# The arrays the bindings take and return (native float64: a value per sample, or a matrix),
# and an estimate with its standard error.
_Floats: TypeAlias = npt.NDArray[np.float64]
_FloatPair: TypeAlias = tuple[_Floats, _Floats]
_Bools: TypeAlias = npt.NDArray[np.bool_]
_Estimate: TypeAlias = tuple[float, float]

class ConvergenceError(RuntimeError):
    """An iterative solver stopped before meeting its tolerance."""

    last: list[float]
    iterations: int
    max_error: float

def logsumexp(x: _Floats) -> float: ...
def logmeanexp(x: _Floats) -> float: ...
def normalized_weights(log_weights: _Floats) -> _Floats: ...
def effective_sample_size(log_weights: _Floats) -> float: ...
def weighted_moments(log_weights: _Floats, features: _Floats) -> _Floats: ...
def estimate_log_z(target_log_scores: _Floats, proposal_log_probs: _Floats) -> float: ...
def divergence(
    kind: str,
    target_log_scores: _Floats,
    model_log_probs: _Floats,
    proposal_log_probs: _Floats,
    log_z: float | None = None,
) -> float: ...
def divergence_grouped(
    kind: str,
    target_log_scores: _Floats,
    model_log_probs: _Floats,
    proposal_log_probs: _Floats,
    log_z: _Floats | None = None,
) -> _Floats: ...
def qrs_accept(
    log_ratios: _Floats, uniforms: _Floats, log_beta: float, log_uniforms: bool = False
) -> _Bools: ...
def imh_chain(
    log_ratios: _Floats, uniforms: _Floats, current_log_ratio: float, log_uniforms: bool = False
) -> tuple[npt.NDArray[np.int64], _Bools, float]: ...

@final
class QrsIndex:
    """Sorted log-ratios with prefix and suffix sums for QRS curves."""

    def __new__(cls, log_ratios: _Floats, log_weights: _Floats | None = None) -> QrsIndex: ...
    @property
    def n(self) -> int: ...
    @property
    def log_z(self) -> float: ...
    @property
    def log_total_weight(self) -> float: ...
    @property
    def max_log_ratio(self) -> float: ...
    @property
    def min_log_ratio(self) -> float: ...
    @property
    def max_acceptance_rate(self) -> float: ...
    def curve(self, log_betas: _Floats, js: bool = False) -> dict[str, _Floats]: ...
    def feature_moments(self, features: _Floats, log_betas: _Floats) -> _Floats: ...
    def log_beta_for_acceptance_rate(self, rates: _Floats) -> _Floats: ...

@final
class TextPattern:
    """A regular expression compiled by Rust's regex crate (linear-time search)."""

    def __new__(cls, pattern: str, flags: str = "") -> TextPattern: ...
    def search(self, texts: Sequence[str]) -> _Bools: ...

def f_pseudo_rewards(
    kind: str,
    policy_log_probs: _Floats,
    target_log_scores: _Floats,
    proposal_log_probs: _Floats,
    log_z: float,
    max_log_t: float,
) -> _FloatPair: ...
def f_divergence(
    kind: str,
    policy_log_probs: _Floats,
    target_log_scores: _Floats,
    proposal_log_probs: _Floats,
    log_z: float,
) -> _Estimate: ...
def divergence_stderr(
    kind: str,
    target_log_scores: _Floats,
    model_log_probs: _Floats,
    proposal_log_probs: _Floats,
    log_z: float | None = None,
) -> _Estimate: ...
def weighted_moments_stderr(log_weights: _Floats, features: _Floats) -> _FloatPair: ...
def effective_sample_size_stderr(log_weights: _Floats) -> _Estimate: ...
def qrs_point_stderr(
    log_ratios: _Floats, log_beta: float, features: _Floats | None = None
) -> tuple[_Estimate, _Estimate, _Estimate, _FloatPair | None]: ...
def tuner_metrics(
    loss: str,
    target_log_scores: _Floats,
    policy_log_probs: _Floats,
    proposal_log_probs: _Floats,
    log_z: float,
    features: _Floats | None = None,
    base_log_probs: _Floats | None = None,
) -> tuple[dict[str, float], _Floats | None]: ...
def fit_coefficients(
    features: _Floats,
    target_moments: _Floats,
    log_weights: _Floats | None = None,
    groups: npt.NDArray[np.int64] | None = None,
    tolerance: float = 1e-08,
    max_iterations: int = 100,
    initial: _Floats | None = None,
    feature_names: Sequence[str] | None = None,
) -> tuple[_Floats, int, _Floats, float, float, float]: ...
