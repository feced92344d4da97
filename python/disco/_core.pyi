"""Type stubs for the Rust extension ``disco._core`` (use ``disco.numerics`` instead)."""

import numpy as np
import numpy.typing as npt

__all__ = [
    "ConvergenceError",
    "__version__",
    "divergence",
    "divergence_grouped",
    "effective_sample_size",
    "estimate_log_z",
    "logmeanexp",
    "logsumexp",
    "normalized_weights",
    "weighted_moments",
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
