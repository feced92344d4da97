"""Loading a transformers model and its tokenizer, and reading their special tokens.

What ``LMDistribution`` needs before it can sample: the model (causal or seq2seq, plain or with
peft adapters) and tokenizer from a local folder or the Hub, the generation options it accepts,
and the token ids (EOS, padding, BOS, the decoder's start) read from the arguments, the
generation config, the model config and the tokenizer, in that order. Nothing here runs code
from a model folder unless ``trust_remote_code`` says so.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CAUSAL",
    "SEQ2SEQ",
    "SpecialTokens",
    "cache_keyword",
    "check_generate_kwargs",
    "forward_accepts",
    "load_model",
    "load_tokenizer",
    "open_model",
    "read_special_tokens",
    "tokenizer_source",
]

CAUSAL = "causal"
SEQ2SEQ = "seq2seq"

# Keyword arguments of ``generate`` that the sampler honours as given.
_TOKEN_KWARGS = (
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
)
# Keyword arguments of ``generate`` accepted only at the value that leaves the distribution as is:
# any other value would change the sampling distribution in a way ``log_score`` does not model.
_NEUTRAL_KWARGS: dict[str, tuple[Any, ...]] = {
    "do_sample": (True,),
    "num_beams": (1,),
    "num_return_sequences": (1,),
    "use_cache": (True,),
    "repetition_penalty": (1.0, None),
    "no_repeat_ngram_size": (0, None),
    "min_new_tokens": (0, None),
    "min_length": (0, None),
    "min_p": (0.0, None),
    "typical_p": (1.0, None),
    "epsilon_cutoff": (0.0, None),
    "eta_cutoff": (0.0, None),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
}
# Keyword arguments of ``from_pretrained`` that also apply to the config and the tokenizer.
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "proxies")


def forward_accepts(model: Any, name: str) -> bool:
    """Whether the (unwrapped) model's ``forward`` takes the keyword ``name``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        parameters = inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def cache_keyword(model: Any) -> str:
    """The keyword (and output field) that carries the key/value cache between decoding steps.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and goes in
    5.40); older releases only know ``past_key_values``.
    """
    return "cache" if forward_accepts(model, "cache") else "past_key_values"


def _looks_like_path(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def _load_error(what: str, name: str, err: BaseException) -> OSError:
    return OSError(
        f"cannot load the {what} {name!r}: it is not a local folder, and loading it from the "
        f"Hugging Face Hub failed (no network, or no such repository): {err}. Check the name, or "
        "download the model and pass its folder."
    )


def _check_local(what: str, name: str) -> None:
    if _looks_like_path(name) and not Path(name).expanduser().exists():
        raise OSError(f"cannot load the {what} {name!r}: no such file or folder")


def load_model(
    name: str, auto: Any, trust_remote_code: bool, model_kwargs: dict[str, Any]
) -> tuple[Any, bool]:
    """Load model ``name`` (a folder, a Hub name, or a folder of peft adapters).

    ``auto`` picks the class as in ``LMDistribution``; returns the model and whether it is
    seq2seq. A missing local folder or a failed download is one ``OSError`` saying which.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    _check_local("model", name)
    if _adapter_base(name) is not None:
        return _load_adapters(name, auto, trust_remote_code, model_kwargs)
    hub = {k: v for k, v in model_kwargs.items() if k in _HUB_KWARGS}
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError) as err:
        raise _load_error("model", name, err) from err
    if auto is None:
        is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        auto_class: Any = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    elif auto == CAUSAL:
        auto_class, is_seq2seq = AutoModelForCausalLM, False
    elif auto == SEQ2SEQ:
        auto_class, is_seq2seq = AutoModelForSeq2SeqLM, True
    elif hasattr(auto, "from_pretrained"):
        auto_class = auto
        is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    else:
        raise ValueError(
            f"auto must be 'causal', 'seq2seq', None or a transformers Auto class; got {auto!r}"
        )
    kwargs = {"trust_remote_code": trust_remote_code, **model_kwargs}
    try:
        model = auto_class.from_pretrained(name, config=config, **kwargs)
    except OSError as err:
        raise _load_error("model", name, err) from err
    return model, is_seq2seq


def _adapter_base(name: str) -> str | None:
    """The base model named by a local folder of peft adapters, else ``None``.

    Such a folder is what ``save_pretrained`` writes for a LoRA policy: adapters, no weights.
    """
    folder = Path(name).expanduser()
    config = folder / "adapter_config.json"
    if not config.is_file() or (folder / "config.json").is_file():
        return None
    try:
        base = json.loads(config.read_text())["base_model_name_or_path"]
    except (ValueError, KeyError) as err:
        raise OSError(f"cannot read the adapters' base model from {config}: {err}") from None
    if not base:
        raise OSError(f"{config} does not name its base model (base_model_name_or_path)")
    return str(base)


def _load_adapters(
    name: str, auto: Any, trust_remote_code: bool, model_kwargs: dict[str, Any]
) -> tuple[Any, bool]:
    try:
        import peft
    except ImportError:
        raise ImportError(
            f"{name!r} holds peft adapters; loading them needs peft: pip install 'disco-control[lora]'"
        ) from None
    base_name = _adapter_base(name)
    assert base_name is not None
    base, is_seq2seq = load_model(base_name, auto, trust_remote_code, model_kwargs)
    # trainable adapters: they are "the trainable set the model came with" (see freeze)
    return peft.PeftModel.from_pretrained(base, name, is_trainable=True), is_seq2seq


def tokenizer_source(name: str) -> str:
    """Where the tokenizer of model ``name`` is: the folder, or an adapter folder's base."""
    base = _adapter_base(name)
    if base is not None and not (Path(name).expanduser() / "tokenizer_config.json").is_file():
        return base
    return name


def load_tokenizer(name: str, trust_remote_code: bool, model_kwargs: dict[str, Any]) -> Any:
    """Load the tokenizer ``name``, with the Hub options among ``model_kwargs``."""
    from transformers import AutoTokenizer

    _check_local("tokenizer", name)
    hub = {k: v for k, v in model_kwargs.items() if k in _HUB_KWARGS}
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError) as err:
        raise _load_error("tokenizer", name, err) from err


def open_model(
    model: Any, tokenizer: Any, auto: Any, trust_remote_code: bool, model_kwargs: dict[str, Any]
) -> tuple[Any, Any, bool]:
    """The model, its tokenizer and whether it is seq2seq, from names or loaded objects.

    A name or folder is loaded (its tokenizer too, unless given); a model passed in must agree
    with ``auto`` and brings its tokenizer's name in its config unless one is given.
    """
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        model, is_seq2seq = load_model(name, auto, trust_remote_code, model_kwargs)
        if tokenizer is None:
            tokenizer = tokenizer_source(name)
    else:
        is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
        if auto in (CAUSAL, SEQ2SEQ) and (auto == SEQ2SEQ) != is_seq2seq:
            kind = SEQ2SEQ if is_seq2seq else CAUSAL
            raise ValueError(f"auto={auto!r}, but the model passed in is {kind}")
        if tokenizer is None:
            tokenizer = getattr(model.config, "_name_or_path", None) or getattr(
                model, "name_or_path", None
            )
            if not tokenizer:
                raise ValueError("pass the tokenizer of a model that was loaded in memory")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(os.fspath(tokenizer), trust_remote_code, model_kwargs)
    return model, tokenizer, is_seq2seq


def _ids(value: Any) -> list[int]:
    """Turn a token id, or a list of them (as configs hold them), into a list."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    return [int(v) for v in value]


def _first(*candidates: Any) -> int | None:
    for candidate in candidates:
        ids = _ids(candidate)
        if ids:
            return ids[0]
    return None


def check_generate_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The special token ids among ``generate``-style keyword arguments; the rest are refused.

    ``max_new_tokens`` passes (the caller reads it); an option at its neutral value passes; any
    option that would change the sampling distribution is a ``ValueError``.
    """
    tokens: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _TOKEN_KWARGS:
            tokens[key] = value
        elif key == "max_new_tokens":
            continue
        elif key in _NEUTRAL_KWARGS:
            if value not in _NEUTRAL_KWARGS[key]:
                raise ValueError(
                    f"{key}={value!r} would change the sampling distribution in a way "
                    "log_score does not reproduce; LMDistribution samples exactly with "
                    "temperature, top_k and top_p (use decode() for other decoding methods)"
                )
        elif key in ("temperature", "top_k", "top_p", "length"):
            raise ValueError(f"{key} given twice")
        else:
            raise ValueError(
                f"unsupported generation option {key!r}: LMDistribution samples exactly with "
                "temperature, top_k and top_p, and accepts max_new_tokens and the special "
                f"token ids {', '.join(_TOKEN_KWARGS)} (use decode() for other decoding methods)"
            )
    return tokens


@dataclass(frozen=True)
class SpecialTokens:
    """The token ids sampling and scoring rely on."""

    vocab_size: int
    eos_token_ids: tuple[int, ...]
    # Padding is told apart by the attention mask, never by this id: any id will do.
    pad_token_id: int
    bos_token_id: int | None
    decoder_prefix: tuple[int, ...]


def _vocab_size(model: Any) -> int:
    """Rows of the output head (they may exceed the tokenizer's size), else the config's."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text_config.vocab_size)


def read_special_tokens(
    model: Any, tokenizer: Any, tokens: dict[str, Any], is_seq2seq: bool
) -> SpecialTokens:
    """Read the special token ids: ``tokens`` (the caller's), then the model's and tokenizer's.

    EOS: every id of the generation config (else the model config) plus the tokenizer's. Ids
    outside the vocabulary are ignored. A seq2seq model must have a decoder start token.
    """
    config = model.config
    gen = getattr(model, "generation_config", None)
    vocab_size = _vocab_size(model)

    def in_vocab(ids: list[int]) -> list[int]:
        return [i for i in ids if 0 <= i < vocab_size]

    if "eos_token_id" in tokens:
        eos = in_vocab(_ids(tokens["eos_token_id"]))
    else:
        eos = in_vocab(
            _ids(getattr(gen, "eos_token_id", None)) or _ids(getattr(config, "eos_token_id", None))
        )
        eos += [i for i in in_vocab(_ids(getattr(tokenizer, "eos_token_id", None))) if i not in eos]
    eos_token_ids = tuple(dict.fromkeys(eos))
    pad = _first(
        in_vocab(_ids(tokens.get("pad_token_id"))),
        in_vocab(_ids(getattr(tokenizer, "pad_token_id", None))),
        in_vocab(_ids(getattr(gen, "pad_token_id", None))),
        eos_token_ids,
    )
    bos = _first(
        in_vocab(_ids(tokens.get("bos_token_id"))),
        in_vocab(_ids(getattr(gen, "bos_token_id", None))),
        in_vocab(_ids(getattr(config, "bos_token_id", None))),
        in_vocab(_ids(getattr(tokenizer, "bos_token_id", None))),
        eos_token_ids,
    )
    decoder_prefix: tuple[int, ...] = ()
    if is_seq2seq:
        start = _first(
            tokens.get("decoder_start_token_id"),
            getattr(gen, "decoder_start_token_id", None),
            getattr(config, "decoder_start_token_id", None),
        )
        if start is None:
            raise ValueError(
                "the seq2seq model has no decoder_start_token_id; pass decoder_start_token_id="
            )
        forced = _first(
            tokens.get("forced_bos_token_id"), getattr(gen, "forced_bos_token_id", None)
        )
        decoder_prefix = (start,) if forced is None else (start, forced)
    return SpecialTokens(vocab_size, eos_token_ids, 0 if pad is None else pad, bos, decoder_prefix)
