"""The shipped default model loads offline, writes short sentences ending in EOS, and knows KJV."""

import math
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from disco.models import default_model_path

LENGTH_CAP = 40

# Sentences from passages held out of training (every 50th passage of the KJV database) that do
# not also occur in the training sentences.
HELD_OUT = [
    "And dost thou restrain wisdom to thyself?",
    "And said unto Jacob, Give me children, or else I die.",
    "Now when we had discovered Cyprus, we left it on the left hand, and sailed into Syria.",
]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tok


def test_files_are_shipped_and_small():
    path = default_model_path()
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
        assert (path / name).is_file(), name
    assert (path / "README.md").is_file()
    assert (path / "model.safetensors").stat().st_size < 12 * 2**20


def test_special_tokens(model_and_tokenizer):
    model, tok = model_and_tokenizer
    assert tok.bos_token_id == tok.eos_token_id == model.config.eos_token_id
    assert model.config.bos_token_id == tok.bos_token_id
    assert tok.pad_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id
    assert len(tok) == model.config.vocab_size
    # No special token is added on encoding, and text round-trips.
    text = HELD_OUT[2]
    ids = tok(text)["input_ids"]
    assert tok.eos_token_id not in ids
    assert tok.decode(ids) == text


def _mean_nll(model, tok, text: str) -> float:
    ids = [tok.bos_token_id, *tok(text)["input_ids"], tok.eos_token_id]
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].double(), dim=-1)
    return -float(logp.gather(1, x[0, 1:, None]).mean())


def test_held_out_likelihood_beats_uniform_and_shuffled(model_and_tokenizer):
    model, tok = model_and_tokenizer
    uniform = math.log(model.config.vocab_size)
    for text in HELD_OUT:
        nll = _mean_nll(model, tok, text)
        # A uniform model pays log V ≈ 8.3 nats a token; the trained one pays 3.7 to 4.7.
        assert nll < uniform - 3.0, (text, nll)
        # Word order matters: the same words reversed are much less likely.
        reversed_text = " ".join(reversed(text[:-1].split())) + text[-1]
        assert nll < _mean_nll(model, tok, reversed_text) - 1.0, text


def test_samples_from_empty_context_are_short_sentences(model_and_tokenizer):
    model, tok = model_and_tokenizer
    torch.manual_seed(0)
    n = 16
    start = torch.full((n, 1), tok.bos_token_id)
    with torch.no_grad():
        out = model.generate(
            start,
            attention_mask=torch.ones_like(start),
            do_sample=True,
            top_k=0,
            top_p=1.0,
            max_new_tokens=LENGTH_CAP,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    new = out[:, 1:].tolist()
    finished = [seq[: seq.index(tok.eos_token_id)] for seq in new if tok.eos_token_id in seq]
    assert len(finished) >= n - 1  # nearly every sample stops with EOS within the cap
    words = []
    for seq in finished:
        text = tok.decode(seq)
        assert text.strip()
        words += text.split()
    # Mostly real words: letters (and apostrophes) with at most trailing punctuation.
    wordlike = [w for w in words if re.fullmatch(r"[A-Za-z']+[.,;:?!)]?", w)]
    assert len(wordlike) >= 0.9 * len(words)
