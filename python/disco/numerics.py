"""The Python face of the Rust core: log-space reductions, divergence estimates, the max-ent fit.

This is the only module that imports ``disco._core``. Every function accepts numpy arrays,
Python sequences or torch tensors (any float dtype, any device), converts them once to
contiguous float64 numpy, and hands them to a Rust kernel that releases the interpreter lock.

Log-scores may be ``-inf`` (probability zero) and are handled exactly; NaN, ``+inf``, length
mismatches and wrong shapes raise ``ValueError`` naming the argument and the position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import numpy.typing as npt

from disco import _core

__all__ = [
    "FitResult",
    "IMHRun",
    "QRSCurve",
    "QRSIndex",
    "TextPattern",
    "as_matrix",
    "as_vector",
    "beta_for_acceptance_rate",
    "effective_sample_size",
    "estimate_log_z",
    "f_divergence",
    "f_pseudo_rewards",
    "fit_coefficients",
    "imh_chain",
    "js_divergence",
    "kl_divergence",
    "logmeanexp",
    "logsumexp",
    "normalized_weights",
    "qrs_accept",
    "qrs_curve",
    "reverse_kl_divergence",
    "tv_distance",
    "weighted_moments",
]

ArrayLike = Any
"""Anything with numbers in it: a numpy array, a (nested) sequence, a torch tensor."""

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
DivergenceKind = Literal["kl", "reverse_kl", "tv", "js"]


def _to_float64(x: ArrayLike, name: str) -> FloatArray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        if x.is_complex():
            raise ValueError(f"{name} is a complex tensor: real numbers are expected")
        # np.asarray with order="C", not np.ascontiguousarray: the latter turns a 0-d array
        # into a 1-D one, which let scalars through where 1-D arrays are documented.
        return np.asarray(x.detach().cpu().double().numpy(), order="C")
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} cannot be read as an array of numbers: {err}") from err
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {array.dtype}: real numbers are expected")
    return np.asarray(array, dtype=np.float64, order="C")


def as_vector(x: ArrayLike, name: str) -> FloatArray:
    """Convert ``x`` to a contiguous 1-D float64 array, or raise ``ValueError`` naming ``name``."""
    array = _to_float64(x, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per sample); got shape {array.shape}")
    return array


def as_matrix(x: ArrayLike, name: str) -> FloatArray:
    """Convert ``x`` to a C-contiguous 2-D float64 array (a 1-D input becomes one column)."""
    array = _to_float64(x, name)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples x features); got shape {array.shape}")
    return array


def _as_scalar(x: ArrayLike, name: str) -> float:
    """Convert a single number (a Python or numpy scalar, a 0-d array or tensor) to float."""
    array = _to_float64(x, name)
    if array.ndim != 0:
        raise ValueError(f"{name} must be a single number; got shape {array.shape}")
    return float(array)


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


def estimate_log_z(target_log_scores: ArrayLike, proposal_log_probs: ArrayLike) -> float:
    """``log Z ≈ logmeanexp(log P - log q)`` from samples of the proposal ``q`` (DESIGN §3).

    Unbiased for ``Z`` (not for ``log Z``). Samples where the target is ``-inf`` weigh zero.
    """
    return float(
        _core.estimate_log_z(
            as_vector(target_log_scores, "target_log_scores"),
            as_vector(proposal_log_probs, "proposal_log_probs"),
        )
    )


def _divergence(
    kind: DivergenceKind,
    target_log_scores: ArrayLike,
    model_log_probs: ArrayLike,
    proposal_log_probs: ArrayLike | None,
    log_z: ArrayLike | float | None,
) -> float | FloatArray:
    target = _to_float64(target_log_scores, "target_log_scores")
    model = _to_float64(model_log_probs, "model_log_probs")
    proposal = (
        model
        if proposal_log_probs is None
        else _to_float64(proposal_log_probs, "proposal_log_probs")
    )
    for name, array in (
        ("target_log_scores", target),
        ("model_log_probs", model),
        ("proposal_log_probs", proposal),
    ):
        if array.ndim not in (1, 2):
            raise ValueError(
                f"{name} must be 1-D (samples) or 2-D (contexts x samples); got shape {array.shape}"
            )
        if array.shape != target.shape:
            raise ValueError(
                f"shape mismatch: target_log_scores has shape {target.shape} but {name} has "
                f"shape {array.shape}"
            )
    if target.ndim == 1:
        z = None if log_z is None else _as_scalar(log_z, "log_z")
        return float(_core.divergence(kind, target, model, proposal, z))
    zs = None if log_z is None else as_vector(log_z, "log_z")
    return _core.divergence_grouped(kind, target, model, proposal, zs)


def kl_divergence(
    target_log_scores: ArrayLike,
    model_log_probs: ArrayLike,
    proposal_log_probs: ArrayLike | None = None,
    log_z: ArrayLike | float | None = None,
) -> Any:
    """Forward ``KL(p ‖ model)`` in nats, where ``p = P / Z`` and the samples come from a proposal.

    ``KL ≈ mean_i (p_i / q_i) (log P_i - log Z - log model_i)`` (DESIGN §5). ``proposal_log_probs``
    defaults to ``model_log_probs`` (on-policy samples); ``log_z`` defaults to the estimate
    from the same samples, which makes the estimate self-normalised. 1-D inputs give a float;
    ``C x N`` inputs (one row per context, each with its own ``Z``) give ``C`` estimates.
    """
    return _divergence("kl", target_log_scores, model_log_probs, proposal_log_probs, log_z)


def reverse_kl_divergence(
    target_log_scores: ArrayLike,
    model_log_probs: ArrayLike,
    proposal_log_probs: ArrayLike | None = None,
    log_z: ArrayLike | float | None = None,
) -> Any:
    """Reverse ``KL(model ‖ p)`` in nats: ``mean_i (model_i / q_i) (log model_i - log P_i + log Z)``.

    Arguments as in :func:`kl_divergence`. With ``log_z=0`` and a normalised ``target_log_scores``
    (a base model's log-probabilities) this is ``KL(model ‖ base)``.
    """
    return _divergence("reverse_kl", target_log_scores, model_log_probs, proposal_log_probs, log_z)


def tv_distance(
    target_log_scores: ArrayLike,
    model_log_probs: ArrayLike,
    proposal_log_probs: ArrayLike | None = None,
    log_z: ArrayLike | float | None = None,
) -> Any:
    """Total variation ``½ mean_i |p_i - model_i| / q_i``, in [0, 1]; arguments as in :func:`kl_divergence`."""
    return _divergence("tv", target_log_scores, model_log_probs, proposal_log_probs, log_z)


def js_divergence(
    target_log_scores: ArrayLike,
    model_log_probs: ArrayLike,
    proposal_log_probs: ArrayLike | None = None,
    log_z: ArrayLike | float | None = None,
) -> Any:
    """Jensen–Shannon ``½ KL(p ‖ m) + ½ KL(model ‖ m)``, ``m = (p + model) / 2``, in nats (≤ ln 2).

    Arguments as in :func:`kl_divergence`.
    """
    return _divergence("js", target_log_scores, model_log_probs, proposal_log_probs, log_z)


# --------------------------------------------------------------------------------------------
# Quasi-Rejection Sampling (DESIGN §6)
# --------------------------------------------------------------------------------------------


def _log_betas(betas: ArrayLike | None, log_betas: ArrayLike | None) -> FloatArray:
    """Return validated ``log β`` values from exactly one of ``betas`` (> 0) and ``log_betas``."""
    if (betas is None) == (log_betas is None):
        raise ValueError("give exactly one of betas and log_betas")
    if log_betas is not None:
        return _at_most_1d(log_betas, "log_betas")
    values = _at_most_1d(betas, "betas")
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"betas[{i}] is {values[i]}: beta must be positive and finite")
    return np.log(values)


def _at_most_1d(x: ArrayLike, name: str) -> FloatArray:
    """A scalar or a 1-D array as a 1-D float64 array; anything with more dimensions is refused."""
    array = _to_float64(x, name)
    if array.ndim > 1:
        raise ValueError(f"{name} must be a number or 1-D; got shape {array.shape}")
    return np.atleast_1d(array)


def _scalar_input(x: ArrayLike | None) -> bool:
    return x is not None and np.ndim(x.detach().cpu().numpy() if hasattr(x, "detach") else x) == 0


@dataclass(frozen=True)
class QRSCurve:
    """QRS trade-off along a grid of betas (DESIGN §6); every array has one entry per beta.

    Attributes
    ----------
    log_betas:
        ``log β`` of each point (``betas`` is its exponential, ``inf`` past float range).
    acceptance_rate:
        ``AR(β) = Z_β / β``, the expected fraction of proposals accepted.
    log_z_beta:
        ``log Z_β``, the log-normaliser of ``p_β ∝ min(P, β q)``.
    kl, tv:
        ``KL(p ‖ p_β)`` (nats) and ``TV(p, p_β)``; exactly 0 once ``β`` reaches the largest ratio.
    js:
        ``JS(p, p_β)`` in nats, when asked for (it costs O(#clipped samples) per beta).
    moments:
        Feature moments under ``p_β`` (``B`` or ``B x K``), when features were given.
    log_z:
        ``log Z``, the importance-sampling estimate of the target's normaliser.
    """

    log_betas: FloatArray
    acceptance_rate: FloatArray
    log_z_beta: FloatArray
    kl: FloatArray
    tv: FloatArray
    js: FloatArray | None
    moments: FloatArray | None
    log_z: float

    @property
    def betas(self) -> FloatArray:
        """``β`` of each point."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_betas)

    def __len__(self) -> int:
        return int(self.log_betas.shape[0])

    def rows(self) -> list[dict[str, float]]:
        """Return one dict per beta: ``beta``, ``acceptance_rate``, ``kl``, ``tv``, ``js``, moments."""
        out = []
        for i in range(len(self)):
            row = {
                "beta": float(self.betas[i]),
                "log_beta": float(self.log_betas[i]),
                "acceptance_rate": float(self.acceptance_rate[i]),
                "kl": float(self.kl[i]),
                "tv": float(self.tv[i]),
            }
            if self.js is not None:
                row["js"] = float(self.js[i])
            if self.moments is not None:
                m = np.atleast_1d(self.moments[i])
                row.update({f"moment_{k}": float(v) for k, v in enumerate(m)})
            out.append(row)
        return out

    def to_markdown(self, digits: int = 4) -> str:
        """Format the curve as a markdown table."""
        rows = self.rows()
        if not rows:
            return ""
        keys = list(rows[0])
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(f"{r[k]:.{digits}g}" for k in keys) + " |" for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


class QRSIndex:
    """Log-ratios sorted once, with prefix sums: any beta is then answered in O(log N).

    ``log_ratios`` are ``l_i = log P(x_i) - log q(x_i)`` for samples ``x_i ~ q`` (``-inf`` where
    the target is zero). ``log_weights`` (optional) weigh samples that were not drawn from ``q``
    (an enumerated support weighted by ``q``, stratified draws): every mean becomes
    ``sum_i e^{w_i} g_i / sum_i e^{w_i}``, and zero-weight samples are ignored.

    Log-ratios and log-weights of any finite size are handled (the sums are taken relative to
    the largest of each, so ``l + c`` gives the same curve at ``log β + c``). Memory: the index
    holds one sorted copy of the log-ratios (and of the log-weights, when given) and references
    to the two input arrays, which :meth:`feature_moments` reads again; if they are changed in
    between, it refuses them (a fingerprint is checked) rather than answer for other samples.

    >>> index = QRSIndex([0.0, float("-inf")])
    >>> float(index.acceptance_rate(0.5))
    0.5
    """

    def __init__(self, log_ratios: ArrayLike, log_weights: ArrayLike | None = None) -> None:
        # The kernel holds one sorted copy of the log-ratios (and of the log-weights when
        # given) and references to these arrays, which it reads again for feature moments.
        weights = None if log_weights is None else as_vector(log_weights, "log_weights")
        self._core = _core.QrsIndex(as_vector(log_ratios, "log_ratios"), weights)

    def __repr__(self) -> str:
        return (
            f"QRSIndex(n={self.n}, log_z={self.log_z:.6g}, max_log_ratio={self.max_log_ratio:.6g})"
        )

    @property
    def n(self) -> int:
        """Number of samples with nonzero weight."""
        return int(self._core.n)

    @property
    def log_z(self) -> float:
        """``log Z`` estimated from the samples (the weighted mean of ``P / q``)."""
        return float(self._core.log_z)

    @property
    def max_log_ratio(self) -> float:
        """``log max P/q``: from this ``log β`` on, ``p_β = p`` exactly."""
        return float(self._core.max_log_ratio)

    @property
    def min_log_ratio(self) -> float:
        """``log min P/q`` over samples with ``P > 0``: up to it, acceptance is maximal."""
        return float(self._core.min_log_ratio)

    @property
    def max_acceptance_rate(self) -> float:
        """The acceptance rate of small betas: the share of the weight where ``P > 0``."""
        return float(self._core.max_acceptance_rate)

    def curve(
        self,
        betas: ArrayLike | None = None,
        *,
        log_betas: ArrayLike | None = None,
        features: ArrayLike | None = None,
        js: bool = False,
    ) -> QRSCurve:
        """Compute acceptance rate, ``log Z_β``, KL, TV (JS, feature moments) at each beta.

        O(B log N) after the sort (JS adds O(#clipped) per beta; features add O(N K)).
        """
        lb = _log_betas(betas, log_betas)
        table = self._core.curve(lb, js)
        moments = None
        if features is not None:
            moments = self.feature_moments(features, log_betas=lb)
        return QRSCurve(
            log_betas=lb,
            acceptance_rate=table["acceptance_rate"],
            log_z_beta=table["log_z_beta"],
            kl=table["kl"],
            tv=table["tv"],
            js=table.get("js"),
            moments=moments,
            log_z=self.log_z,
        )

    def acceptance_rate(
        self, betas: ArrayLike | None = None, *, log_betas: ArrayLike | None = None
    ) -> Any:
        """``AR(β)`` (a float for a scalar beta, else an array)."""
        values = self._core.curve(_log_betas(betas, log_betas), False)["acceptance_rate"]
        return (
            float(values[0]) if _scalar_input(betas if log_betas is None else log_betas) else values
        )

    def divergence(
        self,
        kind: Literal["kl", "tv", "js"],
        betas: ArrayLike | None = None,
        *,
        log_betas: ArrayLike | None = None,
    ) -> Any:
        """``KL(p ‖ p_β)``, ``TV(p, p_β)`` or ``JS(p, p_β)`` (a float for a scalar beta)."""
        if kind not in ("kl", "tv", "js"):
            raise ValueError(f"unknown divergence {kind!r}: expected 'kl', 'tv' or 'js'")
        values = self._core.curve(_log_betas(betas, log_betas), kind == "js")[kind]
        return (
            float(values[0]) if _scalar_input(betas if log_betas is None else log_betas) else values
        )

    def feature_moments(
        self,
        features: ArrayLike,
        betas: ArrayLike | None = None,
        *,
        log_betas: ArrayLike | None = None,
    ) -> Any:
        """Moments under ``p_β`` of features given per sample (``N`` or ``N x K``, in sample order).

        Shapes: scalar beta and 1-D features give a float; otherwise ``B``, ``K`` or ``B x K``.
        """
        one_feature = _to_float64(features, "features").ndim == 1
        matrix = as_matrix(features, "features")
        out = self._core.feature_moments(matrix, _log_betas(betas, log_betas))
        scalar = _scalar_input(betas if log_betas is None else log_betas)
        if one_feature:
            return float(out[0, 0]) if scalar else out[:, 0]
        return out[0] if scalar else out

    def log_beta_for_acceptance_rate(self, rates: ArrayLike) -> Any:
        """``log β`` whose acceptance rate is each of ``rates`` (exact, O(log² N) each)."""
        values = self._core.log_beta_for_acceptance_rate(_at_most_1d(rates, "rates"))
        return float(values[0]) if _scalar_input(rates) else values

    def beta_for_acceptance_rate(self, rates: ArrayLike) -> Any:
        """``β`` whose acceptance rate is each of ``rates`` (``inf`` past float range)."""
        lb = self.log_beta_for_acceptance_rate(rates)
        if isinstance(lb, float):
            return math.exp(lb) if lb < 709.78 else math.inf
        with np.errstate(over="ignore"):
            return np.exp(lb)


def qrs_curve(
    log_ratios: ArrayLike,
    betas: ArrayLike | None = None,
    *,
    log_betas: ArrayLike | None = None,
    log_weights: ArrayLike | None = None,
    features: ArrayLike | None = None,
    js: bool = False,
) -> QRSCurve:
    """Compute the QRS trade-off (acceptance rate, KL, TV, JS, moments) at many betas at once.

    With ``r_i = P_i / q_i`` (``log_ratios`` ``= log P_i - log q_i``) and means over the samples
    (weighted by ``exp(log_weights)`` when given), ``Z_β = mean min(r, β)``,
    ``AR = Z_β / β``, ``KL(p ‖ p_β)`` and ``TV(p, p_β)`` are prefix-sum queries after one
    sort, so B betas over N samples cost O(N log N + B log N) (DESIGN §6). The naive formula,
    per beta: ``AR = mean(minimum(exp(l), β)) / β``.

    >>> curve = qrs_curve([0.0, 1.0], betas=[0.5, 3.0])
    >>> [round(float(a), 6) for a in curve.acceptance_rate], float(curve.kl[1])
    ([1.0, 0.619714], 0.0)
    """
    index = QRSIndex(log_ratios, log_weights)
    return index.curve(betas, log_betas=log_betas, features=features, js=js)


def beta_for_acceptance_rate(
    log_ratios: ArrayLike, rates: ArrayLike, *, log_weights: ArrayLike | None = None
) -> Any:
    """Find the ``β`` at which QRS accepts the given fraction of proposals (solved exactly).

    ``AR(β)`` is non-increasing and piecewise ``(S_le/β + Ω_gt)/W`` between consecutive sorted
    ratios, so the segment is found by binary search and ``β`` follows in closed form.

    >>> beta_for_acceptance_rate([0.0, 0.0], 0.5)
    2.0
    """
    return QRSIndex(log_ratios, log_weights).beta_for_acceptance_rate(rates)


def qrs_accept(
    log_ratios: ArrayLike,
    uniforms: ArrayLike | None = None,
    beta: float | None = None,
    *,
    log_uniforms: ArrayLike | None = None,
    log_beta: float | None = None,
) -> BoolArray:
    """Decide QRS acceptance: accept sample ``i`` iff ``log u_i < min(0, l_i - log β)``.

    ``uniforms`` are ``u_i ~ U[0, 1)`` (or give ``log_uniforms``) from a seeded generator; a
    sample is thus accepted with probability ``min(1, P_i / (β q_i))``. ``-inf`` log-ratios are
    never accepted.

    >>> qrs_accept([0.0, -1.0], [0.5, 0.5], beta=1.0).tolist()
    [True, False]
    """
    if (uniforms is None) == (log_uniforms is None):
        raise ValueError("give exactly one of uniforms and log_uniforms")
    if (beta is None) == (log_beta is None):
        raise ValueError("give exactly one of beta and log_beta")
    if log_beta is not None:
        lb = _as_scalar(log_beta, "log_beta")
    else:
        lb = float(_log_betas(_as_scalar(beta, "beta"), None)[0])
    if log_uniforms is not None:
        return _core.qrs_accept(
            as_vector(log_ratios, "log_ratios"), as_vector(log_uniforms, "log_uniforms"), lb, True
        )
    return _core.qrs_accept(
        as_vector(log_ratios, "log_ratios"), as_vector(uniforms, "uniforms"), lb, False
    )


class IMHRun(NamedTuple):
    """One batch of an independent Metropolis–Hastings chain."""

    states: npt.NDArray[np.int64]
    """Per step, the index of the proposal the chain sits on (-1: the state it started from)."""
    accepted: BoolArray
    """Per step, whether the chain moved to the proposal."""
    final_log_ratio: float
    """The log-ratio of the state the chain ends on."""


def imh_chain(
    log_ratios: ArrayLike,
    uniforms: ArrayLike | None = None,
    current_log_ratio: float = -math.inf,
    *,
    log_uniforms: ArrayLike | None = None,
) -> IMHRun:
    """Run independent Metropolis–Hastings over a batch of proposals ``x_t ~ q``.

    From a state with log-ratio ``l_cur``, proposal ``t`` is accepted iff
    ``log u_t < l_t - l_cur`` (probability ``min(1, r_t / r_cur)``); a chain on a
    zero-probability state (the default start, ``-inf``) accepts any proposal.

    >>> imh_chain([0.0, -1.0], [0.5, 0.5]).states.tolist()
    [0, 0]
    """
    if (uniforms is None) == (log_uniforms is None):
        raise ValueError("give exactly one of uniforms and log_uniforms")
    ratios = as_vector(log_ratios, "log_ratios")
    current = _as_scalar(current_log_ratio, "current_log_ratio")
    if log_uniforms is not None:
        states, accepted, final = _core.imh_chain(
            ratios, as_vector(log_uniforms, "log_uniforms"), current, True
        )
    else:
        states, accepted, final = _core.imh_chain(
            ratios, as_vector(uniforms, "uniforms"), current, False
        )
    return IMHRun(states, accepted, float(final))


FDivergenceKind = Literal["kl", "reverse_kl", "tv", "js", "chi2", "reverse_chi2"]


def _f_batch(
    policy_log_probs: ArrayLike, target_log_scores: ArrayLike, proposal_log_probs: ArrayLike | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    policy = as_vector(policy_log_probs, "policy_log_probs")
    target = as_vector(target_log_scores, "target_log_scores")
    proposal = (
        policy
        if proposal_log_probs is None
        else as_vector(proposal_log_probs, "proposal_log_probs")
    )
    return policy, target, proposal


def f_pseudo_rewards(
    kind: FDivergenceKind,
    policy_log_probs: ArrayLike,
    target_log_scores: ArrayLike,
    proposal_log_probs: ArrayLike | None,
    log_z: float,
    max_log_t: float = 30.0,
) -> tuple[FloatArray, FloatArray]:
    """Importance weights ``w = pi/q`` and weighted pseudo-rewards ``w * -f'(t)`` for f-DPG.

    ``t = pi/p = exp(log pi - log P + log Z)`` (DESIGN §5); the loss whose gradient is the
    gradient of ``D_f(pi ‖ p)`` is ``-mean((w r - w b) log pi)`` for any baseline ``b``.
    ``log t`` is capped at ``max_log_t`` so that samples the target rules out get a large
    finite penalty under losses whose ``f'`` is unbounded; where ``pi = 0`` both are 0.
    """
    policy, target, proposal = _f_batch(policy_log_probs, target_log_scores, proposal_log_probs)
    return _core.f_pseudo_rewards(
        kind,
        policy,
        target,
        proposal,
        _as_scalar(log_z, "log_z"),
        _as_scalar(max_log_t, "max_log_t"),
    )


def f_divergence(
    kind: FDivergenceKind,
    policy_log_probs: ArrayLike,
    target_log_scores: ArrayLike,
    proposal_log_probs: ArrayLike | None,
    log_z: float,
) -> tuple[float, float]:
    """Estimate ``D_f(pi ‖ p)`` and its standard error by importance sampling from ``q``.

    Terms are ``(p/q) f(t)`` where ``P > 0`` and ``(pi/q) lim f(t)/t`` where ``P = 0``, so
    mass the policy puts outside the target's support is counted. Jensen–Shannon is returned
    as the standard JS in nats (half of the table's ``f``).
    """
    policy, target, proposal = _f_batch(policy_log_probs, target_log_scores, proposal_log_probs)
    value, stderr = _core.f_divergence(kind, policy, target, proposal, _as_scalar(log_z, "log_z"))
    return float(value), float(stderr)


class TextPattern:
    r"""A regular expression searched in linear time (Rust's ``regex`` crate), in batches.

    Unlike Python's backtracking ``re``, no pattern can make a search slow (``^(\w+\s?)*$``
    hangs ``re`` on one sentence): the cost is linear in the text. The price is the syntax an
    automaton cannot express: backreferences (``\1``) and look-around (``(?=``, ``(?<!`` ...)
    are refused here, when the pattern is compiled, with a ``ValueError``.

    ``flags`` is a string of ``i`` (ignore case), ``m`` (``^``/``$`` at line breaks) and ``s``
    (``.`` also matches a newline), as ``re.IGNORECASE``, ``re.MULTILINE`` and ``re.DOTALL``.
    Differences from ``re`` worth knowing: ``$`` without ``m`` matches only at the very end
    (``re`` also matches before a final newline); ``\Z`` is written ``\z``; ``\w``, ``\d``,
    ``\s`` and ``\b`` are Unicode-aware in both (``re.ASCII`` has no equivalent flag: write
    ``(?-u:\w)`` or ``[0-9]``); inside brackets ``&&``, ``--`` and ``~~`` are set operations
    and must be escaped to mean themselves.

    >>> TextPattern(r"\bgod\b", "i").search(["And God said", "godly"]).tolist()
    [True, False]
    """

    def __init__(self, pattern: str, flags: str = "") -> None:
        if not isinstance(pattern, str):
            raise ValueError(f"pattern is {type(pattern).__name__}: a str is expected")
        if not isinstance(flags, str):
            raise ValueError(f"flags is {type(flags).__name__}: a str of 'i', 'm', 's' is expected")
        self.pattern = pattern
        self.flags = flags
        self._core = _core.TextPattern(pattern, flags)

    def __repr__(self) -> str:
        return f"TextPattern({self.pattern!r}, {self.flags!r})"

    def search(self, texts: Sequence[str]) -> BoolArray:
        """Whether the pattern matches somewhere in each text (as ``re.search(...) is not None``)."""
        return self._core.search(texts if isinstance(texts, list) else list(texts))


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
) -> FitResult:
    """Fit ``lambda`` so that ``p ∝ a b exp(lambda . phi)`` has the target moments (DESIGN §4).

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
    coefficients, iterations, moments, max_error, ess, log_z = _core.fit_coefficients(
        matrix, targets, lw, g, tolerance, max_iterations, start
    )
    return FitResult(
        coefficients=coefficients,
        iterations=int(iterations),
        moments=moments,
        max_error=float(max_error),
        ess=float(ess),
        log_z=float(log_z),
    )
