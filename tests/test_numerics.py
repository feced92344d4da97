"""Property tests of the Rust log-space kernels against float64 and mpmath references."""

import threading

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference
from disco import exact, numerics
from disco.distributions import EnumerableLM

NEG_INF = float("-inf")

log_scores = st.one_of(st.floats(-700, 700), st.just(NEG_INF))
finite_scores = st.floats(-50, 50)


def vectors(elements=log_scores, min_size=1, max_size=200):
    return hnp.arrays(np.float64, st.integers(min_size, max_size), elements=elements)


def close(got, want, rel=1e-12, scale=1.0):
    """|got - want| <= rel * max(|want|, scale): relative error, with `scale` for results near 0."""
    if want in (np.inf, -np.inf):
        return got == want
    return abs(got - want) <= rel * max(abs(want), scale)


# --- logsumexp / logmeanexp -------------------------------------------------------------


@given(vectors())
def test_logsumexp_matches_reference(x):
    finite = x[np.isfinite(x)]
    scale = float(np.max(np.abs(finite))) if finite.size else 1.0
    assert close(numerics.logsumexp(x), reference.logsumexp(x), scale=max(scale, 1.0))
    assert close(numerics.logmeanexp(x), reference.logmeanexp(x), scale=max(scale, 1.0))


def test_scipy_edge_semantics():
    assert numerics.logsumexp([]) == NEG_INF
    assert numerics.logmeanexp([]) == NEG_INF
    assert numerics.logsumexp([NEG_INF, NEG_INF]) == NEG_INF
    assert numerics.logsumexp([NEG_INF, 3.0]) == 3.0
    assert numerics.logsumexp([1e300, 1e300]) == 1e300
    assert numerics.logsumexp([-1e300, -1e300]) == -1e300


def _mp_logsumexp(values, counts):
    mpmath.mp.dps = 50
    total = mpmath.fsum(
        c * mpmath.exp(mpmath.mpf(v)) for v, c in zip(values, counts) if v != NEG_INF
    )
    return float(mpmath.log(total)) if total > 0 else NEG_INF


@pytest.mark.parametrize(
    ("values", "counts"),
    [
        ([0.0, -40.0], [1, 1]),  # a tiny term that naive summation rounds away
        ([1e300, 1e300 - 1.0, NEG_INF], [3, 5, 10]),
        ([-1e300, -1e300 + 2.0], [1, 1]),
        ([700.0, -700.0, 0.0, NEG_INF], [1, 1000, 10, 100_000]),
        ([1e-300, -1e-300, 0.0], [333_333, 333_333, 333_334]),  # N = 1e6 near zero
        ([0.0, -1e-10, -36.0, -745.0], [1, 250_000, 500_000, 249_999]),  # N = 1e6, mixed
        ([-3.0, 2.5, 2.5 - 1e-12], [700_000, 1, 299_999]),
        ([-np.log(2.0), -np.log(2.0) - 1e-9], [1, 1]),
    ],
)
def test_logsumexp_against_mpmath_on_adversarial_inputs(values, counts):
    rng = np.random.default_rng(0)
    x = np.repeat(np.array(values), counts)
    rng.shuffle(x)
    want = _mp_logsumexp(values, counts)
    got = numerics.logsumexp(x)
    assert close(
        got, want, rel=1e-12, scale=max(abs(v) for v in values if v != NEG_INF) * 1e-4 or 1.0
    )


@given(vectors(finite_scores, max_size=300), st.floats(-1e3, 1e3))
def test_logsumexp_shift_and_permutation_invariance(x, shift):
    base = numerics.logsumexp(x)
    assert close(numerics.logsumexp(x + shift), base + shift, rel=1e-12, scale=abs(shift) + 50)
    assert close(numerics.logsumexp(x[::-1].copy()), base, rel=1e-13, scale=50)


def test_long_arrays_use_compensated_sums():
    x = np.full(10_000_000, -1.0)
    x[0] = 0.0
    mpmath.mp.dps = 50
    want = float(mpmath.log(1 + (10_000_000 - 1) * mpmath.exp(-1)))
    assert close(numerics.logsumexp(x), want, rel=1e-14)


# --- weights, ESS, moments -----------------------------------------------------------------


@given(vectors())
def test_weights_sum_to_one_and_ess_is_bounded(lw):
    assume(np.any(lw > NEG_INF))
    w = numerics.normalized_weights(lw)
    assert abs(w.sum() - 1.0) <= 1e-12
    assert np.allclose(w, reference.normalized_weights(lw), rtol=1e-12, atol=1e-300)
    assert np.all(w[lw == NEG_INF] == 0.0)
    ess = numerics.effective_sample_size(lw)
    assert 1.0 - 1e-12 <= ess <= lw.size * (1 + 1e-12)
    assert close(ess, reference.effective_sample_size(lw), rel=1e-11)


@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, n, elements=log_scores),
            hnp.arrays(np.float64, (n, 3), elements=st.floats(-1e3, 1e3)),
        )
    )
)
def test_weighted_moments_match_reference(args):
    lw, features = args
    assume(np.any(lw > NEG_INF))
    got = numerics.weighted_moments(lw, features)
    want = reference.weighted_moments(lw, features)
    assert np.allclose(got, want, rtol=1e-11, atol=1e-11 * np.abs(features).max())


def test_weighted_moments_shapes():
    assert numerics.weighted_moments([0.0, 0.0], [1.0, 3.0]) == 2.0
    m = numerics.weighted_moments([0.0, NEG_INF], [[1.0, 2.0], [5.0, 6.0]])
    assert m.tolist() == [1.0, 2.0]


# --- divergences ---------------------------------------------------------------------------

KINDS = {
    "kl": (numerics.kl_divergence, reference.kl, exact.kl, False),
    "reverse_kl": (numerics.reverse_kl_divergence, reference.reverse_kl, exact.kl, True),
    "tv": (numerics.tv_distance, reference.tv, exact.tv, False),
    "js": (numerics.js_divergence, reference.js, exact.js, False),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@given(data=st.data())
def test_divergences_match_reference(kind, data):
    ours, ref, _, _ = KINDS[kind]
    n = data.draw(st.integers(1, 80))
    target = data.draw(
        hnp.arrays(np.float64, n, elements=st.one_of(st.floats(-30, 30), st.just(NEG_INF)))
    )
    assume(np.any(target > NEG_INF))
    model = data.draw(hnp.arrays(np.float64, n, elements=st.floats(-30, 0)))
    proposal = data.draw(hnp.arrays(np.float64, n, elements=st.floats(-30, 0)))
    log_z = data.draw(st.one_of(st.none(), st.floats(-5, 5)))
    got = ours(target, model, proposal, log_z)
    want = ref(target, model, proposal, log_z)
    assert close(
        got, want, rel=1e-9, scale=1e-6 * max(1.0, np.exp(np.max(target - proposal) - (log_z or 0)))
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_divergences_are_exact_on_a_whole_support(kind):
    """With the whole support as samples and a uniform proposal, importance sampling is exact."""
    ours, _, oracle, swap = KINDS[kind]
    target_model = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=1)
    policy = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=2)
    support, lp = target_model.enumerate_support()
    target = lp.numpy() + 4.2  # unnormalised: Z = e^4.2
    _, lpi = policy.enumerate_support()
    uniform = np.full(len(support), -np.log(len(support)))
    want = oracle(lpi, target) if swap else oracle(target, lpi)
    assert close(ours(target, lpi, uniform), want, rel=1e-12)
    assert close(ours(target, lpi, uniform, log_z=4.2), want, rel=1e-12)


def test_zero_probabilities_are_exact():
    target = [0.0, NEG_INF, -1.0]
    model = [np.log(0.5), np.log(0.5), NEG_INF]
    assert numerics.kl_divergence(target, model, [-1.0, -1.0, -1.0]) == np.inf
    assert numerics.reverse_kl_divergence(target[:2], model[:2], [-1.0, -1.0]) == np.inf
    assert np.isfinite(numerics.tv_distance(target, model, [-1.0] * 3))
    with np.errstate(all="raise"):  # no warnings, no NaN
        value = numerics.js_divergence(target, model, [-1.0] * 3)
    assert 0 <= value <= np.log(2)


def test_grouped_rows_equal_separate_calls():
    rng = np.random.default_rng(3)
    target, model, proposal = (rng.normal(size=(4, 50)) for _ in range(3))
    target[1, :10] = NEG_INF
    log_z = rng.normal(size=4)
    for name, (fn, _, _, _) in KINDS.items():
        rows = fn(target, model, proposal)
        assert rows.shape == (4,), name
        for r in range(4):
            assert rows[r] == fn(target[r], model[r], proposal[r]), name
        given_z = fn(target, model, proposal, log_z)
        assert given_z[2] == fn(target[2], model[2], proposal[2], log_z[2]), name


def test_on_policy_default_and_log_z_estimate():
    rng = np.random.default_rng(4)
    target, model = rng.normal(size=100), rng.normal(size=100)
    assert numerics.kl_divergence(target, model) == numerics.kl_divergence(target, model, model)
    assert close(numerics.estimate_log_z(target, model), reference.logmeanexp(target - model))


# --- input conversion and bad input --------------------------------------------------------


def test_accepts_sequences_tensors_and_other_dtypes():
    want = reference.logsumexp([0.5, 1.5, -2.0])
    assert close(numerics.logsumexp([0.5, 1.5, -2.0]), want)
    assert close(
        numerics.logsumexp(torch.tensor([0.5, 1.5, -2.0], requires_grad=True)), want, rel=1e-7
    )
    assert close(numerics.logsumexp(np.array([0.5, 1.5, -2.0], dtype=np.float32)), want, rel=1e-7)
    assert close(numerics.logsumexp(np.array([1, 2, 3])), reference.logsumexp([1.0, 2.0, 3.0]))
    strided = np.arange(20, dtype=np.float64)[::3]
    assert close(numerics.logsumexp(strided), reference.logsumexp(strided))


ONE_D = {
    "logsumexp": lambda x: numerics.logsumexp(x),
    "logmeanexp": lambda x: numerics.logmeanexp(x),
    "normalized_weights": lambda x: numerics.normalized_weights(x),
    "effective_sample_size": lambda x: numerics.effective_sample_size(x),
    "weighted_moments": lambda x: numerics.weighted_moments(x, np.ones((len(x), 2))),
    "estimate_log_z": lambda x: numerics.estimate_log_z(x, np.zeros(len(x))),
    "kl_divergence": lambda x: numerics.kl_divergence(x, np.zeros(len(x)), np.zeros(len(x))),
    "reverse_kl_divergence": lambda x: numerics.reverse_kl_divergence(
        x, np.zeros(len(x)), np.zeros(len(x))
    ),
    "tv_distance": lambda x: numerics.tv_distance(x, np.zeros(len(x)), np.zeros(len(x))),
    "js_divergence": lambda x: numerics.js_divergence(x, np.zeros(len(x)), np.zeros(len(x))),
}


@pytest.mark.parametrize("name", sorted(ONE_D))
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([0.0, np.nan, 1.0], r"\[1\] is NaN"),
        ([0.0, 1.0, np.inf], r"\[2\] is \+inf"),
        (["a", "b"], "real numbers|cannot be read"),
        ([1 + 1j], "real numbers"),
    ],
)
def test_bad_values_raise_value_error_naming_the_position(name, bad, message):
    with pytest.raises(ValueError, match=message):
        ONE_D[name](bad)


@pytest.mark.parametrize("name", sorted(ONE_D))
def test_empty_input(name):
    fn = ONE_D[name]
    if name in ("logsumexp", "logmeanexp"):
        assert fn([]) == NEG_INF
    else:
        with pytest.raises(ValueError, match="empty"):
            fn([])


@pytest.mark.parametrize(
    "name", ["logsumexp", "logmeanexp", "normalized_weights", "effective_sample_size"]
)
def test_two_dimensional_input_is_refused(name):
    with pytest.raises(ValueError, match="1-D"):
        ONE_D[name](np.zeros((2, 2)))


def test_length_mismatches():
    with pytest.raises(ValueError, match="mismatch"):
        numerics.weighted_moments([0.0, 0.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="mismatch"):
        numerics.kl_divergence([0.0, 0.0], [0.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="mismatch"):
        numerics.tv_distance(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), log_z=[0.0])
    with pytest.raises(ValueError, match=r"1-D \(samples\)"):
        numerics.js_divergence(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))


def test_zero_weights_everywhere():
    with pytest.raises(ValueError, match="-inf"):
        numerics.normalized_weights([NEG_INF, NEG_INF])
    with pytest.raises(ValueError, match="zero weight"):
        numerics.kl_divergence([NEG_INF], [0.0], [0.0])
    with pytest.raises(ValueError, match="proposal_log_probs\\[0\\]"):
        numerics.kl_divergence([0.0], [0.0], [NEG_INF])
    with pytest.raises(ValueError, match="finite"):
        numerics.weighted_moments([0.0], [[np.nan]])


def test_threads_give_the_same_results_as_serial_calls():
    rng = np.random.default_rng(5)
    inputs = [rng.normal(scale=20, size=200_000) for _ in range(8)]
    serial = [(numerics.logsumexp(x), numerics.kl_divergence(x, x * 0.5, x * 0.25)) for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        for _ in range(3):
            results[i] = (
                numerics.logsumexp(inputs[i]),
                numerics.kl_divergence(inputs[i], inputs[i] * 0.5, inputs[i] * 0.25),
            )

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == serial
