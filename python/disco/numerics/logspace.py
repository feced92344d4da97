"""Log-space reductions: ``logsumexp``, weights, their ESS and moments (docs/design.md §4)."""

from __future__ import annotations

from typing import overload

from disco import _core
from disco.numerics._convert import ArrayLike, FloatArray, _to_float64, as_matrix, as_vector


def logsumexp(x: ArrayLike) -> float:
    """``log(sum(exp(x)))`` without overflow; empty or all ``-inf`` gives ``-inf`` (as scipy).

    Precise to a few ulp for magnitudes up to 1e300 and arrays of millions of values
    (compensated summation; the largest term is split off as in ``log1p``).

    >>> logsumexp([0.0, 0.0])
    0.6931471805599453
    """
    return float(_core.logsumexp(as_vector(x, "x")))


def logmeanexp(x: ArrayLike) -> float:
    """``log(mean(exp(x)))``: the log of an importance-sampling estimate of a normaliser.

    >>> logmeanexp([0.0, 0.0])
    0.0
    """
    return float(_core.logmeanexp(as_vector(x, "x")))


def normalized_weights(log_weights: ArrayLike) -> FloatArray:
    """Self-normalised importance weights ``w = exp(l - logsumexp(l))``, summing to 1.

    >>> normalized_weights([0.0, float("-inf"), 0.0]).tolist()
    [0.5, 0.0, 0.5]
    """
    return _core.normalized_weights(as_vector(log_weights, "log_weights"))


def effective_sample_size(log_weights: ArrayLike) -> float:
    """Kish's effective sample size ``1 / sum(w**2)`` of the normalised weights, in ``[1, N]``.

    >>> effective_sample_size([0.0, 0.0, 0.0, 0.0])
    4.0
    """
    return float(_core.effective_sample_size(as_vector(log_weights, "log_weights")))


@overload
def weighted_moments(log_weights: ArrayLike, features: FloatArray) -> FloatArray: ...
@overload
def weighted_moments(log_weights: ArrayLike, features: ArrayLike) -> FloatArray | float: ...
def weighted_moments(log_weights: ArrayLike, features: ArrayLike) -> FloatArray | float:
    """Self-normalised moments ``sum_i w_i f_ik`` of an ``N x K`` feature matrix.

    A 1-D ``features`` (one feature) gives a float; a matrix gives an array of ``K`` moments.

    >>> weighted_moments([0.0, 0.0], [1.0, 3.0])
    2.0
    """
    lw = as_vector(log_weights, "log_weights")
    matrix = as_matrix(features, "features")
    if matrix.shape[0] != lw.shape[0]:
        raise ValueError(
            f"length mismatch: log_weights has {lw.shape[0]} values but features has "
            f"{matrix.shape[0]} rows"
        )
    moments = _core.weighted_moments(lw, matrix)
    if _to_float64(features, "features").ndim == 1:
        return float(moments[0])
    return moments
