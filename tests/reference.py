"""Plain numpy float64 formulas: the references the Rust kernels are tested against."""

import numpy as np


def logsumexp(x):
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return -np.inf
    m = np.max(x)
    if m == -np.inf:
        return -np.inf
    return float(m + np.log(np.sum(np.exp(x - m))))


def logmeanexp(x):
    x = np.asarray(x, dtype=np.float64)
    return logsumexp(x) - np.log(x.size) if x.size else -np.inf


def normalized_weights(lw):
    lw = np.asarray(lw, dtype=np.float64)
    return np.exp(lw - logsumexp(lw))


def effective_sample_size(lw):
    w = normalized_weights(lw)
    return float(1.0 / np.sum(w**2))


def weighted_moments(lw, features):
    return normalized_weights(lw) @ np.asarray(features, dtype=np.float64)


def _ratios(target, model, proposal, log_z):
    target, model, proposal = (np.asarray(v, dtype=np.float64) for v in (target, model, proposal))
    lw = np.where(target == -np.inf, -np.inf, target - proposal)
    if log_z is None:
        log_z = logmeanexp(lw)
    p_over_q = np.exp(lw - log_z)
    pi_over_q = np.exp(np.where(model == -np.inf, -np.inf, model - proposal))
    return target, model, log_z, p_over_q, pi_over_q


def kl(target, model, proposal, log_z=None):
    target, model, log_z, a, _ = _ratios(target, model, proposal, log_z)
    mask = a > 0
    if np.any(model[mask] == -np.inf):
        return np.inf
    with np.errstate(invalid="ignore"):
        return float(np.mean(np.where(mask, a * (target - log_z - model), 0.0)))


def reverse_kl(target, model, proposal, log_z=None):
    target, model, log_z, _, b = _ratios(target, model, proposal, log_z)
    mask = b > 0
    if np.any(target[mask] == -np.inf):
        return np.inf
    with np.errstate(invalid="ignore"):
        return float(np.mean(np.where(mask, b * (model - target + log_z), 0.0)))


def tv(target, model, proposal, log_z=None):
    _, _, _, a, b = _ratios(target, model, proposal, log_z)
    return float(0.5 * np.mean(np.abs(a - b)))


def js(target, model, proposal, log_z=None):
    _, _, _, a, b = _ratios(target, model, proposal, log_z)
    m = 0.5 * (a + b)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(a > 0, a * np.log(a / m), 0.0)
        right = np.where(b > 0, b * np.log(b / m), 0.0)
    return float(0.5 * np.mean(left + right))


# --- standard errors ---------------------------------------------------------------------
# Each estimator below is written as a function of per-sample weights `c` (all 1 for the
# estimate itself); the delta method's influence values are then `psi_i = N dF/dc_i`, the
# infinitesimal jackknife, taken here by complex-step differentiation (exact to rounding).
# This derives the errors without the closed forms the core uses.


def _influence_stderr(estimator, n):
    """`sqrt(sum (psi - mean psi)^2) / N` with `psi_i = N dF/dc_i` at `c = 1`."""
    h = 1e-30
    psi = np.empty(n)
    for i in range(n):
        c = np.ones(n, dtype=np.complex128)
        c[i] += 1j * h
        psi[i] = n * np.imag(estimator(c)) / h
    return float(np.sqrt(np.sum((psi - psi.mean()) ** 2)) / n)


def _mean(c, x):
    return np.sum(c * x) / np.sum(c)


def _abs(x):
    """`|x|` that complex-step differentiates as the real function does."""
    return x * np.sign(np.real(x))


def divergence_with_stderr(kind, target, model, proposal, log_z=None):
    """`(value, stderr)` of the self-normalised divergence estimate of `kind`."""
    target, model, proposal = (np.asarray(v, dtype=np.float64) for v in (target, model, proposal))
    lw = np.where(target == -np.inf, -np.inf, target - proposal)
    shift = float(np.max(lw[np.isfinite(lw)])) if np.isfinite(lw).any() else 0.0
    r = np.exp(lw - shift)
    b = np.exp(np.where(model == -np.inf, -np.inf, model - proposal))
    pos_a, pos_b = r > 0, b > 0
    infinite = {"kl": pos_a & ~pos_b, "reverse_kl": pos_b & ~pos_a}.get(kind)
    if infinite is not None and infinite.any():
        return np.inf, np.inf
    safe_t = np.where(pos_a, target, 0.0)
    safe_m = np.where(pos_b, model, 0.0)

    def estimator(c):
        lz = np.log(_mean(c, r)) + shift if log_z is None else log_z + 0j
        a = np.exp(np.where(pos_a, lw - lz, -np.inf + 0j))
        if kind == "kl":
            terms = np.where(pos_a, a * (safe_t - lz - safe_m), 0.0)
        elif kind == "reverse_kl":
            terms = np.where(pos_b, b * (safe_m - safe_t + lz), 0.0)
        elif kind == "tv":
            terms = 0.5 * _abs(a - b)
        else:
            m = 0.5 * (a + b)
            safe = np.where(m != 0, m, 1.0)
            terms = 0.5 * (
                np.where(pos_a, a * np.log(np.where(pos_a, a, 1.0) / safe), 0.0)
                + np.where(pos_b, b * np.log(np.where(pos_b, b, 1.0) / safe), 0.0)
            )
        return _mean(c, terms)

    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.real(estimator(np.ones(len(target), dtype=np.complex128))))
        return value, _influence_stderr(estimator, len(target))


def weighted_moments_with_stderr(lw, features):
    """Self-normalised moments and their errors, column by column."""
    lw = np.asarray(lw, dtype=np.float64)
    features = np.asarray(features, dtype=np.float64).reshape(len(lw), -1)
    w = np.exp(lw - np.max(lw))
    values, errors = [], []
    for f in features.T:
        estimator = lambda c, f=f: _mean(c, w * f) / _mean(c, w)  # noqa: E731
        values.append(float(np.real(estimator(np.ones(len(lw), dtype=np.complex128)))))
        errors.append(_influence_stderr(estimator, len(lw)))
    return np.array(values), np.array(errors)


def effective_sample_size_with_stderr(lw):
    """Kish's ESS `(sum w)^2 / sum w^2` and its error."""
    lw = np.asarray(lw, dtype=np.float64)
    w = np.exp(lw - np.max(lw))
    estimator = lambda c: np.sum(c * w) ** 2 / np.sum(c * w * w)  # noqa: E731
    return effective_sample_size(lw), _influence_stderr(estimator, len(lw))


def qrs_point_with_stderr(log_ratios, log_beta, features=None):
    """`{name: (value, stderr)}` for QRS at `log_beta`: acceptance_rate, kl, tv, moment_k."""
    lr = np.asarray(log_ratios, dtype=np.float64)
    top = float(np.max(lr))
    r = np.exp(lr - top)
    m = np.exp(np.minimum(lr - top, log_beta - top))
    beta = np.exp(log_beta - top)
    clip = np.where(lr > log_beta, lr - log_beta, 0.0)

    def kl(c):
        z, zb = _mean(c, r), _mean(c, m)
        return _mean(c, r / z * clip) + np.log(zb / z)

    def tv(c):
        z, zb = _mean(c, r), _mean(c, m)
        return 0.5 * _mean(c, _abs(r / z - m / zb))

    estimators = {
        "acceptance_rate": lambda c: _mean(c, m / beta),
        "kl": kl,
        "tv": tv,
    }
    if features is not None:
        phi = np.asarray(features, dtype=np.float64).reshape(len(lr), -1)
        for k, f in enumerate(phi.T):
            estimators[f"moment_{k}"] = lambda c, f=f: _mean(c, m * f) / _mean(c, m)
    ones = np.ones(len(lr), dtype=np.complex128)
    return {
        name: (float(np.real(est(ones))), _influence_stderr(est, len(lr)))
        for name, est in estimators.items()
    }
