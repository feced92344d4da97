"""Exact checks of the f-DPG losses on an enumerable policy and target."""

import numpy as np
import pytest
import torch

from disco import exact, numerics
from disco.distributions import EnumerableLM
from disco.scorers import BooleanScorer, ExponentialScorer
from disco.tuners import ChiSquareLoss, JSLoss, KLLoss, ReverseChiSquareLoss, ReverseKLLoss, TVLoss

LOSSES = [KLLoss, ReverseKLLoss, TVLoss, JSLoss, ChiSquareLoss, ReverseChiSquareLoss]


def setup():
    base = EnumerableLM(tokens=("a", "b"), max_length=3, seed=2)
    has_a = BooleanScorer(lambda s, c: "a" in s.text.split(), name="has_a")
    target = base * ExponentialScorer([has_a], [1.3])
    policy = EnumerableLM(tokens=("a", "b"), max_length=3, seed=5, scale=0.7)
    support, _ = base.enumerate_support()
    log_p = target.log_score(support).numpy()
    return policy, support, log_p


def exact_divergence(policy, support, log_p, kind):
    return exact.f_divergence(policy.log_score(support).numpy(), log_p, kind)


@pytest.mark.parametrize("loss_cls", LOSSES)
@pytest.mark.parametrize("baseline", [False, True])
def test_expected_loss_gradient_equals_the_exact_divergence_gradient(loss_cls, baseline):
    policy, support, log_p = setup()
    loss = loss_cls(baseline=baseline)
    if baseline:  # a non-zero baseline must not change the expected gradient
        loss.record_batch(np.ones(3), np.array([0.7, -1.1, 2.5]))
    uniform = np.full(len(support), -np.log(len(support)))
    log_z = exact.log_partition(log_p)
    policy.zero_grad()
    out = loss(policy.log_score(support, grad=True), log_p, uniform, log_z)
    out.loss.backward()
    grads = [p.grad.clone() for p in policy.parameters()]

    rng = np.random.default_rng(0)
    directions = [torch.as_tensor(rng.normal(size=p.shape)) for p in policy.parameters()]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, directions))
    eps = 1e-6
    values = []
    for sign in (1, -1):
        shifted = policy.clone()
        with torch.no_grad():
            for p, d in zip(shifted.parameters(), directions):
                p.add_(sign * eps * d)
        values.append(exact_divergence(shifted, support, log_p, loss.kind))
    if loss.kind == "js":  # the loss's f is twice the standard JS (docs/design.md §6.2)
        values = [2 * v for v in values]
    numeric = (values[0] - values[1]) / (2 * eps)
    assert analytic == pytest.approx(numeric, abs=1e-6, rel=1e-6)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_divergence_estimate_is_exact_on_the_whole_support(loss_cls):
    policy, support, log_p = setup()
    uniform = np.full(len(support), -np.log(len(support)))
    log_pi = policy.log_score(support).numpy()
    value, stderr = loss_cls().divergence(log_pi, log_p, uniform, exact.log_partition(log_p))
    assert value == pytest.approx(
        exact.f_divergence(log_pi, log_p, loss_cls.kind), rel=1e-12, abs=1e-14
    )
    assert stderr >= 0


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_losses_are_finite_where_the_target_is_zero(loss_cls):
    log_pi = torch.tensor([-1.0, -2.0], dtype=torch.float64, requires_grad=True)
    out = loss_cls()(log_pi, np.array([-np.inf, -1.0]), np.array([-1.0, -2.0]), 0.0)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(log_pi.grad).all()


def test_f_divergence_handles_disjoint_support():
    # pi puts mass where p = 0: D_f counts it through lim f(t)/t.
    log_pi = np.log([0.5, 0.5])
    log_p = np.array([0.0, -np.inf])
    assert numerics.f_divergence("tv", log_pi, log_p, log_pi, 0.0)[0] == pytest.approx(0.5)
    assert numerics.f_divergence("reverse_kl", log_pi, log_p, log_pi, 0.0)[0] == np.inf
    assert numerics.f_divergence("kl", log_pi, log_p, log_pi, 0.0)[0] == pytest.approx(np.log(2))
    assert numerics.f_divergence("js", log_pi, log_p, log_pi, 0.0)[0] == pytest.approx(
        exact.js(log_pi, log_p)
    )


def test_bad_input():
    with pytest.raises(ValueError, match="unknown f-divergence"):
        numerics.f_divergence("hellinger", [0.0], [0.0], [0.0], 0.0)
    with pytest.raises(ValueError, match="log_z"):
        numerics.f_pseudo_rewards("kl", [0.0], [0.0], [0.0], float("nan"))
    with pytest.raises(ValueError, match="mismatch"):
        numerics.f_pseudo_rewards("kl", [0.0, 0.0], [0.0], [0.0, 0.0], 0.0)
    with pytest.raises(ValueError, match="baseline_window"):
        KLLoss(baseline_window=0)


def test_the_baseline_is_kept_per_context_with_the_overall_average_for_new_ones():
    loss = KLLoss(baseline_window=2)
    loss.record_batch(np.ones(2), np.array([1.0, 3.0]), context="rare")  # mean 2
    loss.record_batch(np.ones(2), np.array([8.0, 8.0]), context="common")  # mean 8
    loss.record_batch(np.ones(2), np.array([0.0, 0.0]), context="rare")  # mean 0
    assert loss.baseline_for("rare") == pytest.approx(1.0)
    assert loss.baseline_for("common") == pytest.approx(8.0)
    assert loss.baseline_for("unseen") == pytest.approx(4.0)  # the last two batches, any context
    restored = KLLoss(baseline_window=2)
    restored.load_state_dict(loss.state_dict())
    assert restored.baseline_for("rare") == loss.baseline_for("rare")
    assert restored.baseline == loss.baseline
    # The surrogate uses its context's baseline: rewards equal to it give a zero loss.
    log_pi = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    out = loss(log_pi, np.log([8.0]), np.zeros(1), 0.0, context="common")
    assert out.baseline == pytest.approx(8.0) and float(out.loss.detach()) == pytest.approx(0.0)
    assert KLLoss(baseline=False).baseline_for("rare") == 0.0
