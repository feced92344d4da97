"""Estimates with their standard errors, computed by the core beside the estimates.

Every self-normalised importance-sampling estimate is a smooth function of a few sample
means, so its standard error is the delta method's: one influence value per draw, and
``se = sqrt(sum_i (psi_i - mean psi)**2) / N``. The divisor ``N`` (not ``N - 1``) makes a
sample repeated ``k`` times have exactly ``1/sqrt(k)`` of the error; on samples drawn from the
distribution itself (equal weights) a 0/1 feature's rate gets the binomial
``sqrt(p (1 - p) / N)``, which :func:`sample_means_with_stderr` replaces by Agresti and Coull's
(not 0 when every sample agrees). These are first-order errors: they hold once the importance
weights' variance is finite and ``N`` is well past the ESS's small-sample regime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from disco import _core
from disco._beta import check_beta
from disco.numerics._convert import (
    ArrayLike,
    FloatArray,
    _as_scalar,
    as_matrix,
    as_vector,
)
from disco.numerics.divergences import DivergenceKind


def z_score(level: float = 0.95) -> float:
    """The normal quantile of a two-sided interval at ``level`` (1.96 at 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level is {level}: a confidence level must lie strictly between 0 and 1")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


class Estimate(NamedTuple):
    """A value and its standard error.

    Examples
    --------
    >>> e = Estimate(0.36, 0.015)
    >>> [round(v, 4) for v in e.interval()]
    [0.3306, 0.3894]
    >>> f"{e:.3f}"
    '0.360 ± 0.015'
    """

    value: float
    stderr: float

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The normal interval ``value ± z * stderr`` at ``level``."""
        half = z_score(level) * self.stderr
        return self.value - half, self.value + half

    def covers(self, x: float, level: float = 0.95) -> bool:
        """Whether ``x`` lies in :meth:`interval` at ``level``."""
        low, high = self.interval(level)
        return bool(low <= x <= high)

    def __format__(self, spec: str) -> str:
        spec = spec or ".4g"
        return f"{self.value:{spec}} ± {self.stderr:{spec}}"

    def __str__(self) -> str:
        return format(self)


def mean_of_independent(estimates: Sequence[Estimate]) -> Estimate:
    """The mean of independent estimates, with the error of a mean: ``sqrt(Σ se²) / C``.

    >>> mean_of_independent([Estimate(1.0, 0.3), Estimate(2.0, 0.4)])
    Estimate(value=1.5, stderr=0.25)
    """
    c = len(estimates)
    if c == 0:
        raise ValueError("estimates is empty: the mean of no estimates is undefined")
    value = math.fsum(e.value for e in estimates) / c
    stderr = math.sqrt(math.fsum(e.stderr**2 for e in estimates)) / c
    return Estimate(value, stderr)


def divergence_with_stderr(
    kind: DivergenceKind,
    target_log_scores: ArrayLike,
    model_log_probs: ArrayLike,
    proposal_log_probs: ArrayLike | None = None,
    log_z: float | None = None,
) -> Estimate:
    """One divergence (as :func:`~disco.numerics.kl_divergence` and its siblings) with its error.

    ``kind`` is ``"kl"`` (``KL(p ‖ model)``), ``"reverse_kl"``, ``"tv"`` or ``"js"``; the
    arguments are those of :func:`~disco.numerics.kl_divergence` (1-D only). With ``log_z``
    given the error is that of a plain mean; without, it also counts the error of the ``Z``
    estimated from the same samples. A KL that is infinite has an infinite error.
    """
    target = as_vector(target_log_scores, "target_log_scores")
    model = as_vector(model_log_probs, "model_log_probs")
    proposal = (
        model if proposal_log_probs is None else as_vector(proposal_log_probs, "proposal_log_probs")
    )
    z = None if log_z is None else _as_scalar(log_z, "log_z")
    value, stderr = _core.divergence_stderr(kind, target, model, proposal, z)
    return Estimate(float(value), float(stderr))


def weighted_moments_with_stderr(
    log_weights: ArrayLike, features: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Self-normalised moments of an ``N x K`` feature matrix and their standard errors.

    ``se_k = sqrt(sum_i w_i**2 (f_ik - m_k)**2)`` with the normalised weights ``w``; both are
    arrays of ``K`` (a 1-D ``features`` is one column).

    >>> m, se = weighted_moments_with_stderr([0.0] * 4, [1.0, 0.0, 1.0, 0.0])
    >>> float(m[0]), float(se[0])
    (0.5, 0.25)
    """
    lw = as_vector(log_weights, "log_weights")
    matrix = as_matrix(features, "features")
    values, stderrs = _core.weighted_moments_stderr(lw, matrix)  # checks the lengths
    return values, stderrs


def sample_means_with_stderr(features: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Plain means of an ``N x K`` feature matrix's columns (samples of the distribution itself).

    A column of 0s and 1s is a rate ``k / N``, and its standard error is Agresti and Coull's,
    that of ``p~ = (k + 2) / (N + 4)`` over ``N + 4`` trials: the binomial
    ``sqrt(p (1 - p) / N)`` to within a few ``1/N`` in between, but not 0 when all ``N`` samples
    agree (``k = 0`` or ``N``), where the plug-in error is 0 and would claim the rate exactly.
    Other columns take :func:`weighted_moments_with_stderr`'s error with equal weights.

    >>> m, se = sample_means_with_stderr([1.0, 1.0, 1.0, 1.0])
    >>> float(m[0]), round(float(se[0]), 4)
    (1.0, 0.1531)
    """
    matrix = as_matrix(features, "features")
    n = matrix.shape[0]
    if n == 0:
        raise ValueError("features has no rows: a mean needs at least one sample")
    values, stderrs = weighted_moments_with_stderr(np.zeros(n), matrix)
    rates = np.all((matrix == 0.0) | (matrix == 1.0), axis=0)
    smoothed = np.where(rates, (matrix.sum(axis=0) + 2.0) / (n + 4.0), 0.5)  # 0.5: not a rate
    binomial = np.sqrt(smoothed * (1.0 - smoothed) / (n + 4.0))
    return values, np.where(rates, binomial, stderrs)


def effective_sample_size_with_stderr(log_weights: ArrayLike) -> Estimate:
    """Kish's effective sample size of the weights ``e^l`` with its delta-method error."""
    value, stderr = _core.effective_sample_size_stderr(as_vector(log_weights, "log_weights"))
    return Estimate(float(value), float(stderr))


@dataclass(frozen=True)
class QRSPoint:
    """QRS at one ``β``, each figure with its standard error (unweighted samples of ``q``).

    ``acceptance_rate`` is ``AR(β)``; ``kl`` and ``tv`` are ``KL(p ‖ p_β)`` and ``TV(p, p_β)``;
    ``moments`` (one per feature column, or empty) are the features' moments under ``p_β``.
    """

    log_beta: float
    acceptance_rate: Estimate
    kl: Estimate
    tv: Estimate
    moments: tuple[Estimate, ...]


def qrs_point(
    log_ratios: ArrayLike,
    *,
    beta: float | None = None,
    log_beta: float | None = None,
    features: ArrayLike | None = None,
) -> QRSPoint:
    """QRS's acceptance rate, divergences and moments at one ``β``, with standard errors.

    ``log_ratios`` are ``log P - log q`` of samples drawn from ``q`` itself (``-inf`` where the
    target is zero); give exactly one of ``beta`` and ``log_beta``. The values agree with
    :func:`~disco.numerics.qrs_curve` at that ``β``.
    """
    if (beta is None) == (log_beta is None):
        raise ValueError("give exactly one of beta and log_beta")
    if beta is not None:
        lb = float(np.log(check_beta(_as_scalar(beta, "beta"))))
    else:
        lb = _as_scalar(log_beta, "log_beta")
    lr = as_vector(log_ratios, "log_ratios")
    phi = None if features is None else as_matrix(features, "features")
    ar, kl, tv, moments = _core.qrs_point_stderr(lr, lb, phi)
    estimates: tuple[Estimate, ...] = ()
    if moments is not None:
        values, stderrs = moments
        estimates = tuple(Estimate(float(v), float(s)) for v, s in zip(values, stderrs))
    return QRSPoint(lb, Estimate(*ar), Estimate(*kl), Estimate(*tv), estimates)
