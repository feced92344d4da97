"""`numerics.tuner_metrics`: every metric the tuner tracks in one Rust call.

Checked against the per-metric functions it replaces (random batches with zero
probabilities, every loss) and against exact values on a whole enumerable support.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from disco import exact, numerics
from disco.distributions import EnumerableLM

KINDS = ["kl", "reverse_kl", "tv", "js", "chi2", "reverse_chi2"]


def per_metric(kind, log_p, log_pi, log_q, log_z, phi, log_a):
    """The tracked metrics as the tuner computed them before, one Rust call each."""
    m = {
        "kl_target_policy": float(numerics.kl_divergence(log_p, log_pi, log_q, log_z)),
        "kl_target_policy_stderr": numerics.divergence_with_stderr(
            "kl", log_p, log_pi, log_q, log_z
        ).stderr,
        "kl_target_proposal": float(numerics.kl_divergence(log_p, log_q, log_q, log_z)),
        "tv_target_proposal": float(numerics.tv_distance(log_p, log_q, log_q, log_z)),
        "js_target_proposal": float(numerics.js_divergence(log_p, log_q, log_q, log_z)),
        "tv_target_policy": float(numerics.tv_distance(log_p, log_pi, log_q, log_z)),
        "js_target_policy": float(numerics.js_divergence(log_p, log_pi, log_q, log_z)),
        "log_z": log_z,
        "ess": numerics.effective_sample_size(log_p - log_q) if np.any(log_p > -np.inf) else 0.0,
    }
    m["divergence"], m["divergence_stderr"] = numerics.f_divergence(
        kind, log_pi, log_p, log_q, log_z
    )
    moments = None if phi is None else np.atleast_1d(numerics.weighted_moments(log_pi - log_q, phi))
    if log_a is not None:
        m["kl_policy_base"] = float(numerics.reverse_kl_divergence(log_a, log_pi, log_q, 0.0))
        m["kl_policy_base_stderr"] = numerics.divergence_with_stderr(
            "reverse_kl", log_a, log_pi, log_q, 0.0
        ).stderr
    if phi is not None:
        _, errors = numerics.weighted_moments_with_stderr(log_pi - log_q, phi)
        m.update({f"moment_stderr_{j}": float(e) for j, e in enumerate(errors)})
    return m, moments


def assert_close(got: float, want: float, tol: float = 1e-12) -> None:
    assert got == want or abs(got - want) <= tol * max(1.0, abs(want)), (got, want)


def batch(seed: int, n: int, zeros: bool):
    rng = np.random.default_rng(seed)
    log_q = rng.normal(-3.0, 1.0, n)
    log_pi = log_q + rng.normal(0.0, 0.5, n)
    log_p = log_q + rng.normal(1.0, 1.0, n)
    log_a = log_q + rng.normal(0.0, 0.3, n)
    if zeros:
        log_p[::5] = -np.inf  # samples the target rules out
        log_pi[3::7] = -np.inf  # samples the policy cannot produce
        log_a[3::7] = -np.inf  # ... nor the base
    phi = rng.normal(size=(n, 3))
    return log_p, log_pi, log_q, phi, log_a


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("extras", [False, True])
def test_matches_the_per_metric_functions(kind, zeros, extras):
    log_p, log_pi, log_q, phi, log_a = batch(KINDS.index(kind) + 10 * zeros, 257, zeros)
    if not extras:
        phi = log_a = None
    log_z = numerics.estimate_log_z(log_p, log_q) + 0.1
    scalars, moments = numerics.tuner_metrics(kind, log_p, log_pi, log_q, log_z, phi, log_a)
    want, want_moments = per_metric(kind, log_p, log_pi, log_q, log_z, phi, log_a)
    assert list(scalars) == list(want)  # same names, same order
    for name, value in want.items():
        assert_close(scalars[name], value)
    if extras:
        np.testing.assert_allclose(moments, want_moments, rtol=1e-12, atol=1e-15)
    else:
        assert moments is None


def test_infinite_and_degenerate_batches_agree_too():
    log_q = np.log(np.full(4, 0.25))
    log_pi = np.array([-1.0, -np.inf, -1.0, -2.0])
    log_p = np.array([0.0, 0.0, -np.inf, -1.0])  # the policy misses a target sample: KL = inf
    for kind in KINDS:
        scalars, _ = numerics.tuner_metrics(kind, log_p, log_pi, log_q, 0.3)
        want, _ = per_metric(kind, log_p, log_pi, log_q, 0.3, None, None)
        for name, value in want.items():
            assert_close(scalars[name], value)
    assert scalars["kl_target_policy"] == math.inf
    none = np.full(4, -np.inf)  # the target rules out every sample: ESS 0, as before
    assert numerics.tuner_metrics("kl", none, log_pi, log_q, 0.0)[0]["ess"] == 0.0


def test_exact_on_a_whole_support():
    """With every sequence once and a uniform proposal, importance sampling is exact."""
    base = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=2)
    policy = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=7)
    support, log_a = base.enumerate_support()
    log_a = log_a.numpy()
    log_pi = policy.log_score(support).numpy()
    words = [s.text.split() for s in support]
    has_a = np.array([float("a" in w) for w in words])
    length = np.array([float(len(w)) for w in words])
    phi = np.stack([has_a, length], axis=1)
    log_p = log_a + 0.8 * length + np.where(has_a > 0, 0.0, -np.inf)  # a pointwise constraint
    log_q = np.full(len(support), -math.log(len(support)))
    log_z = exact.log_partition(log_p)
    p = exact.normalize(log_p)
    q = exact.normalize(log_q)
    for kind in KINDS:
        scalars, moments = numerics.tuner_metrics(kind, log_p, log_pi, log_q, log_z, phi, log_a)
        assert_close(scalars["divergence"], exact.f_divergence(log_pi, log_p, kind), 1e-12)
    assert_close(scalars["kl_target_policy"], exact.kl(p, log_pi))
    assert_close(scalars["kl_target_proposal"], exact.kl(p, q))
    assert_close(scalars["tv_target_policy"], exact.tv(p, log_pi))
    assert_close(scalars["tv_target_proposal"], exact.tv(p, q))
    assert_close(scalars["js_target_policy"], exact.js(p, log_pi))
    assert_close(scalars["js_target_proposal"], exact.js(p, q))
    assert_close(scalars["ess"], 1.0 / np.sum(np.exp(2 * p)))
    assert_close(scalars["kl_policy_base"], exact.kl(log_pi, log_a))
    np.testing.assert_allclose(moments, exact.moments(log_pi, phi), rtol=1e-12)


def test_bad_input_is_one_named_error():
    log_q = np.zeros(3)
    with pytest.raises(ValueError, match=r"^length mismatch: target_log_scores has 3"):
        numerics.tuner_metrics("kl", np.zeros(3), np.zeros(2), log_q, 0.0)
    with pytest.raises(ValueError, match=r"^policy_log_probs\[1\] is NaN"):
        numerics.tuner_metrics("kl", np.zeros(3), [0.0, math.nan, 0.0], log_q, 0.0)
    with pytest.raises(ValueError, match=r"^log_z is inf"):
        numerics.tuner_metrics("kl", np.zeros(3), np.zeros(3), log_q, math.inf)
    with pytest.raises(ValueError, match=r"^base_log_probs\[2\] is \+inf"):
        numerics.tuner_metrics("kl", np.zeros(3), np.zeros(3), log_q, 0.0, None, [0, 0, math.inf])
    with pytest.raises(
        ValueError, match=r"^length mismatch: log_weights has 3 values but features"
    ):
        numerics.tuner_metrics("kl", np.zeros(3), np.zeros(3), log_q, 0.0, np.zeros((2, 1)))
    with pytest.raises(ValueError, match="unknown f-divergence"):
        numerics.tuner_metrics("hellinger", np.zeros(3), np.zeros(3), log_q, 0.0)
