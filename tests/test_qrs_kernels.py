"""QRS kernels (accept/reject, beta curves, beta for a rate, IMH) against brute-force references."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference
from disco import numerics

NEG_INF = float("-inf")
LN2 = math.log(2.0)


# --- brute force: every beta on its own, straight from the definitions (docs/design.md §7.2) -----


def brute_curve(log_ratios, log_betas, log_weights=None, features=None):
    """O(N·B) numpy evaluation of AR, log Z_β, KL, TV, JS and moments, in log space."""
    lr = np.asarray(log_ratios, dtype=np.float64)
    w = np.zeros_like(lr) if log_weights is None else np.asarray(log_weights, dtype=np.float64)
    keep = w > NEG_INF
    f = (
        None
        if features is None
        else np.asarray(features, dtype=np.float64).reshape(lr.size, -1)[keep]
    )
    lr, w = lr[keep], w[keep]
    log_w = reference.logsumexp(w)
    a = w + lr
    log_s = reference.logsumexp(a)
    lp = a - log_s
    p = np.exp(lp)
    out = {k: [] for k in ("acceptance_rate", "log_z_beta", "kl", "tv", "js", "moments")}
    for b in log_betas:
        clipped = w + np.minimum(lr, b)
        log_sb = reference.logsumexp(clipped)
        lpb = clipped - log_sb
        pb = np.exp(lpb)
        out["acceptance_rate"].append(math.exp(log_sb - b - log_w))
        out["log_z_beta"].append(log_sb - log_w)
        on = p > 0
        out["kl"].append(float(np.sum(p[on] * (lp[on] - lpb[on]))))
        out["tv"].append(0.5 * float(np.sum(np.abs(p - pb))))
        lm = np.logaddexp(lp, lpb) - LN2
        js = 0.5 * np.sum(p[on] * (lp[on] - lm[on]))
        onb = pb > 0
        js += 0.5 * np.sum(pb[onb] * (lpb[onb] - lm[onb]))
        out["js"].append(float(js))
        if f is not None:
            out["moments"].append(pb @ f)
    return {k: np.array(v) for k, v in out.items()}


def assert_close(got, want, tol=1e-12):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# --- strategies: ties, -inf ratios, zero weights ------------------------------------------------

tied_values = st.sampled_from([-3.0, -0.5, 0.0, 0.25, 1.0, 2.5])
ratio_values = st.one_of(st.floats(-30, 30), tied_values, st.just(NEG_INF))


@st.composite
def qrs_inputs(draw, weighted=None):
    n = draw(st.integers(1, 60))
    lr = draw(hnp.arrays(np.float64, n, elements=ratio_values))
    assume(np.isfinite(lr).any())
    if weighted is None:
        weighted = draw(st.booleans())
    w = None
    if weighted:
        w = draw(hnp.arrays(np.float64, n, elements=st.one_of(st.floats(-5, 5), st.just(NEG_INF))))
        assume(np.isfinite(lr[w > NEG_INF]).any())
    finite = lr[np.isfinite(lr)]
    betas = draw(st.lists(st.floats(-35, 35), min_size=0, max_size=8))
    # Betas exactly at sample ratios, at the extremes and just around them.
    picks = draw(st.lists(st.sampled_from(list(finite)), min_size=1, max_size=4))
    extra = [finite.min(), finite.max(), finite.min() - 1.0, finite.max() + 1.0]
    extra += [np.nextafter(v, np.inf) for v in picks] + [np.nextafter(v, -np.inf) for v in picks]
    return lr, w, np.array(betas + picks + extra, dtype=np.float64)


@given(qrs_inputs())
def test_curve_matches_brute_force(inputs):
    lr, w, log_betas = inputs
    curve = numerics.qrs_curve(lr, log_betas=log_betas, log_weights=w, js=True)
    want = brute_curve(lr, log_betas, w)
    for key in ("acceptance_rate", "log_z_beta", "kl", "tv", "js"):
        assert_close(getattr(curve, key), want[key])
    assert curve.log_z == pytest.approx(
        reference.logsumexp((0 if w is None else w) + lr)
        - reference.logsumexp(np.zeros_like(lr) if w is None else w),
        rel=1e-12,
        abs=1e-12,
    )


@given(
    st.integers(257, 3000),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.5, 5.0, 80.0]),
    st.booleans(),
    st.booleans(),
)
def test_curve_over_many_blocks(n, seed, spread, weighted, wide):
    """Sums are kept per block of 256 samples: check splits inside and across many blocks."""
    rng = np.random.default_rng(seed)
    lr = rng.normal(scale=spread, size=n)
    lr[rng.random(n) < 0.05] = NEG_INF
    lr[rng.random(n) < 0.2] = 1.5  # ties
    if wide:  # blocks spanning hundreds of nats take the sample-by-sample path
        lr[rng.random(n) < 0.02] = rng.choice([-600.0, 400.0, 650.0])
    w = rng.normal(scale=2.0, size=n) if weighted else None
    if weighted:
        w[rng.random(n) < 0.05] = NEG_INF
    finite = lr[np.isfinite(lr)]
    log_betas = np.concatenate(
        [rng.choice(finite, 10), rng.uniform(finite.min() - 1, finite.max() + 1, 10)]
    )
    curve = numerics.qrs_curve(
        lr,
        log_betas=log_betas,
        log_weights=w,
        js=True,
        features=lr.clip(-3, 3) if not wide else None,
    )
    want = brute_curve(lr, log_betas, w, lr.clip(-3, 3) if not wide else None)
    for key in ("acceptance_rate", "log_z_beta", "kl", "tv", "js"):
        assert_close(getattr(curve, key), want[key], tol=1e-11)
    if not wide:
        assert_close(curve.moments, want["moments"].ravel(), tol=1e-11)
    index = numerics.QRSIndex(lr, w)
    rates = np.array([0.9, 0.5, 0.1, 1e-3]) * index.max_acceptance_rate
    assert_close(
        index.acceptance_rate(log_betas=index.log_beta_for_acceptance_rate(rates)), rates, 1e-11
    )


@given(qrs_inputs(), st.integers(1, 3), st.data())
def test_moments_match_brute_force(inputs, k, data):
    lr, w, log_betas = inputs
    f = data.draw(hnp.arrays(np.float64, (lr.size, k), elements=st.floats(-10, 10)))
    got = numerics.qrs_curve(lr, log_betas=log_betas, log_weights=w, features=f).moments
    assert got.shape == (log_betas.size, k)
    assert_close(got, brute_curve(lr, log_betas, w, f)["moments"], tol=1e-11)


@given(qrs_inputs())
def test_curve_is_monotone_in_beta(inputs):
    lr, w, log_betas = inputs
    grid = np.sort(np.concatenate([log_betas, np.linspace(log_betas.min(), log_betas.max(), 30)]))
    curve = numerics.qrs_curve(lr, log_betas=grid, log_weights=w, js=True)
    for key in ("acceptance_rate", "kl", "tv", "js"):
        values = getattr(curve, key)
        assert np.all(np.diff(values) <= 1e-12 * (1 + np.abs(values[:-1]))), key


@given(qrs_inputs())
def test_exact_at_the_ends(inputs):
    lr, w, _ = inputs
    index = numerics.QRSIndex(lr, w)
    top = index.curve(log_betas=[index.max_log_ratio, index.max_log_ratio + 3.0], js=True)
    assert np.all(top.kl == 0.0) and np.all(top.tv == 0.0) and np.all(top.js == 0.0)
    low = index.acceptance_rate(log_betas=[index.min_log_ratio, index.min_log_ratio - 5.0])
    weights = np.zeros_like(lr) if w is None else w
    share = np.exp(reference.logsumexp(weights[lr > NEG_INF]) - reference.logsumexp(weights))
    assert_close(low, [share, share], tol=1e-13)
    if np.all(lr[weights > NEG_INF] > NEG_INF):
        assert np.all(low == 1.0)


@given(qrs_inputs(), st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=6))
def test_beta_for_acceptance_rate_round_trips(inputs, fractions):
    lr, w, _ = inputs
    index = numerics.QRSIndex(lr, w)
    rates = np.array(fractions) * index.max_acceptance_rate
    log_betas = index.log_beta_for_acceptance_rate(rates)
    assert_close(index.acceptance_rate(log_betas=log_betas), rates, tol=1e-11)
    # The same through the module-level function, with betas rather than logs.
    betas = numerics.beta_for_acceptance_rate(lr, rates, log_weights=w)
    assert_close(np.log(betas), log_betas, tol=1e-14)


def test_beta_for_acceptance_rate_exact_points():
    lr = np.log([1.0, 2.0, 4.0])
    # AR(β) = mean(min(r, β)) / β: at β = 2, (1 + 2 + 2) / 6 = 5/6; past 4, 7/(3β).
    assert numerics.beta_for_acceptance_rate(lr, 5 / 6) == pytest.approx(2.0, rel=1e-14)
    assert numerics.beta_for_acceptance_rate(lr, 7 / 24) == pytest.approx(8.0, rel=1e-14)
    assert numerics.beta_for_acceptance_rate(lr, 1.0) == pytest.approx(1.0, rel=1e-15)
    with pytest.raises(ValueError, match=r"no beta accepts more than 0\.666"):
        numerics.beta_for_acceptance_rate([0.0, 0.0, NEG_INF], 0.7)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"rates\[0\]"):
            numerics.beta_for_acceptance_rate(lr, bad)


def test_extreme_ratio_ranges_against_mpmath():
    mpmath.mp.dps = 60
    lr = np.array([-800.0, -400.0, 0.0, 300.0, 700.0, 700.0])
    log_betas = np.array([-805.0, -800.0, -600.0, -1.0, 299.0, 650.0, 700.0])
    curve = numerics.qrs_curve(lr, log_betas=log_betas, js=True)
    r = [mpmath.exp(mpmath.mpf(v)) for v in lr]
    s = mpmath.fsum(r)
    for i, b in enumerate(log_betas):
        beta = mpmath.exp(mpmath.mpf(b))
        clipped = [min(x, beta) for x in r]
        sb = mpmath.fsum(clipped)
        ar = sb / beta / len(r)
        kl = mpmath.fsum(x / s * mpmath.log((x / s) / (c / sb)) for x, c in zip(r, clipped))
        tv = mpmath.fsum(abs(x / s - c / sb) for x, c in zip(r, clipped)) / 2
        assert curve.acceptance_rate[i] == pytest.approx(float(ar), rel=1e-12, abs=0)
        assert curve.kl[i] == pytest.approx(float(kl), rel=1e-12, abs=1e-40)
        assert curve.tv[i] == pytest.approx(float(tv), rel=1e-12, abs=1e-40)


def test_curve_accepts_betas_and_tensors():
    lr = torch.tensor([0.0, 1.0, -1.0])
    by_beta = numerics.qrs_curve(lr, betas=[0.5, 1.0, 2.0])
    by_log = numerics.qrs_curve(lr.numpy(), log_betas=np.log([0.5, 1.0, 2.0]))
    assert_close(by_beta.acceptance_rate, by_log.acceptance_rate, tol=0)
    assert_close(by_beta.betas, [0.5, 1.0, 2.0], tol=1e-15)
    rows = by_beta.rows()
    assert [r["beta"] for r in rows] == pytest.approx([0.5, 1.0, 2.0])
    assert by_beta.to_markdown().startswith("| beta | log_beta | acceptance_rate | kl | tv |")
    index = numerics.QRSIndex(lr)
    assert isinstance(index.acceptance_rate(1.0), float)
    assert isinstance(index.divergence("tv", 1.0), float)
    assert index.divergence("kl", [1.0, 2.0]).shape == (2,)
    assert isinstance(index.feature_moments([1.0, 2.0, 3.0], 1.0), float)
    assert index.feature_moments(np.ones((3, 2)), [1.0, 2.0]).shape == (2, 2)
    assert isinstance(index.beta_for_acceptance_rate(0.5), float)


# --- accept / reject -------------------------------------------------------------------------


@given(
    hnp.arrays(
        np.float64, st.integers(0, 300), elements=st.one_of(st.floats(-20, 20), st.just(NEG_INF))
    ),
    st.floats(-10, 10),
    st.integers(0, 2**32 - 1),
)
def test_accept_matches_rule(lr, log_beta, seed):
    u = np.random.default_rng(seed).random(lr.size)
    with np.errstate(divide="ignore"):
        log_u = np.log(u)
    want = log_u < np.minimum(0.0, lr - log_beta)
    assert np.array_equal(numerics.qrs_accept(lr, log_uniforms=log_u, log_beta=log_beta), want)
    got = numerics.qrs_accept(lr, u, beta=math.exp(log_beta))
    # The uniform form compares u with exp(min(0, lr - log β)); a disagreement needs u within
    # a couple of ulp of the threshold.
    threshold = np.exp(np.minimum(0.0, lr - log_beta))
    ambiguous = np.abs(u - threshold) <= 4e-16 * threshold
    assert np.array_equal(got[~ambiguous], (u < threshold)[~ambiguous])
    assert not np.any(got[lr == NEG_INF])


def test_accept_long_input_is_parallel_and_consistent():
    rng = np.random.default_rng(0)
    lr = rng.normal(size=300_000)
    u = rng.random(lr.size)
    mask = numerics.qrs_accept(lr, u, beta=2.0)
    assert mask.dtype == np.bool_ and mask.shape == lr.shape
    assert np.array_equal(mask, u < np.exp(np.minimum(0.0, lr - math.log(2.0))))


# --- IMH -------------------------------------------------------------------------------------


def imh_reference(lr, u, current):
    states, accepted = [], []
    state = -1
    for t, (lt, ut) in enumerate(zip(lr, u)):
        take = current == NEG_INF or math.log(ut) < lt - current if ut > 0 else True
        if take:
            state, current = t, lt
        states.append(state)
        accepted.append(take)
    return states, accepted, current


@given(
    hnp.arrays(
        np.float64, st.integers(0, 200), elements=st.one_of(st.floats(-5, 5), st.just(NEG_INF))
    ),
    st.one_of(st.floats(-5, 5), st.just(NEG_INF)),
    st.integers(0, 2**32 - 1),
)
def test_imh_chain_matches_loop(lr, current, seed):
    u = np.random.default_rng(seed).random(lr.size)
    run = numerics.imh_chain(lr, u, current)
    states, accepted, final = imh_reference(lr, u, current)
    assert run.states.tolist() == states
    assert run.accepted.tolist() == accepted
    assert run.final_log_ratio == final


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_is_refused_with_names():
    with pytest.raises(ValueError, match=r"betas\[1\] is -1.0: beta must be positive"):
        numerics.qrs_curve([0.0, 1.0], betas=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"betas\[0\] is 0.0"):
        numerics.qrs_curve([0.0], betas=0.0)
    with pytest.raises(ValueError, match=r"betas\[0\] is nan"):
        numerics.qrs_curve([0.0], betas=float("nan"))
    with pytest.raises(ValueError, match=r"log_betas\[0\] is inf"):
        numerics.qrs_curve([0.0], log_betas=[float("inf")])
    with pytest.raises(ValueError, match=r"log_ratios\[1\] is NaN"):
        numerics.qrs_curve([0.0, float("nan")], betas=1.0)
    with pytest.raises(ValueError, match=r"log_ratios\[0\] is \+inf"):
        numerics.QRSIndex([float("inf")])
    with pytest.raises(ValueError, match="log_ratios is empty"):
        numerics.QRSIndex([])
    with pytest.raises(ValueError, match="target gives zero weight to all samples"):
        numerics.QRSIndex([NEG_INF, NEG_INF])
    with pytest.raises(ValueError, match="every entry of log_weights is -inf"):
        numerics.QRSIndex([0.0], [NEG_INF])
    with pytest.raises(ValueError, match=r"log_weights\[0\] is NaN"):
        numerics.QRSIndex([0.0], [float("nan")])
    with pytest.raises(ValueError, match="length mismatch"):
        numerics.QRSIndex([0.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="length mismatch"):
        numerics.qrs_curve([0.0, 1.0], betas=1.0, features=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"features\[1, 0\] is NaN"):
        numerics.qrs_curve([0.0, 1.0], betas=1.0, features=[1.0, float("nan")])
    with pytest.raises(ValueError, match="exactly one of betas and log_betas"):
        numerics.qrs_curve([0.0], betas=1.0, log_betas=0.0)
    with pytest.raises(ValueError, match="unknown divergence"):
        numerics.QRSIndex([0.0]).divergence("chi2", 1.0)  # type: ignore[arg-type]
    # accept/reject
    with pytest.raises(ValueError, match=r"uniforms\[1\] is 1.0: it must lie in \[0, 1\)"):
        numerics.qrs_accept([0.0, 0.0], [0.5, 1.0], beta=1.0)
    with pytest.raises(ValueError, match=r"log_uniforms\[0\] is 0.5"):
        numerics.qrs_accept([0.0], log_uniforms=[0.5], beta=1.0)
    with pytest.raises(ValueError, match=r"log_ratios\[0\] is NaN"):
        numerics.qrs_accept([float("nan")], [0.5], beta=1.0)
    with pytest.raises(ValueError, match=r"betas\[0\] is -2.0"):
        numerics.qrs_accept([0.0], [0.5], beta=-2.0)
    with pytest.raises(ValueError, match="length mismatch"):
        numerics.qrs_accept([0.0, 1.0], [0.5], beta=1.0)
    with pytest.raises(ValueError, match="exactly one of uniforms and log_uniforms"):
        numerics.qrs_accept([0.0], beta=1.0)
    with pytest.raises(ValueError, match="exactly one of beta and log_beta"):
        numerics.qrs_accept([0.0], [0.5])
    with pytest.raises(ValueError, match=r"uniforms\[0\] is -0.1"):
        numerics.imh_chain([0.0], [-0.1])
