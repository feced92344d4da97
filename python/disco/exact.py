"""Exact quantities over an enumerable support: the oracle every estimator is tested against.

Everything here is plain numpy float64 over arrays that list a value for *every* point of a
support (docs/design.md §10), apart from the Rust core on purpose. Log-scores may be unnormalised
and may be ``-inf``; divergences normalise their inputs first. Conventions: ``0 log 0 = 0``;
a divergence that needs ``log(p/0)`` with ``p > 0`` is ``inf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from disco._calls import call_log_score

__all__ = [
    "f_divergence",
    "js",
    "kl",
    "log_partition",
    "moments",
    "normalize",
    "optimal_coefficients",
    "qrs_acceptance_rate",
    "qrs_divergence",
    "qrs_log_probs",
    "support_log_scores",
    "tv",
]

FloatArray = npt.NDArray[np.float64]


def _log_scores(x: Any, name: str = "log_scores") -> FloatArray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D array over the support; got shape {array.shape}"
        )
    if np.isnan(array).any() or np.isposinf(array).any():
        raise ValueError(f"{name} contains NaN or +inf")
    return array


def log_partition(log_scores: Any) -> float:
    """``log Σ_x exp(log_scores[x])`` over the whole support."""
    s = _log_scores(log_scores)
    m = s.max()
    if m == -np.inf:
        return -np.inf
    return float(m + np.log(np.exp(s - m).sum()))


def normalize(log_scores: Any) -> FloatArray:
    """Log-probabilities ``log_scores - log Z``; fails when every score is ``-inf``."""
    s = _log_scores(log_scores)
    log_z = log_partition(s)
    if log_z == -np.inf:
        raise ValueError("every log-score is -inf: the distribution cannot be normalised")
    return s - log_z


def _features(features: Any, n: int) -> FloatArray:
    f = np.asarray(
        features.detach().cpu().numpy() if hasattr(features, "detach") else features,
        dtype=np.float64,
    )
    if f.ndim == 1:
        f = f[:, None]
    if f.shape[0] != n:
        raise ValueError(f"features have {f.shape[0]} rows but the support has {n} points")
    return f


def moments(log_scores: Any, features: Any) -> FloatArray:
    """Exact moments ``E_p[f_k]`` of an ``N x K`` (or ``N``) feature array under ``p ∝ exp(log_scores)``."""
    p = np.exp(normalize(log_scores))
    return p @ _features(features, p.size)


def _pair(log_p: Any, log_q: Any) -> tuple[FloatArray, FloatArray]:
    lp, lq = normalize(_log_scores(log_p, "log_p")), normalize(_log_scores(log_q, "log_q"))
    if lp.shape != lq.shape:
        raise ValueError(f"log_p has {lp.size} points but log_q has {lq.size}")
    return lp, lq


def kl(log_p: Any, log_q: Any) -> float:
    """``KL(p ‖ q) = Σ p log(p/q)``."""
    lp, lq = _pair(log_p, log_q)
    support = lp > -np.inf
    if np.any(lq[support] == -np.inf):
        return np.inf
    return float(np.sum(np.exp(lp[support]) * (lp[support] - lq[support])))


def tv(log_p: Any, log_q: Any) -> float:
    """Total variation ``½ Σ |p - q|``."""
    lp, lq = _pair(log_p, log_q)
    return float(0.5 * np.abs(np.exp(lp) - np.exp(lq)).sum())


def js(log_p: Any, log_q: Any) -> float:
    """Jensen–Shannon ``½ KL(p ‖ m) + ½ KL(q ‖ m)`` with ``m = (p + q)/2``, in nats."""
    lp, lq = _pair(log_p, log_q)
    lm = np.logaddexp(lp, lq) - np.log(2.0)
    return 0.5 * kl(lp, lm) + 0.5 * kl(lq, lm)


def f_divergence(log_pi: Any, log_p: Any, kind: str) -> float:
    """``D_f(pi ‖ p) = Σ_x p f(pi/p)`` for the f-DPG divergences (docs/design.md §6.2).

    ``kind`` is ``"kl"`` (``KL(p‖pi)``), ``"reverse_kl"`` (``KL(pi‖p)``), ``"tv"``, ``"js"``
    (standard, in nats), ``"chi2"`` (Pearson, ``Σ (pi-p)²/p``) or ``"reverse_chi2"`` (Neyman,
    ``Σ (p-pi)²/pi``).
    """
    lpi, lp = _pair(log_pi, log_p)
    pi, p = np.exp(lpi), np.exp(lp)
    if kind == "kl":
        return kl(lp, lpi)
    if kind == "reverse_kl":
        return kl(lpi, lp)
    if kind == "tv":
        return tv(lpi, lp)
    if kind == "js":
        return js(lpi, lp)
    if kind == "chi2":
        return (
            np.inf
            if np.any((p == 0) & (pi > 0))
            else float(np.sum(np.where(p > 0, (pi - p) ** 2 / np.where(p > 0, p, 1), 0.0)))
        )
    if kind == "reverse_chi2":
        return (
            np.inf
            if np.any((pi == 0) & (p > 0))
            else float(np.sum(np.where(pi > 0, (p - pi) ** 2 / np.where(pi > 0, pi, 1), 0.0)))
        )
    raise ValueError(f"unknown f-divergence {kind!r}")


def optimal_coefficients(
    base_log_probs: Any,
    features: Any,
    target_moments: Sequence[float] | Any,
    tolerance: float = 1e-13,
) -> FloatArray:
    """Find the ``λ`` whose ``p_λ ∝ a · exp(λ·φ)`` has ``E_{p_λ}[φ] = μ̄`` exactly over the support.

    Solves the exact dual ``log Z(λ) - λ·μ̄`` by Newton's method with backtracking in numpy.
    """
    la = _log_scores(base_log_probs, "base_log_probs")
    phi = _features(features, la.size)
    mu = np.atleast_1d(np.asarray(target_moments, dtype=np.float64))
    if mu.shape != (phi.shape[1],):
        raise ValueError(f"{mu.size} target moments for {phi.shape[1]} features")
    lam = np.zeros(phi.shape[1])

    def dual(lam: FloatArray) -> float:
        return log_partition(la + phi @ lam) - float(lam @ mu)

    for _ in range(500):
        p = np.exp(normalize(la + phi @ lam))
        mean = p @ phi
        gradient = mean - mu
        if np.max(np.abs(gradient)) < tolerance:
            return lam
        centred = phi - mean
        hessian = (centred * p[:, None]).T @ centred
        step = np.linalg.solve(hessian, -gradient)
        t, current = 1.0, dual(lam)
        # Rounding-level slack: near the optimum the dual's decrease is below its rounding error.
        slack = 1e-14 * max(1.0, abs(current))
        while (
            dual(lam + t * step) > current + 1e-4 * t * float(gradient @ step) + slack and t > 1e-12
        ):
            t /= 2
        lam = lam + t * step
    raise ValueError("the exact dual did not converge: are the moments inside the convex hull?")


def qrs_log_probs(target_log_scores: Any, proposal_log_probs: Any, beta: float) -> FloatArray:
    """Log-probabilities of QRS's output ``p_β ∝ min(P, β q)`` (docs/design.md §7.1)."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    lp = _log_scores(target_log_scores, "target_log_scores")
    lq = _log_scores(proposal_log_probs, "proposal_log_probs")
    return normalize(np.minimum(lp, np.log(beta) + lq))


def qrs_acceptance_rate(target_log_scores: Any, proposal_log_probs: Any, beta: float) -> float:
    """Probability that QRS accepts a proposal: ``Σ_x min(P(x), β q(x)) / β``."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    lp = _log_scores(target_log_scores, "target_log_scores")
    lq = _log_scores(proposal_log_probs, "proposal_log_probs")
    return float(np.exp(log_partition(np.minimum(lp, np.log(beta) + lq)) - np.log(beta)))


def qrs_divergence(
    target_log_scores: Any,
    proposal_log_probs: Any,
    beta: float,
    kind: Literal["kl", "tv", "js"] = "kl",
) -> float:
    """``D(p ‖ p_β)`` between the normalised target and QRS's output at ``β``."""
    lp = _log_scores(target_log_scores, "target_log_scores")
    lb = qrs_log_probs(lp, proposal_log_probs, beta)
    divergences = {"kl": kl, "tv": tv, "js": js}
    if kind not in divergences:
        raise ValueError(f"unknown divergence {kind!r}: expected 'kl', 'tv' or 'js'")
    return divergences[kind](lp, lb)


def support_log_scores(scorer: Any, samples: Sequence[Any], context: Any = "") -> FloatArray:
    """``scorer.log_score(samples, context)`` as a float64 numpy array (a convenience)."""
    return _log_scores(call_log_score(scorer, samples, context), "log_score")
