import numpy as np
import pytest
import torch
from scipy import stats

from disco.distributions import EnumerableLM, TextSample


@pytest.mark.parametrize(
    ("tokens", "max_length"), [(("a",), 1), (("a", "b"), 2), (("a", "b", "c"), 3), (("x", "y"), 5)]
)
def test_support_is_complete_and_normalised(tokens, max_length):
    model = EnumerableLM(tokens=tokens, max_length=max_length, contexts=("", "c1"), seed=3)
    for context in model.contexts:
        support, log_probs = model.enumerate_support(context)
        n_tokens = len(tokens)
        expected_size = sum(n_tokens**k for k in range(max_length)) + n_tokens**max_length
        assert len(support) == expected_size == len({s.token_ids for s in support})
        assert torch.logsumexp(log_probs, 0).item() == pytest.approx(0.0, abs=1e-13)
        assert log_probs.dtype == torch.float64


def test_contexts_change_the_first_token_only():
    model = EnumerableLM(contexts=("", "other"), seed=1)
    support, lp0 = model.enumerate_support("")
    _, lp1 = model.enumerate_support("other")
    assert not torch.allclose(lp0, lp1)
    # Conditional on the first token, the rest is the same distribution.
    first = torch.tensor([s.token_ids[0] for s in support])
    for token in range(model.eos_id + 1):
        mask = first == token
        cond0 = lp0[mask] - torch.logsumexp(lp0[mask], 0)
        cond1 = lp1[mask] - torch.logsumexp(lp1[mask], 0)
        assert torch.allclose(cond0, cond1, atol=1e-12)


def test_samples_follow_the_exact_distribution():
    model = EnumerableLM(tokens=("a", "b"), max_length=3, seed=7)
    support, log_probs = model.enumerate_support()
    index = {s.token_ids: i for i, s in enumerate(support)}
    samples, sampled_lp = model.sample(sampling_size=20_000)
    assert torch.allclose(sampled_lp, model.log_score(samples))
    counts = np.bincount([index[s.token_ids] for s in samples], minlength=len(support))
    expected = np.exp(log_probs.numpy()) * len(samples)
    _, p_value = stats.chisquare(counts, expected)
    assert p_value > 1e-3


def test_sampling_is_reproducible_from_the_seed():
    a = EnumerableLM(seed=11).sample(sampling_size=50)[0]
    b = EnumerableLM(seed=11).sample(sampling_size=50)[0]
    assert a == b


def test_outside_the_support_scores_minus_infinity():
    model = EnumerableLM(tokens=("a", "b"), max_length=2)
    eos = model.eos_id
    bad = [(eos, eos), (0,), (0, 1, eos), (), (7, eos), (0, eos, 1)]
    scores = model.log_score(bad)
    assert torch.all(scores == float("-inf"))
    assert model.log_score([TextSample((0, eos), "a")]).isfinite().all()


def test_gradients_only_with_grad():
    model = EnumerableLM(seed=2)
    samples, _ = model.sample(sampling_size=8)
    assert not model.log_score(samples).requires_grad
    model.log_score(samples, grad=True).sum().backward()
    assert model.logits.grad is not None and model.logits.grad.abs().sum() > 0
    assert model.context_bias.grad is not None


def test_text_and_tokens():
    model = EnumerableLM(tokens=("hello", "world"), max_length=3)
    support, _ = model.enumerate_support()
    texts = {s.text for s in support}
    assert "" in texts and "hello world" in texts and "world world world" in texts


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tokens": ()}, "tokens"),
        ({"tokens": ("a", "a")}, "tokens"),
        ({"tokens": ("</s>",)}, "tokens"),
        ({"max_length": 0}, "max_length"),
        ({"contexts": ()}, "contexts"),
    ],
)
def test_bad_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnumerableLM(**kwargs)


def test_bad_calls():
    model = EnumerableLM()
    with pytest.raises(ValueError, match="sampling_size"):
        model.sample(sampling_size=0)
    with pytest.raises(ValueError, match="unknown context"):
        model.log_score([], context="nope")


def test_clone_is_independent():
    model = EnumerableLM(seed=4)
    copy = model.clone()
    with torch.no_grad():
        copy.logits.add_(1.0)
    support, lp = model.enumerate_support()
    assert torch.equal(lp, model.log_score(support))
    assert not torch.equal(copy.logits, model.logits)
