"""The tuning loop against exact values on enumerable models."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from disco import exact
from disco.distributions import EnumerableLM
from disco.scorers import BooleanScorer, ExponentialScorer, Scorer
from disco.tuners import (
    CDPGTuner,
    ChiSquareLoss,
    DPGTuner,
    FDPGTuner,
    JSLoss,
    KLLoss,
    ReverseChiSquareLoss,
    ReverseKLLoss,
    Tuner,
    TunerConfig,
    TVLoss,
)
from disco.tuners.averaging import ParameterAverage

HAS_A = BooleanScorer(lambda s, c: "a" in s.text.split(), name="has_a")
LOSSES = [KLLoss, ReverseKLLoss, TVLoss, JSLoss, ChiSquareLoss, ReverseChiSquareLoss]


def problem(target_moment=0.8):
    base = EnumerableLM(tokens=("a", "b", "c"), max_length=3, seed=2)
    support, lp = base.enumerate_support()
    phi = HAS_A.score(support).numpy()
    lam = exact.optimal_coefficients(lp, phi, [target_moment])
    target = base * ExponentialScorer([HAS_A], lam)
    return base, support, phi, target, target.log_score(support).numpy()


@pytest.mark.parametrize("mode", ["online", "offline"])
@pytest.mark.parametrize("loss_cls", LOSSES)
def test_each_loss_converges_and_reports_an_unbiased_estimate(loss_cls, mode):
    base, support, phi, target, log_p = problem()
    policy = base.clone()
    tuner = Tuner(
        policy,
        target,
        loss_cls(),
        n_steps=150,
        samples_per_context=128,
        learning_rate=0.05,
        proposal=mode,
        seed=1,
        features=(HAS_A,),
    )
    start = exact.f_divergence(policy.log_score(support).numpy(), log_p, loss_cls.kind)
    tuner.tune(n_steps=149)
    # The tabular policy family contains p, so its exact optimum is 0.
    before_last = exact.f_divergence(policy.log_score(support).numpy(), log_p, loss_cls.kind)
    last = tuner.tune(n_steps=1)[-1]
    final = policy.log_score(support).numpy()
    closed = 1 - exact.f_divergence(final, log_p, loss_cls.kind) / start
    assert closed >= 0.8, f"closed only {closed:.2%} of the gap"
    assert exact.moments(final, phi)[0] == pytest.approx(0.8, abs=0.02)
    # The reported estimate is for the policy that drew/scored this step's samples.
    assert abs(last["divergence"] - before_last) <= 4 * last["divergence_stderr"] + 2e-3
    assert last["moment/has_a"] == pytest.approx(exact.moments(final, phi)[0], abs=0.05)
    assert math.isfinite(last["kl_target_policy"]) and last["ess"] > 1


def test_log_z_estimate_is_consistent_online_and_offline():
    base, _, _, target, log_p = problem()
    for mode in ("online", "offline"):
        tuner = Tuner(
            base.clone(),
            target,
            n_steps=40,
            samples_per_context=128,
            learning_rate=0.05,
            proposal=mode,
        )
        tuner.tune()
        assert tuner.log_z("") == pytest.approx(exact.log_partition(log_p), abs=0.03), mode


def test_cdpg_meets_the_average_moment_with_different_base_rates():
    contexts = ("rare", "common", "mixed")
    base = EnumerableLM(tokens=("a", "b", "c"), max_length=3, contexts=contexts, seed=3)
    with torch.no_grad():
        base.context_bias[:, 0] = torch.tensor([-3.0, 3.0, 0.0], dtype=torch.float64)
    supports = {c: base.enumerate_support(c) for c in contexts}
    rates = [exact.moments(lp, HAS_A.score(s).numpy())[0] for s, lp in supports.values()]
    assert max(rates) - min(rates) > 0.5

    def average_moment(lam):
        return np.mean(
            [
                exact.moments(lp.numpy() + lam * HAS_A.score(s).numpy(), HAS_A.score(s).numpy())[0]
                for s, lp in supports.values()
            ]
        )

    lo, hi = -20.0, 20.0
    for _ in range(100):  # the exact shared coefficient, by bisection on the average moment
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if average_moment(mid) < 0.7 else (lo, mid)
    target = base * ExponentialScorer([HAS_A], [lo])

    class Contexts:
        def contexts(self):
            return list(contexts)

    policy = base.clone()
    tuner = CDPGTuner(
        policy,
        target,
        Contexts(),
        n_steps=150,
        contexts_per_step=3,
        samples_per_context=64,
        learning_rate=0.05,
        seed=0,
    )
    tuner.tune()
    tuned = np.mean(
        [
            exact.moments(policy.log_score(s, c).numpy(), HAS_A.score(s).numpy())[0]
            for c, (s, _) in supports.items()
        ]
    )
    assert tuned == pytest.approx(0.7, abs=0.02)
    assert set(tuner.log_z_sums) == set(contexts)


def test_rlhf_reaches_the_regularised_reward_optimum():
    """Reverse KL to base * exp(r / beta) maximises E_pi[r] - beta KL(pi || base)."""
    beta = 0.5
    base = EnumerableLM(tokens=("a", "b"), max_length=3, seed=4)
    reward = Scorer(lambda s, c: s.text.split().count("a") - 0.5 * len(s.token_ids), name="reward")
    target = base * ExponentialScorer([reward], [1 / beta])
    support, lp = base.enumerate_support()
    r = reward.score(support).numpy()

    def objective(log_pi):
        return float(np.exp(log_pi) @ r) - beta * exact.kl(log_pi, lp.numpy())

    optimum = beta * exact.log_partition(lp.numpy() + r / beta)
    policy = base.clone()
    start = objective(policy.log_score(support).numpy())
    FDPGTuner(
        policy,
        target,
        ReverseKLLoss(),
        n_steps=200,
        samples_per_context=128,
        learning_rate=0.05,
        seed=0,
    ).tune()
    final = objective(policy.log_score(support).numpy())
    assert optimum - start > 0.1
    assert final == pytest.approx(optimum, rel=0.01)


def test_settings_are_validated_and_honoured():
    base, _, _, target, _ = problem()
    with pytest.raises(ValueError, match=r"unknown tuner setting.*learning_rat"):
        Tuner(base.clone(), target, learning_rat=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        Tuner(base.clone(), target, optimizer="adagrad")
    with pytest.raises(ValueError, match="n_steps"):
        TunerConfig(n_steps=0)
    assert type(Tuner(base.clone(), target, optimizer="AdamW").optimizer) is torch.optim.AdamW
    assert type(Tuner(base.clone(), target, optimizer="adam").optimizer) is torch.optim.Adam
    assert (
        type(Tuner(base.clone(), target, optimizer="sgd", momentum=0.9).optimizer)
        is torch.optim.SGD
    )
    help_texts = TunerConfig.field_help()
    assert all(help_texts.values()) and "learning_rate" in help_texts
    # Settings never leak between instances.
    a = Tuner(base.clone(), target, learning_rate=0.5)
    b = Tuner(base.clone(), target)
    assert a.config.learning_rate == 0.5 and b.config.learning_rate == TunerConfig().learning_rate


def test_schedules():
    base, _, _, target, _ = problem()
    lrs = {}
    for schedule in ("constant", "linear", "cosine"):
        t = Tuner(
            base.clone(),
            target,
            n_steps=4,
            samples_per_context=8,
            scheduler=schedule,
            warmup_steps=1,
            learning_rate=1.0,
            optimizer="sgd",
        )
        lrs[schedule] = [h["lr"] for h in t.tune()]
    assert lrs["constant"] == [1.0, 1.0, 1.0, 1.0]
    assert lrs["linear"][-1] == 0.0 and lrs["cosine"][-1] == pytest.approx(0.0, abs=1e-12)


def test_loggers_receive_every_step_and_are_closed_on_errors():
    base, _, _, target, _ = problem()

    class Recorder:
        def __init__(self):
            self.events = []

        def start(self, config):
            self.events.append(("start", json.dumps(config)))

        def log(self, step, metrics):
            self.events.append(("log", step))

        def close(self):
            self.events.append(("close",))

    rec = Recorder()
    DPGTuner(base.clone(), target, n_steps=3, samples_per_context=8, loggers=[rec]).tune()
    assert [e[0] for e in rec.events] == ["start", "log", "log", "log", "close"]

    class Exploding:
        def log_score(self, samples, context=""):
            raise RuntimeError("boom")

    rec = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        Tuner(base.clone(), Exploding(), n_steps=3, samples_per_context=8, loggers=[rec]).tune()
    assert rec.events[-1] == ("close",)


def test_policy_without_trainable_parameters_is_refused():
    base, _, _, target, _ = problem()
    frozen = base.clone()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Tuner(frozen, target)


def test_kl_from_base_needs_a_base():
    base, _, _, target, _ = problem()
    with pytest.raises(ValueError, match="base"):
        Tuner(base.clone(), target, kl_from_base=True)
    history = Tuner(
        base.clone(), target, base=base, kl_from_base=True, n_steps=2, samples_per_context=16
    ).tune()
    assert history[0]["kl_policy_base"] == pytest.approx(0.0, abs=1e-12)


def test_parameter_average_is_uniform_then_exponential():
    theta = torch.zeros(2, dtype=torch.float64)
    average = ParameterAverage({"theta": theta}, decay=0.75)
    values = [4.0, 8.0, 0.0, 12.0, 2.0, 6.0]
    expected = 0.0
    for t, v in enumerate(values, start=1):
        theta.fill_(v)
        average.update()
        keep = min(0.75, 1 - 1 / t)  # 0, 1/2, 2/3, 3/4, 3/4, ...
        expected = keep * expected + (1 - keep) * v
        assert torch.equal(
            average.average["theta"], torch.full((2,), expected, dtype=torch.float64)
        )
    assert average.average["theta"][0] == pytest.approx(
        (4 + 8 + 0 + 12) / 4 * 0.75**2 + 0.25 * 0.75 * 2 + 0.25 * 6
    )
    theta.fill_(-1.0)
    with average.swapped_in():
        assert theta[0] == pytest.approx(expected)
    assert theta[0] == -1.0
    with pytest.raises(ValueError, match="decay"):
        ParameterAverage({"theta": theta}, decay=1.0)


def test_parameter_average_with_power_weighs_iterate_t_by_a_polynomial_in_t():
    """Polynomial-decay averaging: while the exponential cap does not bind, the weights of the
    iterates are the products of the keep factors, which for power 2 are proportional to
    t(t+1) (Shamir and Zhang's weights), and the first iterate replaces the start."""
    theta = torch.zeros(1, dtype=torch.float64)
    average = ParameterAverage({"theta": theta}, decay=0.99, power=2.0)
    values = [3.0, -1.0, 5.0, 2.0, 7.0]
    for v in values:
        theta.fill_(v)
        average.update()
    weights = [t * (t + 1) for t in range(1, len(values) + 1)]
    expected = sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)
    assert average.average["theta"][0] == pytest.approx(expected, rel=1e-14)
    # After many constant iterates the cap binds: an exponential memory of 1/(1 - decay).
    capped = ParameterAverage({"theta": theta}, decay=0.5, power=3.0)
    theta.fill_(1.0)
    for _ in range(10):
        capped.update()
    theta.fill_(0.0)
    capped.update()
    assert capped.average["theta"][0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="power"):
        ParameterAverage({"theta": theta}, decay=0.5, power=-1.0)
    with pytest.raises(ValueError, match="averaging_power"):
        TunerConfig(averaging_power=float("nan"))


def test_tune_leaves_the_average_in_the_policy_and_trains_the_iterate(tmp_path):
    _, _, _, target, _ = problem()
    policy = problem()[0]  # the same model as the target's base, but another object
    settings = dict(n_steps=6, samples_per_context=16, learning_rate=0.05, seed=3)
    tuner = Tuner(policy, target, features=(HAS_A,), **settings)
    history = tuner.tune(n_steps=3)
    assert torch.equal(policy.logits, tuner.average.average["logits"])
    # The metrics without a prefix describe the average; the iterate's are kept beside them.
    assert {"iterate/kl_target_policy", "iterate/moment/has_a", "kl_target_policy"} <= set(
        history[-1]
    )
    with tuner.average.iterate_in_place():
        iterate = policy.logits.detach().clone()
    assert not torch.equal(iterate, policy.logits)
    # Training continues from the iterate, not from the average: same run as uninterrupted.
    tuner.save_checkpoint(tmp_path)
    tuner.tune()
    other_policy = problem()[0]  # a fresh model: clones share their sampling generator
    uninterrupted = Tuner(other_policy, target, features=(HAS_A,), **settings)
    uninterrupted.tune()
    assert torch.equal(policy.logits, other_policy.logits)
    # A checkpoint holds the iterate, and the average beside it.
    from safetensors.torch import load_file

    saved = tmp_path / (tmp_path / "latest").read_text()
    assert torch.equal(load_file(saved / "policy.safetensors")["logits"], iterate)
    resumed_policy = problem()[0]
    resumed = Tuner(resumed_policy, target, features=(HAS_A,), **settings)
    resumed.load_checkpoint(tmp_path)
    assert resumed.average.updates == 3
    resumed.tune()
    assert torch.equal(resumed_policy.logits, policy.logits)
    assert [h["kl_target_policy"] for h in resumed.history] == [
        h["kl_target_policy"] for h in uninterrupted.history
    ]


def test_without_averaging_the_policy_is_the_last_iterate():
    base, _, _, target, _ = problem()
    policy = base.clone()
    tuner = Tuner(policy, target, n_steps=3, samples_per_context=16, averaging="none")
    history = tuner.tune()
    assert tuner.average is None and not any(k.startswith("iterate/") for k in history[-1])
    with pytest.raises(ValueError, match="averaging"):
        TunerConfig(averaging="polyak")
    with pytest.raises(ValueError, match="averaging_decay"):
        TunerConfig(averaging_decay=1.0)


def test_a_checkpoint_without_an_average_is_refused_by_an_averaging_tuner(tmp_path):
    base, _, _, target, _ = problem()
    plain = Tuner(base.clone(), target, n_steps=2, samples_per_context=8, averaging="none")
    plain.tune()
    plain.save_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="averaging='none'"):
        Tuner(base.clone(), target, n_steps=2, samples_per_context=8).load_checkpoint(tmp_path)


def test_the_stopping_rule_ends_tuning_once_the_divergence_stops_improving():
    base, support, _phi, target, log_p = problem()
    start = exact.f_divergence(base.log_score(support).numpy(), log_p, "kl")
    policy = base.clone()
    tuner = Tuner(
        policy, target, n_steps=2000, samples_per_context=64, learning_rate=0.05, stopping_window=10
    )
    history = tuner.tune()
    assert 20 <= len(history) < 2000 and tuner.converged()
    # It stopped on a plateau, not half-way: most of the gap is closed.
    final = exact.f_divergence(policy.log_score(support).numpy(), log_p, "kl")
    assert final < 0.05 * start
    # A further call judges its own steps: it runs a full window's worth before stopping again.
    stopped_at = len(history)
    tuner.tune(n_steps=100)
    assert len(tuner.history) - stopped_at >= 3 * 10 - 1
    # Off (the default), every step runs, however flat the estimates.
    assert len(Tuner(base.clone(), target, n_steps=30, samples_per_context=16).tune()) == 30


def test_the_stopping_window_needs_two_steps():
    with pytest.raises(ValueError, match="stopping_window"):
        TunerConfig(stopping_window=1)
    with pytest.raises(ValueError, match="stopping_window"):
        TunerConfig(stopping_window=-1)


def test_metrics_samples_changes_what_is_reported_not_how_the_policy_moves():
    settings = dict(n_steps=4, samples_per_context=32, learning_rate=0.05, seed=5)
    runs = {}
    for m in (0, 32, 8):
        base, _support, _phi, target, _log_p = problem()  # fresh random state for each run
        policy = base.clone()
        history = Tuner(
            policy, target, base=base, kl_from_base=True, metrics_samples=m, **settings
        ).tune()
        untimed = [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]
        runs[m] = (untimed, policy.log_score(base.enumerate_support()[0]).numpy())
    assert runs[0][0] == runs[32][0]  # the whole batch, spelled two ways
    np.testing.assert_array_equal(runs[8][1], runs[0][1])  # same draws, same steps
    assert [h["loss"] for h in runs[8][0]] == [h["loss"] for h in runs[0][0]]
    assert [h["kl_target_policy"] for h in runs[8][0]] != [
        h["kl_target_policy"] for h in runs[0][0]
    ]


def test_metrics_samples_limits_the_reported_forward_passes():
    """The base and the averaged policy score only the reported samples, chunk by chunk."""

    class CountingBase:
        def __init__(self, inner):
            self.inner, self.scored = inner, 0

        def log_score(self, samples, context=""):
            self.scored += len(samples)
            return self.inner.log_score(samples, context)

    for m, expected in ((0, 32), (12, 12), (8, 8)):
        base, _support, _phi, target, _log_p = problem()
        policy = base.clone()
        counting = CountingBase(base)
        scored_without_grad = []
        plain = policy.log_score

        def log_score(samples, context="", grad=False, plain=plain, seen=scored_without_grad):
            if not grad:
                seen.append(len(samples))
            return plain(samples, context, grad=grad)

        policy.log_score = log_score
        tuner = Tuner(
            policy,
            target,
            base=counting,
            kl_from_base=True,
            metrics_samples=m,
            averaging="ema",
            n_steps=1,
            samples_per_context=32,
            sampling_batch_size=8,
            learning_rate=0.05,
            seed=5,
        )
        history = tuner.tune()
        assert counting.scored == expected
        # EnumerableLM.sample scores its 32 draws, then the averaged policy its reported ones
        assert sum(scored_without_grad) == 32 + expected
        assert math.isfinite(history[0]["kl_policy_base"])


def test_the_proposal_is_not_compared_with_the_policy_it_was_just_copied_from(tmp_path):
    """Right after a replacement the step's estimates are of the proposal's own parameters: a
    tie, which must not be decided by rounding (it would depend on the number of processes)."""
    base, _support, _phi, target, _log_p = problem()
    settings = dict(
        n_steps=24,
        samples_per_context=32,
        learning_rate=0.05,
        proposal="offline",
        proposal_update_interval=1,
        seed=3,
    )
    tuner = Tuner(base.clone(), target, **settings)
    updated = [h["proposal_updated"] for h in tuner.tune()]
    assert 1.0 in updated
    assert all(not (a and b) for a, b in itertools.pairwise(updated))
    # A checkpoint keeps the step of the last replacement, so a resumed run decides alike.
    copied = [k + 1 for k, u in enumerate(updated) if u]
    assert tuner.proposal_copied_at == copied[-1]
    resumed = Tuner(base.clone(), target, **settings)
    resumed.load_checkpoint(tuner.save_checkpoint(tmp_path / "ckpt"))
    assert resumed.proposal_copied_at == copied[-1]
