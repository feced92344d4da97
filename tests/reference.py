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
