"""Quasi-Rejection Sampling (docs/design.md §7): the β-curve index, accept/reject, IMH (§8)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from disco import _core
from disco._beta import check_betas
from disco.numerics._convert import (
    ArrayLike,
    BoolArray,
    FloatArray,
    _as_scalar,
    _at_most_1d,
    _scalar_input,
    _to_float64,
    as_matrix,
    as_vector,
)


def _log_betas(betas: ArrayLike | None, log_betas: ArrayLike | None) -> FloatArray:
    """Return validated ``log β`` values from exactly one of ``betas`` (> 0) and ``log_betas``."""
    if (betas is None) == (log_betas is None):
        raise ValueError("give exactly one of betas and log_betas")
    if log_betas is not None:
        return _at_most_1d(log_betas, "log_betas")
    values = _at_most_1d(betas, "betas")
    check_betas(values)
    return np.log(values)


@dataclass(frozen=True)
class QRSCurve:
    """QRS trade-off on a grid of betas (docs/design.md §7.2); every array has one entry per beta.

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
    sort: B betas over N samples cost O(N log N + B log N) (docs/design.md §7.2). The naive formula,
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
