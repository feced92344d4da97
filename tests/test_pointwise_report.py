"""The fit report of a target whose every constraint is pointwise: nothing to fit, yet figures.

The target is the base restricted to where the constraints hold, so its ``log Z`` is the log of
the base's mass there. Given samples, ``constrain`` estimates it (on samples of the base: the
log of the fraction kept, with the delta method's error) and counts the samples that carry it
(the ESS); without samples it draws none and says so. No report prints ``nan``.
"""

import math

import numpy as np
import pytest

from conftest import assert_within, unit_roundoff
from disco import exact
from disco.distributions import EnumerableLM
from disco.features import word_present
from disco.io import load_ebm, save_ebm

HAS_A = word_present("a")
EPS = unit_roundoff(np.float64)


def base_and_support():
    base = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=1)
    support, lp = base.enumerate_support()
    return base, support, lp.numpy()


def mass_with_a(support, lp, moment):
    """The base's exact probability of the pointwise constraint ``has a`` (moment 1) or not (0)."""
    kept = HAS_A.score(support).numpy() == moment
    return float(np.exp(exact.log_partition(np.where(kept, lp, -np.inf))))


@pytest.mark.parametrize("moment", [1.0, 0.0])
def test_on_the_whole_support_log_z_and_ess_are_exact(moment):
    base, support, lp = base_and_support()
    n = len(support)
    uniform = np.full(n, -np.log(n))
    ebm = base.constrain([HAS_A], [moment], samples=support, proposal_log_probs=uniform)
    report = ebm.fit_report
    want = math.log(mass_with_a(support, lp, moment))
    # The same value as the EBM's exact normaliser, up to the rounding of sums of n terms.
    assert want == pytest.approx(exact.log_partition(ebm.log_score(support).numpy()), abs=1e-12)
    assert_within(report.log_z, want, n * EPS * (1 + abs(want)), "log Z on the whole support")
    kept = np.exp(lp) * (HAS_A.score(support).numpy() == moment)  # importance weights, up to n
    kish = kept.sum() ** 2 / (kept**2).sum()
    assert_within(report.ess, kish, n * EPS * kish, "ESS on the whole support")
    assert report.n_samples == n and report.iterations == 0 and report.coefficients.size == 0
    assert report.pointwise == [HAS_A.name if moment == 1.0 else HAS_A.negation().name]
    text = str(report)
    assert "nan" not in text and f"log Z {report.log_z:.6g} ± " in text


def test_on_samples_of_the_base_log_z_is_the_log_of_the_fraction_kept():
    base, support, lp = base_and_support()
    n = 4000
    samples, log_q = base.sample("", n)
    report = base.constrain([HAS_A], [1.0], samples=samples, proposal_log_probs=log_q).fit_report
    k = int(HAS_A.score(samples).sum())
    fraction = k / n
    # Every kept sample weighs 1 and every other 0: the ESS is the number kept.
    assert_within(report.ess, k, n * EPS * k, "ESS")
    assert_within(report.log_z, math.log(fraction), n * EPS, "log Z")
    binomial = math.sqrt((1 - fraction) / (n * fraction))  # the delta method on k / n
    assert_within(report.log_z_stderr, binomial, n * EPS * binomial, "its standard error")
    # Against the truth: the estimate within 4 errors, the error near the exact one (the log
    # of the estimated error moves by 1 / (2 sqrt(n p (1 - p))) per standard error of k / n).
    p = mass_with_a(support, lp, 1.0)
    assert abs(report.log_z - math.log(p)) < 4 * report.log_z_stderr
    exact_error = math.sqrt((1 - p) / (n * p))
    assert abs(math.log(report.log_z_stderr / exact_error)) < 4 / (2 * math.sqrt(n * p * (1 - p)))
    assert f"ESS {k:.1f} of {n} samples" in str(report)


def test_no_sample_kept_is_log_z_minus_infinity():
    base, support, _lp = base_and_support()
    without = [s for s in support if not HAS_A.score([s]).item()]
    report = base.constrain(
        [HAS_A], [1.0], samples=without, proposal_log_probs=np.zeros(len(without))
    ).fit_report
    assert report.log_z == -math.inf and report.ess == 0.0
    assert f"log Z -inf: none of the {len(without)} samples" in str(report)


def test_without_samples_nothing_is_drawn_and_the_report_says_why():
    base, _support, _lp = base_and_support()
    state = base.random_state().clone()
    for report in (
        base.constrain([HAS_A], [1.0]).fit_report,
        base.constrain([HAS_A]).fit_report,  # no moments: the factors of a product
    ):
        assert report.n_samples == 0 and math.isnan(report.log_z) and math.isnan(report.ess)
        text = str(report)
        assert "not estimated" in text and "nan" not in text, text
    assert (base.random_state() == state).all()  # no draw


def test_the_estimate_survives_saving(tmp_path):
    base, support, _lp = base_and_support()
    n = len(support)
    ebm = base.constrain([HAS_A], [1.0], samples=support, proposal_log_probs=np.full(n, -np.log(n)))
    save_ebm(ebm, tmp_path / "ebm")
    again = load_ebm(tmp_path / "ebm").fit_report
    assert (again.log_z, again.log_z_stderr, again.ess) == (
        ebm.fit_report.log_z,
        ebm.fit_report.log_z_stderr,
        ebm.fit_report.ess,
    )
    assert str(again) == str(ebm.fit_report)
