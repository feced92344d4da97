"""LMDistribution on tiny real transformers models (GPT-2 and T5) built and saved by the tests.

Exactness is checked against enumeration (every output of a short length cap) and against an
independent reference: the model called on one unpadded sequence, warped by transformers' own
logits processors.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from scipy import stats
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from conftest import assert_log_probs_close, require_extra
from disco.distributions import LMDistribution, TextSample
from disco.distributions.lm import warp_logits
from disco.distributions.lm_runner import _draw
from lm_fixtures import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    all_outputs,
    build_bart,
    build_gpt2,
    build_t5,
    build_tokenizer,
)

WARPS = [
    {},
    {"temperature": 0.6},
    {"top_k": 3},
    {"top_p": 0.75},
    {"temperature": 1.7, "top_k": 5, "top_p": 0.8},
]
WARP_IDS = ["plain", "temperature", "top_k", "top_p", "all"]


@pytest.fixture(scope="session")
def gpt2_pad_path(tmp_path_factory):
    """A GPT-2 whose pad token is not EOS (the pad token is then an ordinary output token)."""
    return build_gpt2(tmp_path_factory.mktemp("gpt2pad"), pad_is_eos=False, seed=1)


@pytest.fixture(scope="session")
def t5_path(tmp_path_factory):
    return build_t5(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="session", params=["gpt2", "t5"])
def model_path(request, gpt2_path, t5_path):
    return gpt2_path if request.param == "gpt2" else t5_path


def contexts_for(lm: LMDistribution) -> list[str]:
    """Contexts of different token lengths (the empty one only where it is allowed)."""
    return ["a", "b c a b", "c c"] if lm.is_seq2seq else ["", "a", "b c a b c"]


def processors(warp: dict) -> LogitsProcessorList:
    chain = LogitsProcessorList()
    if warp.get("temperature", 1.0) != 1.0:
        chain.append(TemperatureLogitsWarper(warp["temperature"]))
    if warp.get("top_k", 0):
        chain.append(TopKLogitsWarper(warp["top_k"]))
    if warp.get("top_p", 1.0) < 1.0:
        chain.append(TopPLogitsWarper(warp["top_p"]))
    return chain


def reference_log_prob(lm: LMDistribution, context: str, sample, warp: dict) -> float:
    """Sum of token log-probs from one unpadded forward pass, warped by transformers itself."""
    ids = list(sample)
    if EOS_ID in ids:
        ids = ids[: ids.index(EOS_ID) + 1]
    model = lm.model
    with torch.no_grad():
        if lm.is_seq2seq:
            enc = torch.tensor([lm.tokenizer(context)["input_ids"]])
            dec = torch.tensor([[lm.decoder_prefix[0], *ids[:-1]]])
            logits = model(input_ids=enc, decoder_input_ids=dec).logits[0]
        else:
            prompt = lm.tokenizer(context)["input_ids"] if context else [lm.bos_token_id]
            full = torch.tensor([prompt + ids])
            logits = model(input_ids=full).logits[0, len(prompt) - 1 : -1]
    chain = processors(warp)
    total = 0.0
    for j, token in enumerate(ids):
        scores = chain(None, logits[j][None].float())
        total += torch.log_softmax(scores, dim=-1)[0, token].item()
    return total


# ---------------------------------------------------------------- the warp itself


@pytest.mark.parametrize("warp", WARPS[1:], ids=WARP_IDS[1:])
def test_warp_matches_transformers_processors(warp):
    generator = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(64, 50, generator=generator)
    expected = processors(warp)(None, logits.clone())
    got = warp_logits(logits, **warp)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(got[finite], expected[finite])


def test_warp_keeps_ties_and_at_least_one_token():
    logits = torch.tensor([[1.0, 1.0, 0.0, -1.0], [5.0, 0.0, 0.0, 0.0]])
    kept = torch.isfinite(warp_logits(logits, top_k=1))
    assert kept.tolist() == [[True, True, False, False], [True, False, False, False]]
    kept = torch.isfinite(warp_logits(logits, top_p=1e-9))
    assert kept.sum(dim=-1).tolist() == [2, 1]


def test_inverse_cdf_draws_follow_the_probabilities():
    probs = torch.tensor([[0.5, 0.0, 0.2, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    log_probs = probs.log().repeat(20000, 1)
    torch.manual_seed(13)
    drawn = _draw(log_probs).view(20000, 2)
    assert drawn[:, 1].eq(4).all()
    counts = torch.bincount(drawn[:, 0], minlength=5)
    assert counts[1] == 0 and counts[4] == 0
    result = stats.chisquare(counts[[0, 2, 3]].tolist(), [10000, 4000, 6000])
    assert result.pvalue > 1e-3


# ---------------------------------------------------------------- exact normalisation


@pytest.mark.parametrize("warp", WARPS, ids=WARP_IDS)
def test_log_scores_of_every_output_sum_to_one(model_path, warp):
    lm = LMDistribution(model_path, length=4, **warp)
    outputs = all_outputs(lm.vocab_size, lm.eos_token_ids, 4)
    assert len(outputs) == 1 + 6 + 36 + 216 + 6**4
    for context in contexts_for(lm)[:2]:
        scores = lm.log_score(outputs, context)
        assert scores.dtype == torch.float64 and scores.shape == (len(outputs),)
        assert_log_probs_close(scores.logsumexp(0), 0.0, lm, "log of the total probability")
        if warp.get("top_k") or warp.get("top_p"):  # the warp removes some outputs entirely
            assert torch.isneginf(scores).sum() > 0
        else:
            assert torch.isfinite(scores).all()


def test_pad_token_is_an_ordinary_token_when_it_is_not_eos(gpt2_pad_path):
    lm = LMDistribution(gpt2_pad_path, length=3, top_p=0.9)
    assert lm.pad_token_id == PAD_ID != EOS_ID
    outputs = all_outputs(lm.vocab_size, lm.eos_token_ids, 3)
    assert any(PAD_ID in o for o in outputs)
    scores = lm.log_score(outputs, "a b")
    assert_log_probs_close(scores.logsumexp(0), 0.0, lm, "log of the total probability")


# ---------------------------------------------------------------- against an independent reference


@pytest.mark.parametrize("warp", WARPS, ids=WARP_IDS)
def test_log_score_matches_unpadded_reference(model_path, warp):
    lm = LMDistribution(model_path, length=4, **warp)
    torch.manual_seed(1)
    for context in contexts_for(lm):
        samples, _ = lm.sample(context, 6)
        scores = lm.log_score(samples, context)
        for sample, score in zip(samples, scores.tolist(), strict=True):
            reference = reference_log_prob(lm, context, sample.token_ids, warp)
            assert_log_probs_close(score, reference, lm)


def test_sampling_frequencies_match_log_scores(model_path):
    """Chi-square goodness of fit of 4000 samples against the enumerated probabilities."""
    lm = LMDistribution(model_path, length=2, top_p=0.9, temperature=1.3, batch_size=4000)
    context = contexts_for(lm)[1]
    outputs = all_outputs(lm.vocab_size, lm.eos_token_ids, 2)
    probs = lm.log_score(outputs, context).exp()
    torch.manual_seed(2)
    samples, _ = lm.sample(context, 4000)
    counts = Counter(s.token_ids for s in samples)
    assert all(probs[outputs.index(t)] > 0 for t in counts)  # nothing outside the warp's support
    observed, expected = [], []
    rest_observed, rest_expected = 0, 0.0
    for output, p in zip(outputs, probs.tolist(), strict=True):
        if p * 4000 >= 5:
            observed.append(counts[output])
            expected.append(p * 4000)
        else:
            rest_observed += counts[output]
            rest_expected += p * 4000
    if rest_expected > 0:
        observed.append(rest_observed)
        expected.append(rest_expected)
    assert len(observed) > 5
    scale = 4000 / sum(expected)  # the probabilities sum to 1 only within float32 rounding
    assert stats.chisquare(observed, [e * scale for e in expected]).pvalue > 1e-3


# ---------------------------------------------------------------- sample <-> log_score


@pytest.mark.parametrize("warp", WARPS, ids=WARP_IDS)
def test_sample_log_probs_are_what_log_score_recomputes(model_path, warp):
    lm = LMDistribution(model_path, length=4, **warp)
    torch.manual_seed(3)
    for context in contexts_for(lm):
        samples, log_probs = lm.sample(context, 40)
        assert len(samples) == 40 and log_probs.shape == (40,)
        assert log_probs.dtype == torch.float64 and torch.isfinite(log_probs).all()
        assert_log_probs_close(lm.log_score(samples, context), log_probs, lm)
        for sample in samples:
            ids = sample.token_ids
            assert isinstance(ids, tuple) and all(type(t) is int for t in ids)
            assert 1 <= len(ids) <= 4
            assert EOS_ID not in ids[:-1]  # stops at the first EOS
            assert ids[-1] == EOS_ID or len(ids) == 4  # ... or at the length cap
            assert sample.text == lm.tokenizer.decode(list(ids), skip_special_tokens=True)


def test_batched_and_unbatched_agree(model_path):
    lm = LMDistribution(model_path, length=4, top_k=5)
    contexts = contexts_for(lm)
    torch.manual_seed(4)
    samples, log_probs = lm.sample_batch(contexts, 7)
    assert len(samples) == 3 and all(len(g) == 7 for g in samples)
    assert log_probs.shape == (3, 7) and log_probs.dtype == torch.float64
    batched = lm.log_score_batch(samples, contexts)
    assert_log_probs_close(batched, log_probs, lm)
    one_by_one = torch.stack([lm.log_score(g, c) for g, c in zip(samples, contexts, strict=True)])
    assert_log_probs_close(batched, one_by_one, lm)
    # The same through chunks of two rows (sorted by length, then put back in order).
    small = LMDistribution(model_path, length=4, top_k=5, batch_size=2)
    assert_log_probs_close(small.log_score_batch(samples, contexts), batched, small)
    torch.manual_seed(5)
    chunked, chunked_lp = small.sample_batch(contexts, 5)
    assert_log_probs_close(small.log_score_batch(chunked, contexts), chunked_lp, small)


def test_empty_batch(gpt2_path):
    lm = LMDistribution(gpt2_path, length=3)
    samples, log_probs = lm.sample_batch([], 4)
    assert samples == [] and log_probs.shape == (0, 4)
    assert lm.log_score_batch([], []).shape == (0, 0)


# ---------------------------------------------------------------- EOS, BOS, padding


def test_eos_counts_and_what_follows_it_does_not(gpt2_path):
    lm = LMDistribution(gpt2_path, length=5)
    assert lm.pad_token_id == EOS_ID  # GPT-2 style: padding with EOS must not hide EOS
    a, b = 4, 5
    with_eos, without, after = lm.log_score([(a, EOS_ID), (a,), (a, EOS_ID, b, b)], "b")
    p_eos = reference_log_prob(lm, "b", (a, EOS_ID), {}) - reference_log_prob(lm, "b", (a,), {})
    assert_log_probs_close(with_eos - without, p_eos, lm)
    assert p_eos < -1e-3
    assert after == with_eos


def test_empty_context_starts_from_bos_or_else_eos(gpt2_path):
    lm = LMDistribution(gpt2_path, length=3)
    assert lm.bos_token_id == BOS_ID
    sample = (4, 5, EOS_ID)
    bos_first = lm.log_score([sample], "")
    assert_log_probs_close(bos_first, lm.log_score([sample], "<s>"), lm)  # "<s>": the BOS id
    model = AutoModelForCausalLM.from_pretrained(gpt2_path)
    tokenizer = build_tokenizer()
    tokenizer.bos_token = None
    model.config.bos_token_id = None
    model.generation_config.bos_token_id = None
    no_bos = LMDistribution(model, tokenizer, length=3)
    assert no_bos.bos_token_id == EOS_ID
    assert_log_probs_close(
        no_bos.log_score([sample], ""), no_bos.log_score([sample], "</s>"), no_bos
    )


def test_seq2seq_scores_from_the_decoder_start_token(t5_path):
    lm = LMDistribution(t5_path, length=4)
    assert lm.decoder_prefix == (PAD_ID,)
    sample = TextSample((4, PAD_ID, 6, EOS_ID), "")
    expected = reference_log_prob(lm, "a b", sample.token_ids, {})
    assert_log_probs_close(lm.log_score([sample], "a b")[0], expected, lm)


def test_forced_bos_is_part_of_the_decoder_prefix(tmp_path):
    """BART decodes from EOS, then a forced BOS (probability one): both are prefix, not sample."""
    lm = LMDistribution(build_bart(tmp_path / "bart"), length=3)
    assert lm.decoder_prefix == (EOS_ID, BOS_ID)
    outputs = all_outputs(lm.vocab_size, lm.eos_token_ids, 3)
    total = lm.log_score(outputs, "a b").logsumexp(0)
    assert_log_probs_close(total, 0.0, lm, "log of the total probability")
    torch.manual_seed(14)
    samples, log_probs = lm.sample("a b", 10)
    assert_log_probs_close(lm.log_score(samples, "a b"), log_probs, lm)
    beams, _ = lm.decode("a b", num_beams=2, num_return_sequences=2)
    assert all(len(b.token_ids) == 3 or b.token_ids[-1] == EOS_ID for b in beams)


def test_length_cap_and_max_new_tokens(gpt2_path):
    lm = LMDistribution(gpt2_path, max_new_tokens=2)
    assert lm.length == 2
    torch.manual_seed(6)
    samples, _ = lm.sample("a", 50)
    assert max(len(s.token_ids) for s in samples) == 2


# ---------------------------------------------------------------- gradients and freezing


@pytest.mark.parametrize("batched", [False, True])
def test_gradients_reach_the_parameters_only_when_asked(model_path, batched):
    lm = LMDistribution(model_path, length=4, freeze=False, top_k=6)
    contexts = contexts_for(lm)[1:]
    torch.manual_seed(7)
    samples, _ = lm.sample_batch(contexts, 5)

    def score(grad):
        if batched:
            return lm.log_score_batch(samples, contexts, grad=grad)
        return lm.log_score(samples[0], contexts[0], grad=grad)

    plain = score(False)
    assert not plain.requires_grad
    differentiable = score(True)
    assert differentiable.requires_grad and differentiable.dtype == torch.float64
    assert_log_probs_close(differentiable, plain, lm)
    differentiable.sum().backward()
    grads = [p.grad for p in lm.model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


def test_frozen_models_get_no_gradients(gpt2_path):
    lm = LMDistribution(gpt2_path, length=3)
    assert not any(p.requires_grad for p in lm.model.parameters())
    samples, _ = lm.sample("a", 4)
    scores = lm.log_score(samples, "a", grad=True)
    assert not scores.requires_grad
    assert all(p.grad is None for p in lm.model.parameters())
    lm.freeze(False)
    assert all(p.requires_grad for p in lm.model.parameters())
    assert lm.freeze() is lm
    assert not any(p.requires_grad for p in lm.model.parameters())


# ---------------------------------------------------------------- loading, wrappers, copies


def test_loaded_model_with_or_without_its_tokenizer(gpt2_path, t5_path):
    model = AutoModelForCausalLM.from_pretrained(gpt2_path)
    tokenizer = AutoTokenizer.from_pretrained(gpt2_path)
    by_path = LMDistribution(gpt2_path, length=3)
    given = LMDistribution(model, tokenizer, length=3)
    found = LMDistribution(model, length=3)  # tokenizer from the model's name_or_path
    sample = [(4, 5, EOS_ID)]
    for lm in (given, found):
        assert_log_probs_close(lm.log_score(sample, "a"), by_path.log_score(sample, "a"), lm)
    seq2seq = LMDistribution(AutoModelForSeq2SeqLM.from_pretrained(t5_path), length=3)
    assert seq2seq.is_seq2seq
    assert LMDistribution(t5_path, auto="seq2seq").is_seq2seq
    with pytest.raises(ValueError, match="auto='causal'"):
        LMDistribution(seq2seq.model, auto="causal")


# peft 0.21 reads a property that transformers 5 deprecates; not ours to fix.
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_peft_wrapped_model(gpt2_path):
    peft = require_extra("peft")
    model = AutoModelForCausalLM.from_pretrained(gpt2_path)
    config = peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=["c_attn"], lora_dropout=0.0, fan_in_fan_out=True
    )
    wrapped = peft.get_peft_model(model, config)
    lm = LMDistribution(wrapped, AutoTokenizer.from_pretrained(gpt2_path), length=4, freeze=False)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    torch.manual_seed(8)
    samples, log_probs = lm.sample_batch(["", "a b"], 5)
    scores = lm.log_score_batch(samples, ["", "a b"], grad=True)
    assert_log_probs_close(scores, log_probs, lm)
    scores.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in wrapped.parameters())
    lm.freeze()
    lm.freeze(False)  # back to the adapters only
    assert {n for n, p in wrapped.named_parameters() if p.requires_grad} == trainable


def test_accelerate_dispatched_model(gpt2_path):
    accelerate = require_extra("accelerate")
    model = AutoModelForCausalLM.from_pretrained(gpt2_path)
    dispatched = accelerate.dispatch_model(model, device_map={"": "cpu"})
    lm = LMDistribution(dispatched, AutoTokenizer.from_pretrained(gpt2_path), length=3)
    torch.manual_seed(9)
    samples, log_probs = lm.sample("a", 6)
    assert_log_probs_close(lm.log_score(samples, "a"), log_probs, lm)


def test_clone_is_independent_and_to_returns_self(gpt2_path):
    lm = LMDistribution(gpt2_path, length=3, top_k=4)
    copy = lm.clone()
    assert copy.model is not lm.model and copy.tokenizer is lm.tokenizer and copy.top_k == 4
    torch.manual_seed(12)
    samples, log_probs = lm.sample("a", 3)
    assert torch.equal(copy.log_score(samples, "a"), lm.log_score(samples, "a"))
    with torch.no_grad():
        for p in copy.model.parameters():
            p.mul_(1.5)
    assert not torch.equal(copy.log_score(samples, "a"), lm.log_score(samples, "a"))
    assert_log_probs_close(lm.log_score(samples, "a"), log_probs, lm)
    assert lm.to("cpu") is lm and lm.device == torch.device("cpu")


# ---------------------------------------------------------------- decoding after tuning


def test_greedy_decoding_follows_the_argmax(model_path):
    lm = LMDistribution(model_path, length=4, top_k=2)
    context = contexts_for(lm)[1]
    (greedy,), log_probs = lm.decode(context)
    expected: list[int] = []
    for _ in range(4):  # the argmax path, from the unpadded reference forward pass
        best = max(
            range(lm.vocab_size),
            key=lambda t: reference_log_prob(lm, context, (*expected, t), {}),
        )
        expected.append(best)
        if best == EOS_ID:
            break
    assert greedy.token_ids == tuple(expected)
    assert greedy.text == lm.tokenizer.decode(expected, skip_special_tokens=True)
    # Log-probabilities are under the model itself, not under the sampling warp.
    reference = reference_log_prob(lm, context, greedy.token_ids, {})
    assert_log_probs_close(log_probs[0], reference, lm)


def test_beam_search_and_nucleus_decoding(model_path):
    lm = LMDistribution(model_path, length=4)
    context = contexts_for(lm)[1]
    beams, beam_lp = lm.decode(context, num_beams=4, num_return_sequences=3)
    assert len(beams) == 3 and len({b.token_ids for b in beams}) == 3
    assert_log_probs_close(beam_lp, lm.log_score(beams, context), lm)
    torch.manual_seed(10)
    drawn, drawn_lp = lm.decode(context, do_sample=True, top_p=0.9, num_return_sequences=5)
    assert len(drawn) == 5 and drawn_lp.shape == (5,)
    assert all(len(s.token_ids) <= 4 for s in drawn)


# ---------------------------------------------------------------- bad input


def test_bad_input_gives_clear_errors(gpt2_path, t5_path, tmp_path):
    lm = LMDistribution(gpt2_path, length=3)
    seq2seq = LMDistribution(t5_path, length=3)
    with pytest.raises(ValueError, match="seq2seq model needs a non-empty context"):
        seq2seq.sample("", 2)
    with pytest.raises(ValueError, match="non-empty context"):
        seq2seq.log_score([(EOS_ID,)], "")
    for size in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="sampling_size"):
            lm.sample("a", size)
    with pytest.raises(ValueError, match="sampling_size"):
        lm.sample_batch(["a"], 0)
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        lm.log_score([TextSample((4, 99), "a z")], "a")
    with pytest.raises(ValueError, match="another tokenizer"):
        lm.log_score([TextSample((4, 5, EOS_ID), "x y")], "a")
    with pytest.raises(ValueError, match=r"samples\[0\]\[1\] has no tokens"):
        lm.log_score([(4,), ()], "a")
    with pytest.raises(ValueError, match="TextSample or a sequence"):
        lm.log_score(["a b"], "a")
    with pytest.raises(ValueError, match="not a string"):
        lm.sample_batch("abc", 2)
    with pytest.raises(ValueError, match=r"contexts\[0\] must be a string"):
        lm.log_score([(4,)], None)
    with pytest.raises(ValueError, match="same number of samples"):
        lm.log_score_batch([[(4,)], [(4,), (5,)]], ["a", "b"])
    with pytest.raises(ValueError, match="length mismatch"):
        lm.log_score_batch([[(4,)]], ["a", "b"])


def test_a_sample_from_another_tokenizer_is_refused(gpt2_path, tmp_path):
    other = LMDistribution(build_gpt2(tmp_path / "other", words=("x", "y", "z", "w", "v")))
    torch.manual_seed(11)
    samples, _ = other.sample("x", 20)
    lm = LMDistribution(gpt2_path, length=3)
    with pytest.raises(ValueError, match="another tokenizer"):
        lm.log_score(samples, "a")


def test_bad_construction_gives_clear_errors(gpt2_path, tmp_path):
    with pytest.raises(OSError, match="no such file or folder"):
        LMDistribution(str(tmp_path / "no-such-model"))
    with pytest.raises(OSError, match="Hugging Face Hub"):  # offline: no network touched
        LMDistribution("disco-tests/no-such-model", model_kwargs={"local_files_only": True})
    for bad in ({"temperature": 0.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LMDistribution(gpt2_path, **bad)
    with pytest.raises(ValueError, match="length"):
        LMDistribution(gpt2_path, length=0)
    with pytest.raises(ValueError, match="repetition_penalty"):
        LMDistribution(gpt2_path, repetition_penalty=1.2)
    with pytest.raises(ValueError, match="num_beams"):
        LMDistribution(gpt2_path, num_beams=2)
    with pytest.raises(ValueError, match="unsupported generation option 'stop_strings'"):
        LMDistribution(gpt2_path, stop_strings=["a"])
    LMDistribution(gpt2_path, do_sample=True, repetition_penalty=1.0)  # neutral values are fine


def test_safe_loading_defaults(gpt2_path, monkeypatch):
    import transformers

    assert (gpt2_path / "model.safetensors").exists()
    seen = {}
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(name, **kwargs):
        seen.update(kwargs)
        return original(name, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    LMDistribution(gpt2_path)
    assert seen["trust_remote_code"] is False


def test_log_probabilities_are_in_nats_of_the_warped_distribution(gpt2_path):
    """A warped single-token output scores log of its renormalised probability."""
    plain = LMDistribution(gpt2_path, length=1)
    hot = LMDistribution(gpt2_path, length=1, temperature=2.0)
    outputs = [(t,) for t in range(plain.vocab_size)]
    base = plain.log_score(outputs, "a")
    expected = torch.log_softmax(base / 2.0, dim=0)
    assert_log_probs_close(hot.log_score(outputs, "a"), expected, hot)
    assert_log_probs_close(base.logsumexp(0), 0.0, plain, "log of the total probability")


def test_default_model_is_embedded_and_saveable():
    lm = LMDistribution(length=20)
    samples, log_probs = lm.sample("", 4)
    assert_log_probs_close(lm.log_score(samples, ""), log_probs, lm)
    assert lm.to_spec() == {
        "model": None,
        "length": 20,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
    }
    loaded_elsewhere = LMDistribution(lm.model, lm.tokenizer)
    with pytest.raises(ValueError, match="save_pretrained"):
        loaded_elsewhere.to_spec()
