"""Type stubs for the Rust extension ``disco._core`` (use ``disco.numerics`` instead)."""

from collections.abc import Sequence
from typing import final

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

class ConvergenceError(RuntimeError):
    """An iterative solver stopped before meeting its tolerance."""

    last: list[float]
    iterations: int
    max_error: float

def logsumexp(x: npt.NDArray[np.float64]) -> float: ...
def logmeanexp(x: npt.NDArray[np.float64]) -> float: ...
def normalized_weights(log_weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]: ...
def effective_sample_size(log_weights: npt.NDArray[np.float64]) -> float: ...
def weighted_moments(
    log_weights: npt.NDArray[np.float64], features: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]: ...
def estimate_log_z(
    target_log_scores: npt.NDArray[np.float64], proposal_log_probs: npt.NDArray[np.float64]
) -> float: ...
def divergence(
    kind: str,
    target_log_scores: npt.NDArray[np.float64],
    model_log_probs: npt.NDArray[np.float64],
    proposal_log_probs: npt.NDArray[np.float64],
    log_z: float | None = None,
) -> float: ...
def divergence_grouped(
    kind: str,
    target_log_scores: npt.NDArray[np.float64],
    model_log_probs: npt.NDArray[np.float64],
    proposal_log_probs: npt.NDArray[np.float64],
    log_z: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]: ...
def qrs_accept(
    log_ratios: npt.NDArray[np.float64],
    uniforms: npt.NDArray[np.float64],
    log_beta: float,
    log_uniforms: bool = False,
) -> npt.NDArray[np.bool_]: ...
def imh_chain(
    log_ratios: npt.NDArray[np.float64],
    uniforms: npt.NDArray[np.float64],
    current_log_ratio: float,
    log_uniforms: bool = False,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], float]: ...

@final
class QrsIndex:
    """Sorted log-ratios with prefix and suffix sums for QRS curves."""

    def __new__(
        cls,
        log_ratios: npt.NDArray[np.float64],
        log_weights: npt.NDArray[np.float64] | None = None,
    ) -> QrsIndex: ...
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
    def curve(
        self, log_betas: npt.NDArray[np.float64], js: bool = False
    ) -> dict[str, npt.NDArray[np.float64]]: ...
    def feature_moments(
        self, features: npt.NDArray[np.float64], log_betas: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]: ...
    def log_beta_for_acceptance_rate(
        self, rates: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]: ...

@final
class TextPattern:
    """A regular expression compiled by Rust's regex crate (linear-time search)."""

    def __new__(cls, pattern: str, flags: str = "") -> TextPattern: ...
    def search(self, texts: Sequence[str]) -> npt.NDArray[np.bool_]: ...

def f_pseudo_rewards(
    kind: str,
    policy_log_probs: npt.NDArray[np.float64],
    target_log_scores: npt.NDArray[np.float64],
    proposal_log_probs: npt.NDArray[np.float64],
    log_z: float,
    max_log_t: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def f_divergence(
    kind: str,
    policy_log_probs: npt.NDArray[np.float64],
    target_log_scores: npt.NDArray[np.float64],
    proposal_log_probs: npt.NDArray[np.float64],
    log_z: float,
) -> tuple[float, float]: ...
def divergence_stderr(
    kind: str,
    target_log_scores: npt.NDArray[np.float64],
    model_log_probs: npt.NDArray[np.float64],
    proposal_log_probs: npt.NDArray[np.float64],
    log_z: float | None = None,
) -> tuple[float, float]: ...
def weighted_moments_stderr(
    log_weights: npt.NDArray[np.float64], features: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def effective_sample_size_stderr(log_weights: npt.NDArray[np.float64]) -> tuple[float, float]: ...
def qrs_point_stderr(
    log_ratios: npt.NDArray[np.float64],
    log_beta: float,
    features: npt.NDArray[np.float64] | None = None,
) -> tuple[
    tuple[float, float],
    tuple[float, float],
    tuple[float, float],
    tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None,
]: ...
def tuner_metrics(
    loss: str,
    target_log_scores: npt.NDArray[np.float64],
    policy_log_probs: npt.NDArray[np.float64],
    proposal_log_probs: npt.NDArray[np.float64],
    log_z: float,
    features: npt.NDArray[np.float64] | None = None,
    base_log_probs: npt.NDArray[np.float64] | None = None,
) -> tuple[dict[str, float], npt.NDArray[np.float64] | None]: ...
def fit_coefficients(
    features: npt.NDArray[np.float64],
    target_moments: npt.NDArray[np.float64],
    log_weights: npt.NDArray[np.float64] | None = None,
    groups: npt.NDArray[np.int64] | None = None,
    tolerance: float = 1e-08,
    max_iterations: int = 100,
    initial: npt.NDArray[np.float64] | None = None,
    feature_names: Sequence[str] | None = None,
) -> tuple[npt.NDArray[np.float64], int, npt.NDArray[np.float64], float, float, float]: ...
