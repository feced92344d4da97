"""Tiny transformers models and tokenizers built from configs, for tests (no Hub access).

Each builder saves a model and its tokenizer with ``save_pretrained`` into a folder and returns
that folder, so tests load them back by path exactly as a user would load a real checkpoint.
The vocabulary is a handful of words plus special tokens, small enough to enumerate every
output of a short length cap.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

SPECIAL = ("<pad>", "<s>", "</s>", "<unk>")
WORDS = ("a", "b", "c")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def limit_threads() -> None:
    """Keep torch on one thread: the test machine has two cores shared with other jobs."""
    torch.set_num_threads(1)


def build_tokenizer(words: Sequence[str] = WORDS, pad_is_eos: bool = False) -> object:
    """A word-level fast tokenizer over ``SPECIAL + words`` (whitespace pre-tokenised)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate((*SPECIAL, *words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>" if pad_is_eos else "<pad>",
    )


def _build(
    folder: Path,
    words: Sequence[str],
    seed: int,
    make_model: Callable[[int], torch.nn.Module],
    pad_is_eos: bool = False,
) -> Path:
    """Seeded ``make_model(vocab_size)`` with spread outputs, saved with its tokenizer."""
    limit_threads()
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(words, pad_is_eos=pad_is_eos)
    model = make_model(len(SPECIAL) + len(words))
    _scale_output(model)
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)  # type: ignore[operator]
    tokenizer.save_pretrained(folder)
    return folder


def build_gpt2(
    folder: Path,
    words: Sequence[str] = WORDS,
    seed: int = 0,
    pad_is_eos: bool = True,
    n_embd: int = 16,
    n_layer: int = 2,
) -> Path:
    """Save a tiny random GPT-2 (pad token = EOS, as in the real GPT-2) with its tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def make(vocab_size: int) -> torch.nn.Module:
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=64,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=2,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=EOS_ID if pad_is_eos else PAD_ID,
        )
        return GPT2LMHeadModel(config)

    return _build(folder, words, seed, make, pad_is_eos=pad_is_eos)


def build_t5(folder: Path, words: Sequence[str] = WORDS, seed: int = 0) -> Path:
    """Save a tiny random T5 (decoder starts from the pad token, as in the real T5)."""
    from transformers import T5Config, T5ForConditionalGeneration

    def make(vocab_size: int) -> torch.nn.Module:
        config = T5Config(
            vocab_size=vocab_size,
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=PAD_ID,
            eos_token_id=EOS_ID,
            decoder_start_token_id=PAD_ID,
        )
        return T5ForConditionalGeneration(config)

    return _build(folder, words, seed, make)


def build_bart(folder: Path, words: Sequence[str] = WORDS, seed: int = 0) -> Path:
    """Save a tiny random BART: decoding starts from EOS and then a forced BOS, as in BART."""
    from transformers import BartConfig, BartForConditionalGeneration

    def make(vocab_size: int) -> torch.nn.Module:
        config = BartConfig(
            vocab_size=vocab_size,
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
            pad_token_id=PAD_ID,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            decoder_start_token_id=EOS_ID,
            forced_bos_token_id=BOS_ID,
            forced_eos_token_id=None,
        )
        model = BartForConditionalGeneration(config)
        model.generation_config.forced_bos_token_id = BOS_ID
        return model

    return _build(folder, words, seed, make)


def _scale_output(model: torch.nn.Module) -> None:
    """Spread the next-token distributions so that warps (top-k, top-p) change them visibly."""
    with torch.no_grad():
        head = model.get_output_embeddings()  # type: ignore[operator]
        if getattr(model.config, "scale_decoder_outputs", False):
            # T5 always ties its head to the shared embeddings and scales by d_model ** -0.5.
            head.weight.normal_(0.0, 1.0)
            return
        if model.config.is_encoder_decoder:  # type: ignore[union-attr]
            # BART ties head, encoder and decoder embeddings to one matrix: keep them tied.
            head.weight.normal_(0.0, 2.0 / head.weight.shape[1] ** 0.5)
            return
        model.config.tie_word_embeddings = False  # type: ignore[union-attr]
        head.weight = torch.nn.Parameter(head.weight.detach().clone())
        head.weight.normal_(0.0, 2.0 / head.weight.shape[1] ** 0.5)


def all_outputs(vocab_size: int, eos_ids: Sequence[int], length: int) -> list[tuple[int, ...]]:
    """Every possible output with a length cap: EOS-terminated of length <= cap, or cap-long."""
    eos = set(eos_ids)
    others = [t for t in range(vocab_size) if t not in eos]
    outputs: list[tuple[int, ...]] = []
    for n in range(length):
        for prefix in itertools.product(others, repeat=n):
            outputs.extend((*prefix, e) for e in sorted(eos))
    outputs.extend(itertools.product(others, repeat=length))
    return outputs
