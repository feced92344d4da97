"""constrain() against exact optimal coefficients on enumerable models."""

import numpy as np
import pytest
import torch

from disco import ConvergenceError, exact
from disco.distributions import EnumerableLM
from disco.scorers import BooleanScorer, Scorer

HAS_A = BooleanScorer(lambda s, c: "a" in s.text.split(), name="has_a")
HAS_B = BooleanScorer(lambda s, c: "b" in s.text.split(), name="has_b")
LENGTH = Scorer(lambda s, c: len(s.token_ids), name="length")


def base_and_support(seed=1, **kwargs):
    base = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=seed, **kwargs)
    support, lp = base.enumerate_support()
    return base, support, lp.numpy()


def fit_on_support(base, support, features, moments, **kwargs):
    uniform = np.full(len(support), -np.log(len(support)))
    return base.constrain(features, moments, samples=support, proposal_log_probs=uniform, **kwargs)


@pytest.mark.parametrize(
    ("features", "moments"),
    [
        ([HAS_A], [0.5]),
        ([HAS_A, HAS_B], [0.6, 0.3]),
        ([LENGTH], [2.1]),
        ([HAS_A, LENGTH], [0.2, 2.7]),
    ],
)
def test_whole_support_fit_is_exact(features, moments):
    base, support, lp = base_and_support()
    ebm = fit_on_support(base, support, features, moments)
    phi = np.stack([f.score(support).numpy() for f in features], axis=1)
    want = exact.optimal_coefficients(lp, phi, moments)
    report = ebm.fit_report
    assert np.allclose(report.coefficients, want, atol=1e-6)
    assert np.allclose(exact.moments(ebm.log_score(support).numpy(), phi), moments, atol=1e-8)
    assert report.max_error < 1e-8 and report.iterations < 30
    assert report.log_z == pytest.approx(
        exact.log_partition(ebm.log_score(support).numpy()), abs=1e-8
    )
    assert "lambda" in str(report)


def test_one_boolean_feature_closed_form():
    base, support, lp = base_and_support(seed=4)
    rate = exact.moments(lp, HAS_A.score(support).numpy())[0]
    lam = fit_on_support(base, support, [HAS_A], [0.35], tolerance=1e-12).fit_report.coefficients[0]
    assert lam == pytest.approx(np.log(0.35 / 0.65) - np.log(rate / (1 - rate)), abs=1e-10)


def test_sampled_fit_meets_the_moments_within_sampling_error():
    torch.manual_seed(0)
    base, support, _lp = base_and_support(seed=2)
    features, moments = [HAS_A, LENGTH], [0.7, 2.4]
    ebm = base.constrain(features, moments, n_samples=2**14, sampling_size=4096)
    phi = np.stack([f.score(support).numpy() for f in features], axis=1)
    fitted = ebm.log_score(support).numpy()
    got = exact.moments(fitted, phi)
    p = np.exp(exact.normalize(fitted))
    sd = np.sqrt(p @ (phi - got) ** 2)
    stderr = sd / np.sqrt(ebm.fit_report.ess)
    assert np.all(np.abs(got - moments) < 4 * stderr), (got, stderr)
    assert ebm.fit_report.n_samples == 2**14


def test_conditional_fit_normalises_within_each_context():
    contexts = ("rare", "common")
    base = EnumerableLM(tokens=("a", "b", "c"), max_length=3, contexts=contexts, seed=3)
    with torch.no_grad():
        base.context_bias[:, 0] = torch.tensor([-4.0, 4.0], dtype=torch.float64)
    supports = {c: base.enumerate_support(c) for c in contexts}
    rates = [exact.moments(lp.numpy(), HAS_A.score(s).numpy())[0] for s, lp in supports.values()]
    assert rates[1] - rates[0] > 0.5
    torch.manual_seed(1)
    ebm = base.constrain([HAS_A], [0.5], contexts=contexts, n_samples=2**14, sampling_size=4096)
    lam = ebm.fit_report.coefficients[0]

    def average(lam):
        return np.mean(
            [
                exact.moments(lp.numpy() + lam * HAS_A.score(s).numpy(), HAS_A.score(s).numpy())[0]
                for s, lp in supports.values()
            ]
        )

    assert average(lam) == pytest.approx(0.5, abs=0.02)
    # Pooling the two contexts' samples in one normalisation is biased: it misses the average.
    from disco import numerics

    phis, lws = [], []
    for c in contexts:
        xs, lq = base.sample(c, 8192)
        phis.append(HAS_A.score(xs).numpy())
        lws.append(base.log_score(xs, c).numpy() - lq.numpy())
    pooled = numerics.fit_coefficients(
        np.concatenate(phis), [0.5], log_weights=np.concatenate(lws)
    ).coefficients[0]
    assert abs(average(pooled) - 0.5) > 0.05 > 5 * abs(average(lam) - 0.5)


def test_pointwise_constraints_are_exact():
    base, support, lp = base_and_support()
    ebm = base.constrain([HAS_A], [1.0])
    assert ebm.fit_report.pointwise == ["has_a"] and ebm.fit_report.coefficients.size == 0
    # Z of the pointwise EBM is the base probability that the constraint holds.
    assert exact.log_partition(ebm.log_score(support).numpy()) == pytest.approx(
        np.log(exact.moments(lp, HAS_A.score(support).numpy())[0]), abs=1e-12
    )
    never = base.constrain([HAS_A], [0.0])
    scores = never.log_score(support).numpy()
    assert np.all(scores[HAS_A.score(support).numpy() == 1.0] == -np.inf)


def test_pointwise_and_distributional_together():
    base, support, _lp = base_and_support()
    ebm = fit_on_support(base, support, [HAS_A, HAS_B], [1.0, 0.4])
    scores = ebm.log_score(support).numpy()
    assert np.all(scores[HAS_A.score(support).numpy() == 0] == -np.inf)
    assert exact.moments(scores, HAS_B.score(support).numpy())[0] == pytest.approx(0.4, abs=1e-8)
    assert exact.moments(scores, HAS_A.score(support).numpy())[0] == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize(
    ("features", "moments", "message"),
    [
        ([HAS_A], [1.5], "must lie in \\[0, 1\\]"),
        ([HAS_A], [float("nan")], "finite"),
        ([HAS_A, HAS_B], [0.5], "2 features but 1 moments"),
        ([LENGTH], [7.0], "'length'.*outside the range"),
        ([Scorer(lambda s, c: 3.0, name="constant")], [3.0], "constant"),
    ],
)
def test_infeasible_or_degenerate_requests(features, moments, message):
    base, support, _ = base_and_support()
    with pytest.raises(ValueError, match=message):
        fit_on_support(base, support, features, moments)


def test_a_feature_no_sample_has():
    base, support, _ = base_and_support()
    never = BooleanScorer(lambda s, c: False, name="never")
    with pytest.raises(ValueError, match=r"'never'.*constant"):
        fit_on_support(base, support, [never], [0.7])


def test_jointly_unreachable_moments_are_refused():
    base, support, _ = base_and_support()
    with pytest.raises(ValueError, match="convex hull"):
        fit_on_support(base, support, [HAS_A, LENGTH], [0.9, 1.5])


def test_non_convergence_reports_its_last_state():
    base, support, _ = base_and_support()
    with pytest.raises(ConvergenceError) as info:
        fit_on_support(base, support, [HAS_A, LENGTH], [0.2, 2.7], max_iterations=1)
    assert np.all(np.isfinite(info.value.last)) and info.value.iterations == 1
