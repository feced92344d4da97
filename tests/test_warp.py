"""The public sampling warp: its checks and its values."""

import dataclasses
import math

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from disco.distributions import LMDistribution, Warp
from disco.distributions.warp import MIN_TEMPERATURE, warp_logits

INF = math.inf


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": "hot"}, "temperature and top_p must be numbers; got 'hot', 1.0"),
        ({"top_p": True}, "temperature and top_p must be numbers; got 1.0, True"),
        ({"temperature": 0.0}, "temperature must be finite and at least 0.0001"),
        ({"temperature": MIN_TEMPERATURE / 2}, "temperature must be finite and at least"),
        ({"temperature": INF}, "got inf"),
        ({"temperature": math.nan}, "got nan"),
        ({"top_k": -1}, r"top_k must be a non-negative integer \(0: off\); got -1"),
        ({"top_k": 2.0}, "top_k must be a non-negative integer"),
        ({"top_k": True}, "top_k must be a non-negative integer"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\] \(1: off\); got 0.0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"top_p": math.nan}, r"top_p must be in \(0, 1\]"),
    ],
)
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(ValueError, match=message) as caught:
        Warp(**settings)
    assert "\n" not in str(caught.value)
    # LMDistribution makes the same check before it loads anything
    with pytest.raises(ValueError, match=message):
        LMDistribution("/no/such/model", **settings)


def test_settings_are_stored_as_plain_numbers_and_compare_by_value():
    warp = Warp(2, 3, 1)
    assert type(warp.temperature) is float and type(warp.top_p) is float
    assert warp == Warp(2.0, 3, 1.0) and hash(warp) == hash(Warp(2.0, 3, 1.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        warp.top_k = 5  # type: ignore[misc]
    assert Warp().is_identity and Warp(1, 0, 1).is_identity
    assert not Warp(temperature=0.5).is_identity
    assert not Warp(top_k=1).is_identity
    assert not Warp(top_p=0.9).is_identity


def test_apply_gives_the_hand_computed_values():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    assert Warp(temperature=2.0).apply(logits).tolist() == [1.0, 0.5, 0.0, -0.5]
    assert Warp(temperature=2.0, top_k=3).apply(logits).tolist() == [1.0, 0.5, 0.0, -INF]
    # softmax([1, 0.5, 0]) = [0.506, 0.307, 0.186]: top_p=0.8 drops the last (0.186 <= 0.2)
    warped = Warp(temperature=2.0, top_k=3, top_p=0.8).apply(logits)
    assert warped.tolist() == [1.0, 0.5, -INF, -INF]
    # top_p=0.85 keeps it (0.186 > 0.15)
    assert Warp(2.0, 3, 0.85).apply(logits).tolist() == [1.0, 0.5, 0.0, -INF]
    # ties at the threshold are all kept
    assert Warp(top_k=1).apply(torch.tensor([3.0, 3.0, 1.0])).tolist() == [3.0, 3.0, -INF]


def test_identity_returns_the_logits_themselves():
    logits = torch.randn(3, 7)
    assert Warp().apply(logits) is logits


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 0.6},
        {"top_k": 5},
        {"top_p": 0.7},
        {"temperature": 1.7, "top_k": 5, "top_p": 0.8},
    ],
)
def test_apply_matches_warp_logits_and_transformers(settings):
    logits = 3.0 * torch.randn(32, 50, generator=torch.Generator().manual_seed(1))
    warp = Warp(**settings)
    got = warp.apply(logits)
    assert torch.equal(got, warp_logits(logits, **settings))
    expected = logits.clone()
    if warp.temperature != 1.0:
        expected = TemperatureLogitsWarper(warp.temperature)(None, expected)
    if warp.top_k:
        expected = TopKLogitsWarper(warp.top_k)(None, expected)
    if warp.top_p < 1.0:
        expected = TopPLogitsWarper(warp.top_p)(None, expected)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(got[finite], expected[finite])


def test_gradients_flow_through_the_kept_logits():
    logits = torch.tensor([2.0, 1.0, 0.0], requires_grad=True)
    warped = Warp(temperature=2.0, top_k=2).apply(logits)
    torch.logsumexp(warped, dim=0).backward()
    assert logits.grad is not None
    kept = torch.softmax(torch.tensor([1.0, 0.5]), dim=0) / 2.0
    torch.testing.assert_close(logits.grad, torch.cat([kept, torch.zeros(1)]))


def test_the_distribution_holds_its_warp(tmp_path):
    from lm_fixtures import build_gpt2

    lm = LMDistribution(build_gpt2(tmp_path), temperature=0.5, top_k=3, top_p=0.9)
    assert lm.warp == Warp(0.5, 3, 0.9)
    assert (lm.temperature, lm.top_k, lm.top_p) == (0.5, 3, 0.9)


def test_the_examples_in_the_docstrings_hold():
    import doctest

    import disco.distributions.warp

    result = doctest.testmod(disco.distributions.warp)
    assert result.attempted > 0 and result.failed == 0
