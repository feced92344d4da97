"""β, the QRS threshold: one check and one conversion for every layer."""

import doctest
import math
import sys

import numpy as np
import pytest

import disco._beta
from disco._beta import MAX_LOG_FLOAT, beta_from_log, check_beta, check_betas, checked_log_beta
from disco.distributions import EnumerableLM
from disco.samplers import QRSEstimator, QuasiRejectionSampler


def test_beta_from_log_is_exp_up_to_the_float_range():
    assert abs(MAX_LOG_FLOAT - 709.782712893384) < 1e-12
    for log_beta in (-800.0, -3.0, 0.0, 1.5, 700.0, MAX_LOG_FLOAT - 1e-9):
        assert beta_from_log(log_beta) == math.exp(log_beta)
    assert math.isfinite(beta_from_log(np.nextafter(MAX_LOG_FLOAT, 0.0)))
    assert (
        beta_from_log(MAX_LOG_FLOAT) == math.inf
    )  # exp would round to the largest float or overflow
    assert beta_from_log(1e6) == math.inf
    assert beta_from_log(-1e6) == 0.0
    assert beta_from_log(math.log(sys.float_info.max / 2)) == pytest.approx(sys.float_info.max / 2)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, -math.inf, math.nan])
def test_a_beta_must_be_positive_and_finite_everywhere(bad):
    message = r"beta is .*: it must be positive and finite"
    with pytest.raises(ValueError, match=message):
        check_beta(bad)
    with pytest.raises(ValueError, match=message):
        checked_log_beta(bad, None)
    lm = EnumerableLM()
    with pytest.raises(ValueError, match=message):
        QuasiRejectionSampler(lm, lm, beta=bad)
    estimator = QRSEstimator.from_log_scores([0.0, -1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match=message):
        estimator.acceptance_rate_at_beta(bad)
    with pytest.raises(ValueError, match=r"betas\[1\] is .*: beta must be positive and finite"):
        check_betas(np.array([1.0, bad]))


def test_exactly_one_of_beta_and_log_beta():
    assert checked_log_beta(2.0, None) == math.log(2.0)
    assert checked_log_beta(None, -3.0) == -3.0
    for beta, log_beta in ((None, None), (1.0, 0.0)):
        with pytest.raises(ValueError, match="give exactly one of beta and log_beta"):
            checked_log_beta(beta, log_beta)
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match=r"log_beta is .*: it must be finite"):
            checked_log_beta(None, bad)
    check_betas(np.array([1e-300, 1.0, 1e300]))  # no error


def test_samplers_report_beta_past_float_range_as_inf():
    lm = EnumerableLM()
    assert QuasiRejectionSampler(lm, lm, beta=None, log_beta=800.0).beta == math.inf
    assert QuasiRejectionSampler(lm, lm, beta=None, log_beta=2.0).beta == math.exp(2.0)
    # ratios of e^800: the β for any acceptance rate is past float range, log β is not
    estimator = QRSEstimator.from_log_scores([800.0, 799.0], [0.0, 0.0])
    assert estimator.beta_for_acceptance_rate(0.9) == math.inf
    assert 798.0 < estimator.log_beta_for_acceptance_rate(0.9) < 801.0


def test_the_examples_in_the_docstrings_hold():
    result = doctest.testmod(disco._beta)
    assert result.attempted > 0 and result.failed == 0
