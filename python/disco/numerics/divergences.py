"""Divergence estimates, ``log Z``, f-DPG rewards, the tuner's metrics (docs/design.md §5, §6)."""

from __future__ import annotations

from typing import Any, Literal

from disco import _core
from disco.numerics._convert import (
    ArrayLike,
    FloatArray,
    _as_scalar,
    _to_float64,
    as_matrix,
    as_vector,
)

DivergenceKind = Literal["kl", "reverse_kl", "tv", "js"]
FDivergenceKind = Literal["kl", "reverse_kl", "tv", "js", "chi2", "reverse_chi2"]


def estimate_log_z(target_log_scores: ArrayLike, proposal_log_probs: ArrayLike) -> float:
    """``log Z ≈ logmeanexp(log P - log q)`` from samples of a proposal ``q`` (docs/design.md §2.3).

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

    ``KL ≈ mean_i (p_i/q_i)(log P_i - log Z - log model_i)`` (docs/design.md §5.1). ``proposal_log_probs``
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

    ``t = pi/p = exp(log pi - log P + log Z)`` (docs/design.md §6.1); the loss whose gradient is the
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


def tuner_metrics(
    loss: FDivergenceKind,
    target_log_scores: ArrayLike,
    policy_log_probs: ArrayLike,
    proposal_log_probs: ArrayLike,
    log_z: float,
    features: ArrayLike | None = None,
    base_log_probs: ArrayLike | None = None,
) -> tuple[dict[str, float], FloatArray | None]:
    """Every metric the tuner tracks for one context, from one conversion and one validation.

    Returns ``(scalars, moments)``. ``scalars`` maps, in this order: ``kl_target_policy``,
    ``kl_target_proposal``, ``tv_target_proposal``, ``js_target_proposal``,
    ``tv_target_policy``, ``js_target_policy`` (as :func:`kl_divergence`, :func:`tv_distance`
    and :func:`js_divergence` with the given ``log_z``), ``log_z``, ``ess`` (of the weights
    ``P/q``; 0 when the target rules out every sample), ``divergence`` and
    ``divergence_stderr`` (the loss's ``D_f(pi ‖ p)``, as :func:`f_divergence`; reused, not
    estimated again, where it is one of the divergences above) and, with ``base_log_probs``,
    ``kl_policy_base`` (``KL(pi ‖ base)`` as :func:`reverse_kl_divergence` with ``log_z=0``).
    ``kl_target_policy_stderr``, ``kl_policy_base_stderr`` and ``moment_stderr_{k}`` (one per
    feature column) are their standard errors, as :func:`divergence_with_stderr` and
    :func:`weighted_moments_with_stderr` give them. ``moments`` are the policy's self-normalised
    moments of the ``N x K`` ``features`` (weights ``pi/q``), or ``None`` without features.

    >>> scalars, moments = tuner_metrics("kl", [0.0, 0.0], [-0.7, -0.7], [-0.7, -0.7], 0.7, [1.0, 3.0])
    >>> round(scalars["kl_target_policy"], 12), scalars["ess"], moments.tolist()
    (0.0, 2.0, [2.0])
    """
    target = as_vector(target_log_scores, "target_log_scores")
    policy = as_vector(policy_log_probs, "policy_log_probs")
    proposal = as_vector(proposal_log_probs, "proposal_log_probs")
    phi = None if features is None else as_matrix(features, "features")
    base = None if base_log_probs is None else as_vector(base_log_probs, "base_log_probs")
    scalars, moments = _core.tuner_metrics(
        loss, target, policy, proposal, _as_scalar(log_z, "log_z"), phi, base
    )
    return dict(scalars), moments
