"""The max-ent coefficient solver `disco.numerics.fit_coefficients` (docs/design.md §3).

References: closed forms and the exact dual over enumerated supports, and scipy's optimiser on
the same sample dual (float64 numpy, below) for random problems.
"""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import optimize
from scipy.special import expit, logit
from scipy.special import logsumexp as sp_logsumexp

from disco import ConvergenceError, exact
from disco.numerics import FitResult, fit_coefficients

NEG_INF = float("-inf")


# --- float64 references -------------------------------------------------------------------


def sample_dual(lam, phi, mu, lw, groups=None):
    """(L, gradient, Hessian) of `mean_c log mean_{i in c} exp(lw + lam.phi) - lam.mu`."""
    groups = np.zeros(len(lw), dtype=int) if groups is None else np.asarray(groups)
    s = lw + phi @ lam
    value, grad, hess = 0.0, np.zeros_like(mu), np.zeros((mu.size, mu.size))
    contexts = np.unique(groups)
    for c in contexts:
        m = groups == c
        lse = sp_logsumexp(s[m])
        w = np.exp(s[m] - lse)
        mean = w @ phi[m]
        centred = phi[m] - mean
        value += lse - np.log(m.sum())
        grad += mean
        hess += (centred * w[:, None]).T @ centred
    n = len(contexts)
    return value / n - lam @ mu, grad / n - mu, hess / n


def scipy_fit(phi, mu, lw, groups=None):
    result = optimize.minimize(
        lambda lam: sample_dual(lam, phi, mu, lw, groups)[:2],
        np.zeros(mu.size),
        jac=True,
        hess=lambda lam: sample_dual(lam, phi, mu, lw, groups)[2],
        method="trust-exact",
        options={"gtol": 1e-12},
    )
    return result.x


def exact_dual_fit(log_a, phi, mu):
    """scipy on the exact dual `log sum_x a(x) exp(lam.phi(x)) - lam.mu` over a support."""

    def dual(lam):
        s = log_a + phi @ lam
        w = np.exp(s - sp_logsumexp(s))
        return sp_logsumexp(s) - lam @ mu, w @ phi - mu

    def hess(lam):
        s = log_a + phi @ lam
        w = np.exp(s - sp_logsumexp(s))
        centred = phi - w @ phi
        return (centred * w[:, None]).T @ centred

    result = optimize.minimize(
        dual,
        np.zeros(mu.size),
        jac=True,
        hess=hess,
        method="trust-exact",
        options={"gtol": 1e-13},
    )
    return result.x


def kish(lw):
    w = np.exp(lw - sp_logsumexp(lw))
    return 1.0 / np.sum(w**2)


# --- exact answers on enumerated supports --------------------------------------------------


@pytest.mark.parametrize("target", [0.001, 0.2, 0.35, 0.6, 0.97])
def test_one_boolean_feature_closed_form(target):
    # Six outcomes with a base a(x), enumerated once each: a uniform proposal, lw = log a + log 6.
    a = np.array([0.05, 0.25, 0.1, 0.3, 0.2, 0.1])
    phi = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    rate = float(a @ phi)  # 0.35
    lw = np.log(a) + np.log(6)
    fit = fit_coefficients(phi, target, lw, tolerance=1e-13)
    want = logit(target) - logit(rate)
    assert isinstance(fit, FitResult)
    assert fit.coefficients.shape == (1,)
    assert abs(fit.coefficients[0] - want) < 1e-9
    assert abs(fit.moments[0] - target) < 1e-13 and fit.max_error < 1e-13
    log_p = np.log(a) + want * phi
    assert abs(fit.log_z - sp_logsumexp(log_p)) < 1e-12
    assert abs(fit.ess - kish(log_p)) < 1e-9 * fit.ess
    assert fit.iterations <= 20
    # With the default tolerance the moment, not the coefficient, is within 1e-8.
    loose = fit_coefficients(phi, target, lw)
    assert loose.max_error < 1e-8 and abs(loose.moments[0] - target) < 1e-8


def test_two_features_match_the_exact_dual():
    # All 27 strings of length 3 over {0, 1, 2} with a skewed base; features: share of 0s and
    # "ends with 1".
    support = list(itertools.product(range(3), repeat=3))
    rng = np.random.default_rng(7)
    log_a = np.log(rng.dirichlet(np.ones(len(support)) * 2))
    phi = np.array([[x.count(0) / 3, float(x[-1] == 1)] for x in support])
    mu = np.array([0.5, 0.2])
    lw = log_a + np.log(len(support))
    fit = fit_coefficients(phi, mu, lw, tolerance=1e-12)
    want = exact_dual_fit(log_a, phi, mu)
    np.testing.assert_allclose(fit.coefficients, want, rtol=0, atol=1e-7)
    np.testing.assert_allclose(
        fit.coefficients, exact.optimal_coefficients(log_a, phi, mu), atol=1e-9
    )
    np.testing.assert_allclose(fit.moments, mu, atol=1e-12)
    assert abs(fit.log_z - sp_logsumexp(log_a + phi @ fit.coefficients)) < 1e-12
    assert fit.iterations <= 20


def test_4096_by_3_converges_in_few_newton_steps():
    rng = np.random.default_rng(0)
    n = 4096
    phi = np.column_stack([rng.random(n) < 0.3, rng.normal(size=n), rng.exponential(size=n)])
    lw = rng.normal(scale=0.5, size=n)
    mu = np.array([0.5, 0.2, 1.3])
    fit = fit_coefficients(phi, mu, lw)
    assert fit.max_error < 1e-8 and fit.iterations <= 10
    value, grad, _ = sample_dual(fit.coefficients, phi, mu, lw)
    assert np.max(np.abs(grad)) < 1e-8
    np.testing.assert_allclose(fit.coefficients, scipy_fit(phi, mu, lw), atol=1e-7)
    assert abs(fit.log_z - (value + fit.coefficients @ mu)) < 1e-12
    assert abs(fit.ess - kish(lw + phi @ fit.coefficients)) < 1e-9 * fit.ess


def test_long_inputs_take_the_parallel_path():
    # Above the kernels' parallel threshold (2^16) the sums run in fixed-size tasks.
    rng = np.random.default_rng(1)
    n = 70_000
    phi = np.column_stack([rng.random(n) < 0.5, rng.normal(size=n)])
    lw = rng.normal(size=n)
    mu = np.array([0.3, 0.4])
    fit = fit_coefficients(phi, mu, lw)
    _, grad, _ = sample_dual(fit.coefficients, phi, mu, lw)
    assert np.max(np.abs(grad)) < 1e-8


# --- random problems against scipy ---------------------------------------------------------


def feature_widths(phi, lw=None, groups=None):
    """The unit of the tolerance: each feature's ``mean_c max - mean_c min`` on kept samples."""
    phi = np.asarray(phi, dtype=float).reshape(len(phi), -1)
    kept = np.ones(len(phi), bool) if lw is None else np.isfinite(lw)
    g = np.zeros(len(phi), int) if groups is None else np.asarray(groups)
    contexts = range(int(g.max()) + 1)
    hi = np.mean([phi[kept & (g == c)].max(0) for c in contexts], axis=0)
    lo = np.mean([phi[kept & (g == c)].min(0) for c in contexts], axis=0)
    return hi - lo


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(6, 80),
    k=st.integers(1, 4),
    contexts=st.integers(1, 3),
    zero_share=st.sampled_from([0.0, 0.2]),
)
def test_random_problems_match_scipy(seed, n, k, contexts, zero_share):
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(n, k)) * rng.uniform(0.2, 3.0, size=k)
    phi[:, 0] = np.round(phi[:, 0])  # a discrete feature with ties
    lw = rng.normal(scale=1.0, size=n)
    lw[rng.random(n) < zero_share] = NEG_INF
    groups = np.sort(rng.integers(0, contexts, size=n)) if contexts > 1 else None
    g = np.zeros(n, dtype=int) if groups is None else groups
    # Every context needs samples of nonzero weight, and the features a nonsingular covariance.
    kept = np.isfinite(lw)
    assume(all(np.sum(kept & (g == c)) >= 2 for c in range(contexts)))
    assume(len(np.unique(g)) == contexts)
    centred = np.concatenate(
        [phi[kept & (g == c)] - phi[kept & (g == c)].mean(0) for c in range(contexts)]
    )
    sv = np.linalg.svd(centred / np.maximum(centred.std(0), 1e-300), compute_uv=False)
    assume(np.all(centred.std(0) > 1e-6) and sv[-1] > 0.1 * sv[0])
    # Targets reached exactly at a known lambda, so the sample dual's minimiser is that lambda.
    lam0 = rng.normal(scale=0.5, size=k) / phi.std(0)
    mu = sample_dual(lam0, phi, np.zeros(k), lw, groups)[1]
    hess = sample_dual(lam0, phi, mu, lw, groups)[2]
    smallest = np.linalg.eigvalsh(hess)[0]
    assume(smallest > 1e-4 * np.max(np.diag(hess)))

    fit = fit_coefficients(phi, mu, lw, groups=groups, tolerance=1e-11)
    assert np.all(np.isfinite(fit.coefficients)) and fit.iterations <= 30
    value, grad, _ = sample_dual(fit.coefficients, phi, mu, lw, groups)
    # The tolerance is relative to each feature's range on the samples.
    assert np.max(np.abs(grad) / feature_widths(phi, lw, groups)) < 1e-10
    np.testing.assert_allclose(fit.moments, mu + grad, atol=1e-12)
    # Error in lambda <= error in the moments / smallest curvature.
    np.testing.assert_allclose(fit.coefficients, lam0, rtol=0, atol=1e-9 / smallest + 1e-12)
    reference = scipy_fit(phi, mu, lw, groups)
    ref_value = sample_dual(reference, phi, mu, lw, groups)[0]
    assert value <= ref_value + 1e-12 * (1 + abs(ref_value))
    np.testing.assert_allclose(fit.coefficients, reference, rtol=0, atol=1e-6 / smallest)
    assert abs(fit.log_z - (value + fit.coefficients @ mu)) < 1e-10 * (1 + abs(fit.log_z))


# --- conditional targets (groups) ----------------------------------------------------------


def test_groups_meet_the_average_moment_where_pooling_does_not():
    # Context 0: base rate 0.05 (2 in 40 samples); context 1: base rate 0.9 (9 in 10 samples).
    phi = np.r_[np.ones(2), np.zeros(38), np.ones(9), np.zeros(1)]
    groups = np.r_[np.zeros(40, dtype=int), np.ones(10, dtype=int)]
    lw = np.zeros(50)
    target = 0.5
    fit = fit_coefficients(phi, target, lw, groups=groups, tolerance=1e-13)
    lam = fit.coefficients[0]
    average = 0.5 * (expit(logit(0.05) + lam) + expit(logit(0.9) + lam))
    assert abs(average - target) < 1e-12
    root = optimize.brentq(
        lambda v: 0.5 * (expit(logit(0.05) + v) + expit(logit(0.9) + v)) - target,
        -20,
        20,
        xtol=1e-14,
    )
    assert abs(lam - root) < 1e-9
    np.testing.assert_allclose(
        fit.coefficients, scipy_fit(phi[:, None], np.array([target]), lw, groups), atol=1e-7
    )
    # Pooling the 50 samples (base rate 11/50) fits another lambda, which misses the average.
    pooled = fit_coefficients(phi, target, lw, tolerance=1e-13).coefficients[0]
    assert abs(pooled - (logit(0.5) - logit(11 / 50))) < 1e-9
    assert abs(pooled - lam) > 0.3
    pooled_average = 0.5 * (expit(logit(0.05) + pooled) + expit(logit(0.9) + pooled))
    assert abs(pooled_average - target) > 0.05
    # log Z is the mean over contexts of each context's log Z; ESS the mean of their ESS.
    s = lw + phi * lam
    assert (
        abs(
            fit.log_z
            - 0.5 * (sp_logsumexp(s[:40]) - np.log(40) + sp_logsumexp(s[40:]) - np.log(10))
        )
        < 1e-12
    )
    assert abs(fit.ess - 0.5 * (kish(s[:40]) + kish(s[40:]))) < 1e-9


def test_groups_in_any_order_and_types():
    rng = np.random.default_rng(3)
    phi = rng.normal(size=(40, 2))
    groups = np.repeat([0, 1, 2, 3], 10)
    mu = np.array([0.1, -0.2])
    want = fit_coefficients(phi, mu, groups=groups, tolerance=1e-12).coefficients
    order = rng.permutation(40)
    for g in (
        groups[order],
        groups[order].tolist(),
        torch.as_tensor(groups[order]),
        groups[order].astype(np.uint8),
    ):
        got = fit_coefficients(phi[order], mu, groups=g, tolerance=1e-12).coefficients
        np.testing.assert_allclose(got, want, atol=1e-10)


# --- zero weights ----------------------------------------------------------------------------


def test_minus_inf_log_weights_weigh_zero():
    rng = np.random.default_rng(4)
    phi = rng.normal(size=(30, 2))
    lw = rng.normal(size=30)
    mu = np.array([0.3, -0.1])
    # Ten extra samples with zero weight and features far outside the others' range.
    phi_all = np.vstack([phi, rng.normal(size=(10, 2)) * 1e6])
    lw_all = np.r_[lw, np.full(10, NEG_INF)]
    kept = fit_coefficients(phi, mu, lw, tolerance=1e-12)
    full = fit_coefficients(phi_all, mu, lw_all, tolerance=1e-12)
    np.testing.assert_allclose(full.coefficients, kept.coefficients, atol=1e-12)
    np.testing.assert_allclose(full.moments, kept.moments, atol=1e-12)
    assert abs(full.ess - kept.ess) < 1e-9
    # They still count in Z = mean over all 40 samples.
    assert abs(full.log_z - (kept.log_z + np.log(30 / 40))) < 1e-12
    # A target only zero-weight samples reach is out of range.
    with pytest.raises(ValueError, match=r"target_moments\[0\] = 100(\.0)? is outside the range"):
        fit_coefficients(phi_all, [100.0, 0.0], lw_all)


# --- inputs ----------------------------------------------------------------------------------


def test_accepts_sequences_tensors_and_warm_starts():
    phi = [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.5, 0.2]]
    mu = [0.45, 0.4]
    a = fit_coefficients(phi, mu)
    b = fit_coefficients(
        torch.tensor(phi, dtype=torch.float32), torch.tensor(mu, dtype=torch.float64)
    )
    np.testing.assert_allclose(a.coefficients, b.coefficients, atol=1e-8)
    warm = fit_coefficients(phi, mu, initial=a.coefficients)
    assert warm.iterations == 0 and warm.max_error == a.max_error
    assert isinstance(a.iterations, int) and isinstance(a.ess, float) and isinstance(a.log_z, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.iterations = 3  # type: ignore[misc]
    # One feature: a 1-D feature vector and a scalar target.
    one = fit_coefficients([1.0, 0.0, 0.0, 0.0], 0.5, tolerance=1e-12)
    assert abs(one.coefficients[0] - np.log(3)) < 1e-10


def test_never_more_iterations_than_allowed():
    phi = np.array([1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ConvergenceError) as info:
        fit_coefficients(phi, 0.9, max_iterations=1)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.iterations == 1 and err.max_error > 1e-8
    assert len(err.last) == 1 and np.isfinite(err.last[0]) and err.last[0] > 0
    assert "did not converge within 1 iterations" in str(err)
    # Resuming from the last iterate finishes the job.
    fit = fit_coefficients(phi, 0.9, initial=err.last)
    assert fit.max_error < 1e-8
    with pytest.raises(ConvergenceError):
        fit_coefficients(phi, 0.9, max_iterations=0)
    assert fit_coefficients(phi, 0.25, max_iterations=0).iterations == 0


# --- failure modes ---------------------------------------------------------------------------

GOOD_PHI = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.5, 0.2]])
GOOD_MU = np.array([0.45, 0.4])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"features": np.array([[1.0, np.nan], [0.0, 1.0], [0.5, 0.5]])},
            r"features\[0, 1\] is NaN",
        ),
        (
            {"features": np.array([[1.0, 0.0], [np.inf, 1.0], [0.5, 0.5]])},
            r"features\[1, 0\] is \+inf",
        ),
        (
            {"features": np.array([[1.0, 0.0], [-np.inf, 1.0], [0.5, 0.5]])},
            r"features\[1, 0\] is -inf",
        ),
        ({"log_weights": [0.0, np.nan, 0.0, 0.0, 0.0]}, r"log_weights\[1\] is NaN"),
        ({"log_weights": [0.0, 0.0, np.inf, 0.0, 0.0]}, r"log_weights\[2\] is \+inf"),
        ({"log_weights": [0.0, 0.0]}, "length mismatch: features has 5 rows but log_weights has 2"),
        ({"log_weights": [NEG_INF] * 5}, "every entry of log_weights is -inf"),
        ({"target_moments": [0.5]}, "features has 2 columns but target_moments has 1"),
        ({"target_moments": [0.5, np.nan]}, r"target_moments\[1\] is NaN"),
        ({"target_moments": [[0.5, 0.5]]}, "target_moments must be 1-D"),
        ({"features": np.zeros((0, 2))}, "features is empty"),
        ({"features": np.zeros((2, 2, 2))}, "features must be 2-D"),
        ({"features": [["a", "b"]]}, "features has dtype"),
        ({"groups": [0, 0, 1, 1]}, "length mismatch: features has 5 rows but groups has 4"),
        ({"groups": [0, 0, -1, 1, 1]}, r"groups\[2\] is -1"),
        ({"groups": [0, 0, 1, 1, 7]}, r"groups\[4\] is 7 but there are only 5 samples"),
        ({"groups": [0, 0, 2, 2, 2]}, "context 1 has no samples"),
        (
            {"groups": [0, 0, 1, 1, 1], "log_weights": [0, 0, NEG_INF, NEG_INF, NEG_INF]},
            "context 1 has no sample with nonzero weight",
        ),
        (
            {"groups": [0.0, 0.0, 1.0, 1.0, 1.0]},
            "groups has dtype float64: integer context indices",
        ),
        ({"groups": [[0, 0, 1, 1, 1]]}, "groups must be 1-D"),
        ({"initial": [0.0]}, "features has 2 columns but initial has 1"),
        ({"initial": [0.0, np.inf]}, r"initial\[1\] is \+inf"),
        ({"tolerance": 0.0}, "tolerance is 0: it must be positive"),
        ({"tolerance": np.nan}, "tolerance is NaN"),
        ({"max_iterations": -1}, "max_iterations is -1"),
        ({"max_iterations": 2.5}, "max_iterations is 2.5"),
    ],
)
def test_refuses_bad_input(kwargs, match):
    args = {"features": GOOD_PHI, "target_moments": GOOD_MU, **kwargs}
    with pytest.raises(ValueError, match=match):
        fit_coefficients(**args)


def test_target_outside_or_on_the_edge_of_a_feature_range():
    phi = np.array([[0.0, 1.0], [0.3, 2.0], [0.8, 0.5], [0.2, 1.5]])
    with pytest.raises(
        ValueError,
        match=r"target_moments\[1\] = 2.5 is outside the range \[0\.5, 2(\.0)?\] that feature 1",
    ):
        fit_coefficients(phi, [0.3, 2.5])
    with pytest.raises(
        ValueError, match=r"target_moments\[0\] = -0.1 is outside the range \[0(\.0)?, 0\.8\]"
    ):
        fit_coefficients(phi, [-0.1, 1.0])
    with pytest.raises(
        ValueError,
        match=r"target_moments\[0\] = 0.8 is on the boundary of the range \[0(\.0)?, 0\.8\].*infinite coefficient",
    ):
        fit_coefficients(phi, [0.8, 1.0])
    # With contexts, the reachable range of the average is the mean of each context's range.
    groups = [0, 0, 1, 1]
    # feature 0: context 0 spans [0, 0.3], context 1 spans [0.2, 0.8]: the average spans [0.1, 0.55].
    with pytest.raises(
        ValueError,
        match=r"target_moments\[0\] = 0.6 is outside the range \[0.1, 0.55\] that the average over the 2 contexts of feature 0",
    ):
        fit_coefficients(phi, [0.6, 1.0], groups=groups)
    fit = fit_coefficients(phi, [0.5, 1.2], groups=groups)
    assert fit.max_error < 1e-8


def test_constant_and_collinear_features():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 2))
    with pytest.raises(ValueError, match=r"feature 1 is constant .*\(always 3(\.0)?\)"):
        fit_coefficients(np.column_stack([x[:, 0], np.full(20, 3.0)]), [0.1, 3.0])
    # Constant where it has weight, varying only on zero-weight samples.
    lw = np.where(np.arange(20) < 15, 0.0, NEG_INF)
    varying_where_zero = np.where(np.arange(20) < 15, 1.0, rng.normal(size=20))
    with pytest.raises(ValueError, match="feature 1 is constant"):
        fit_coefficients(np.column_stack([x[:, 0], varying_where_zero]), [0.1, 1.0], lw)
    with pytest.raises(
        ValueError,
        match=r"features 0, 1 and 2 are collinear.*feature 2 is an affine function of features 0 and 1",
    ):
        fit_coefficients(np.column_stack([x, 2 * x[:, 0] - x[:, 1] + 1]), [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="features 0 and 2 are collinear"):
        fit_coefficients(np.column_stack([x, -3 * x[:, 0]]), [0.0, 0.0, 0.0])
    # Constant within each context but not overall: no coefficient is identified either.
    groups = np.repeat([0, 1], 10)
    per_context = np.repeat([0.0, 1.0], 10)
    with pytest.raises(ValueError, match="feature 1 is constant within each context"):
        fit_coefficients(np.column_stack([x[:, 0], per_context]), [0.0, 0.5], groups=groups)


def test_targets_outside_the_convex_hull_jointly():
    # Samples (1,0), (0,1), (0,0): each feature spans [0, 1] but x1 + x2 <= 1 on every sample.
    phi = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    for mu in ([0.6, 0.6], [0.9, 0.3], [0.5, 0.5 + 1e-7]):
        with pytest.raises(
            ValueError, match=r"cannot be met together.*outside the convex hull"
        ) as info:
            fit_coefficients(phi, mu)
        assert "v ≈ [1.0" in str(info.value)
    # On the hull's boundary (the face x1 + x2 = 1): only infinite coefficients reach it.
    with pytest.raises(ValueError, match="lie on the boundary of the convex hull"):
        fit_coefficients(phi, [0.3, 0.7])
    # Just inside is fine, with large but finite coefficients.
    fit = fit_coefficients(phi, [0.5, 0.49999])
    assert np.all(np.isfinite(fit.coefficients)) and fit.max_error < 1e-8
    # With contexts the attainable set is the average of the contexts' hulls: here
    # |x1 - x2| <= 1/2 although each coordinate spans a wider range.
    phi = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    groups = [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"cannot be met together.*averages over the contexts"):
        fit_coefficients(phi, [0.9, 0.2], groups=groups)
    assert fit_coefficients(phi, [0.7, 0.25], groups=groups).max_error < 1e-8


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 30), k=st.integers(2, 3))
def test_never_returns_a_non_finite_coefficient(seed, n, k):
    # Random targets, mostly infeasible jointly: either a finite fit that meets them or an error.
    rng = np.random.default_rng(seed)
    phi = np.round(rng.normal(size=(n, k)), 1)
    mu = rng.uniform(phi.min(0), phi.max(0))
    try:
        fit = fit_coefficients(phi, mu)
    except ValueError as err:
        message = str(err)
        assert any(
            s in message
            for s in ("cannot be met together", "on the boundary", "collinear", "constant")
        ), message
        return
    except ConvergenceError as err:
        assert np.all(np.isfinite(err.last))
        return
    widths = feature_widths(phi)
    assert np.all(np.isfinite(fit.coefficients)) and fit.max_error < 1e-8 * widths.max()
    _, grad, _ = sample_dual(fit.coefficients, phi, mu, np.zeros(n))
    assert np.max(np.abs(grad) / widths) < 1e-8
