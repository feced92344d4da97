"""The maximum-entropy fit of the coefficients of an EBM (docs/design.md §3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from disco import _core
from disco.numerics._convert import ArrayLike, FloatArray, _to_float64, as_matrix, as_vector


@dataclass(frozen=True, eq=False)
class FitResult:
    """The coefficients fitted by :func:`fit_coefficients` and what they achieve on the samples.

    Attributes
    ----------
    coefficients
        ``lambda``, one finite coefficient per feature.
    iterations
        Newton steps taken (0 when ``initial`` already met the tolerance).
    moments
        The moments reached on the samples, ``mean_c E_c[phi]`` (with groups, the average over
        contexts of each context's self-normalised moments).
    max_error
        ``max_k |moments_k - target_moments_k|``; each ``|moments_k - target_moments_k|`` is
        below ``tolerance`` times feature ``k``'s range on the samples.
    ess
        Kish's effective sample size ``1 / sum_i w_i**2`` of the fitted target's normalised
        importance weights. With groups, each context's weights are normalised on their own and
        this is the mean over contexts of each context's ESS (so it lies in ``[1, N / C]`` for
        ``C`` equally sized contexts).
    log_z
        ``mean_c log Z_c(lambda)`` with ``Z_c = mean_{i in c} exp(log_weights_i + lambda . phi_i)``:
        the estimated log-normaliser of ``a b exp(lambda . phi)`` (averaged over contexts).
    """

    coefficients: FloatArray
    iterations: int
    moments: FloatArray
    max_error: float
    ess: float
    log_z: float


def _as_groups(groups: ArrayLike) -> npt.NDArray[np.int64]:
    if hasattr(groups, "detach") and hasattr(groups, "cpu"):  # a torch tensor
        groups = groups.detach().cpu().numpy()
    try:
        array = np.asarray(groups)
    except (TypeError, ValueError) as err:
        raise ValueError(f"groups cannot be read as an array of integers: {err}") from err
    if array.ndim != 1:
        raise ValueError(
            f"groups must be 1-D (one context index per sample); got shape {array.shape}"
        )
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(
            f"groups has dtype {array.dtype}: integer context indices 0..C-1 are expected"
        )
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        i = int(np.argmax(array))
        raise ValueError(f"groups[{i}] is {array[i]}: context indices must be in 0..C-1")
    return np.ascontiguousarray(array, dtype=np.int64)


def fit_coefficients(
    features: ArrayLike,
    target_moments: ArrayLike,
    log_weights: ArrayLike | None = None,
    groups: ArrayLike | None = None,
    tolerance: float = 1e-8,
    max_iterations: int = 100,
    initial: ArrayLike | None = None,
    feature_names: Sequence[str] | None = None,
) -> FitResult:
    """Fit ``lambda``: ``p ∝ a b exp(lambda . phi)`` with the target moments (docs/design.md §3).

    From ``N`` samples of a proposal ``q``, with ``log_weights = log a + log b - log q``
    (default all zero: the samples come from the base itself) and an ``N x K`` feature matrix,
    minimise the sample estimate of the convex dual

        ``L(lambda) = mean_c log Z_c(lambda) - lambda . target_moments``,
        ``Z_c(lambda) = mean_{i in c} exp(log_weights_i + lambda . phi_i)``,

    by damped Newton with a backtracking line search, until every moment
    ``mean_c E_c[phi_k]`` is within ``tolerance`` times its feature's range of its target.
    ``groups`` gives each sample's context ``0..C-1`` for a conditional target (one ``lambda``
    shared by all contexts, weights normalised within each context); without it all samples
    form one context.

    Memory: one copy of the features (centred on the targets, grouped by context, samples of
    zero weight dropped) and of the log-weights when given; the weights ``exp(s_i - max s)``
    are recomputed block by block in each pass, so nothing else of size ``N`` is held.

    Parameters
    ----------
    features
        ``N x K`` finite feature values (a 1-D array is one feature).
    target_moments
        ``K`` targets (a scalar for one feature).
    log_weights
        ``N`` log importance weights, finite or ``-inf`` (that sample weighs zero).
    groups
        ``N`` integer context indices; every context ``0..C-1`` needs a sample of nonzero weight.
    tolerance
        Largest accepted ``|moment_k - target_k|`` relative to the range feature ``k`` takes on
        the samples of nonzero weight (with groups, ``mean_c max - mean_c min``): a 0/1 feature
        is fitted to ``tolerance`` absolutely, and rescaling a feature (by 1e-8 or 1e8) does
        not change the fit.
    max_iterations
        Newton steps allowed.
    initial
        Starting coefficients (default zeros), e.g. a previous fit's.
    feature_names
        A name per feature: a ``ValueError`` about feature ``k`` (or ``target_moments[k]``)
        shows its name after the index, as ``feature 1 ('length')``.

    Returns
    -------
    FitResult
        The coefficients, the iterations, the moments reached, the largest moment error, the
        ESS of the fitted weights and the estimated ``log Z``.

    Raises
    ------
    ValueError
        Bad shapes or values (NaN or infinite features, NaN or ``+inf`` log-weights), all
        weights zero, a context without a sample of nonzero weight, a target outside or on the
        boundary of the range its feature takes on the samples of nonzero weight, a constant
        feature, collinear features, or targets that are each attainable but not together
        (outside, or on the boundary of, the convex hull of the sampled feature vectors; with
        groups, of the average over contexts of each context's hull). The message names the
        features, the target and the sampled range, or the direction that separates the
        targets from what the samples can reach.
    disco.ConvergenceError
        ``max_iterations`` steps were not enough; ``.last`` holds the last coefficients,
        ``.iterations`` and ``.max_error`` the state reached.

    Examples
    --------
    One boolean feature seen once in four equally likely samples (base rate 1/4); a target of
    1/2 needs ``lambda = logit(1/2) - logit(1/4) = log 3``:

    >>> fit = fit_coefficients([1.0, 0.0, 0.0, 0.0], 0.5, tolerance=1e-12)
    >>> round(float(fit.coefficients[0]), 12), fit.moments.tolist()
    (1.098612288668, [0.5])
    """
    matrix = as_matrix(features, "features")
    targets = np.atleast_1d(_to_float64(target_moments, "target_moments"))
    if targets.ndim != 1:
        raise ValueError(
            f"target_moments must be 1-D (one target per feature); got shape {targets.shape}"
        )
    lw = None if log_weights is None else as_vector(log_weights, "log_weights")
    g = None if groups is None else _as_groups(groups)
    start = None if initial is None else as_vector(initial, "initial")
    # The binding refuses a bad tolerance or max_iterations (a bool, a float, 2**64, -1) with
    # a ValueError of its own.
    names = None if feature_names is None else [str(name) for name in feature_names]
    coefficients, iterations, moments, max_error, ess, log_z = _core.fit_coefficients(
        matrix, targets, lw, g, tolerance, max_iterations, start, names
    )
    return FitResult(
        coefficients=coefficients,
        iterations=int(iterations),
        moments=moments,
        max_error=float(max_error),
        ess=float(ess),
        log_z=float(log_z),
    )
