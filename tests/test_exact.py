import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from disco import exact
from disco.distributions import EnumerableLM


def logit(p):
    return np.log(p) - np.log1p(-p)


def test_one_boolean_feature_closed_form():
    model = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=5)
    support, lp = model.enumerate_support()
    feature = np.array([float("a" in s.text.split()) for s in support])
    base_rate = float(np.exp(lp.numpy()) @ feature)
    for target in (0.1, 0.5, 0.9):
        lam = exact.optimal_coefficients(lp, feature, [target])
        assert lam[0] == pytest.approx(logit(target) - logit(base_rate), abs=1e-10)
        assert exact.moments(lp.numpy() + lam[0] * feature, feature)[0] == pytest.approx(
            target, abs=1e-12
        )


def test_two_features_meet_their_moments():
    model = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=6)
    support, lp = model.enumerate_support()
    phi = np.array([[float("a" in s.text.split()), len(s.token_ids)] for s in support])
    target = np.array([0.4, 2.2])
    lam = exact.optimal_coefficients(lp, phi, target)
    assert np.allclose(exact.moments(lp.numpy() + phi @ lam, phi), target, atol=1e-12)


def test_divergences_by_hand():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    assert exact.kl(np.log(p), np.log(q)) == pytest.approx(np.sum(p * np.log(p / q)), rel=1e-14)
    assert exact.tv(np.log(p) + 3.0, np.log(q)) == pytest.approx(0.3, rel=1e-14)
    m = (p + q) / 2
    js = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    assert exact.js(np.log(p), np.log(q)) == pytest.approx(js, rel=1e-14)
    # Zero-probability conventions.
    assert exact.kl([0.0, -np.inf], [0.0, 0.0]) == pytest.approx(np.log(2))
    assert exact.kl([0.0, 0.0], [0.0, -np.inf]) == np.inf
    assert exact.js([0.0, -np.inf], [-np.inf, 0.0]) == pytest.approx(np.log(2))


@given(
    st.lists(st.floats(-20, 20), min_size=2, max_size=12),
    st.floats(-5, 5),
)
def test_qrs_limits(log_p_list, log_beta_shift):
    lp = np.array(log_p_list)
    lq = np.full(lp.size, -np.log(lp.size))
    ratios = lp - lq
    big = float(np.exp(ratios.max() + abs(log_beta_shift)))
    assert exact.qrs_divergence(lp, lq, big, "kl") == pytest.approx(0.0, abs=1e-12)
    assert exact.qrs_divergence(lp, lq, big, "tv") == pytest.approx(0.0, abs=1e-12)
    small = float(np.exp(ratios.min() - abs(log_beta_shift)))
    assert exact.qrs_acceptance_rate(lp, lq, small) == pytest.approx(1.0, rel=1e-12)
    assert np.allclose(exact.qrs_log_probs(lp, lq, small), lq, atol=1e-10)
    # Acceptance at large beta is Z / beta.
    assert exact.qrs_acceptance_rate(lp, lq, big) == pytest.approx(
        np.exp(exact.log_partition(lp)) / big, rel=1e-10
    )


def test_bad_input():
    with pytest.raises(ValueError, match="beta"):
        exact.qrs_acceptance_rate([0.0], [0.0], 0.0)
    with pytest.raises(ValueError, match="NaN"):
        exact.normalize([np.nan, 0.0])
    with pytest.raises(ValueError, match="cannot be normalised"):
        exact.normalize([-np.inf, -np.inf])
    with pytest.raises(ValueError, match="points"):
        exact.kl([0.0, 0.0], [0.0])
