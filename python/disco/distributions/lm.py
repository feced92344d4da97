"""Language models as distributions over their outputs (DESIGN §7).

``LMDistribution`` wraps a Hugging Face causal or seq2seq model. A sample is the sequence of
tokens the model emits after the context, up to and including the first EOS, or cut off at the
length cap. Its log-probability is the sum of the token log-probabilities under the distribution
actually sampled from: temperature, top-k and top-p are part of that distribution, and
``log_score`` applies the same warps, so that for every sample ``log_score`` recomputes the
log-probability ``sample`` returned.

Sampling runs its own cached decoding loop over the model's public ``forward`` (the same warp
function serves sampling and scoring, so the two cannot drift apart); scoring is one forward pass
over the padded batch, differentiable when asked.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import numbers
import os
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from disco.compat import lm_arguments
from disco.distributions.base import BaseDistribution, TextSample

__all__ = ["LMDistribution", "warp_logits"]

_CAUSAL = "causal"
_SEQ2SEQ = "seq2seq"

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
# Dividing logits (of magnitude up to ~1e3) by less than this overflows float32.
MIN_TEMPERATURE = 1e-4
# Keyword arguments of ``from_pretrained`` that also apply to the config and the tokenizer.
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "proxies")


def _default_model() -> str:
    """The embedded default model's folder (a small GPT-2 trained on the KJV; no download)."""
    from disco.models import default_model_path

    return str(default_model_path())


@dataclass(frozen=True)
class _Warp:
    """The sampling warps, applied in the order transformers applies its logits processors."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0


_IDENTITY = _Warp()


def _kept_mask(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor | None:
    """Which tokens top-k then top-p keep (``None``: all); ``scores`` are temperature-scaled."""
    vocab = scores.shape[-1]
    keep: torch.Tensor | None = None
    with torch.no_grad():
        scores = scores.detach()
        if 0 < top_k < vocab:
            kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
            keep = scores >= kth
            scores = scores.masked_fill(~keep, -math.inf)
        if top_p < 1.0:
            ascending = torch.sort(scores, dim=-1).values
            cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
            # Index of the first token whose cumulative mass (from the least likely) exceeds
            # 1 - top_p: it and every more likely token are kept.
            first = (cumulative <= 1.0 - top_p).sum(dim=-1, keepdim=True).clamp(max=vocab - 1)
            threshold = ascending.gather(-1, first)
            kept_p = scores >= threshold
            keep = kept_p if keep is None else keep & kept_p
    return keep


def warp_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Warp next-token logits (last axis) as sampling does: temperature, then top-k, then top-p.

    Removed tokens get ``-inf``. Top-k keeps every token whose logit is at least the k-th
    largest; top-p keeps the most likely tokens whose probabilities first sum past ``top_p``
    (counted, as in transformers, by removing the least likely while their total is at most
    ``1 - top_p``). Ties at a threshold are all kept, so the kept set never depends on the order
    of a sort; without ties this is exactly transformers' ``TemperatureLogitsWarper``,
    ``TopKLogitsWarper`` and ``TopPLogitsWarper`` with ``min_tokens_to_keep=1``. Gradients flow
    through the kept logits; the kept set itself is computed without gradient.
    """
    if temperature != 1.0:
        logits = logits / temperature
    keep = _kept_mask(logits, top_k, top_p)
    return logits if keep is None else logits.masked_fill(~keep, -math.inf)


def _token_log_probs(logits: torch.Tensor, targets: torch.Tensor, warp: _Warp) -> torch.Tensor:
    """Log-probability of each target token under the warped softmax of ``logits`` (float32+)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if not warp.is_identity:
        logits = warp_logits(logits, warp.temperature, warp.top_k, warp.top_p)
    # log_softmax then gather: one fused pass on GPU, and faster than logsumexp on CPU.
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _forward_accepts(model: Any, name: str) -> bool:
    """Whether the (unwrapped) model's ``forward`` takes the keyword ``name``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        parameters = inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def _cache_keyword(model: Any) -> str:
    """The keyword (and output field) that carries the key/value cache between decoding steps.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and goes in
    5.40); older releases only know ``past_key_values``.
    """
    return "cache" if _forward_accepts(model, "cache") else "past_key_values"


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


def _load_model(
    name: str, auto: Any, trust_remote_code: bool, model_kwargs: dict[str, Any]
) -> tuple[Any, bool]:
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
    elif auto == _CAUSAL:
        auto_class, is_seq2seq = AutoModelForCausalLM, False
    elif auto == _SEQ2SEQ:
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
    base, is_seq2seq = _load_model(base_name, auto, trust_remote_code, model_kwargs)
    # trainable adapters: they are "the trainable set the model came with" (see freeze)
    return peft.PeftModel.from_pretrained(base, name, is_trainable=True), is_seq2seq


def _tokenizer_source(name: str) -> str:
    """Where the tokenizer of model ``name`` is: the folder, or an adapter folder's base."""
    base = _adapter_base(name)
    if base is not None and not (Path(name).expanduser() / "tokenizer_config.json").is_file():
        return base
    return name


def _load_tokenizer(name: str, trust_remote_code: bool, model_kwargs: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    _check_local("tokenizer", name)
    hub = {k: v for k, v in model_kwargs.items() if k in _HUB_KWARGS}
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **hub)
    except (OSError, ValueError) as err:
        raise _load_error("tokenizer", name, err) from err


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


def _check_size(sampling_size: Any) -> int:
    if isinstance(sampling_size, bool) or not isinstance(sampling_size, int):
        raise ValueError(f"sampling_size must be a positive integer; got {sampling_size!r}")
    if sampling_size < 1:
        raise ValueError(f"sampling_size must be a positive integer; got {sampling_size}")
    return sampling_size


class LMDistribution(BaseDistribution):
    """A causal or seq2seq transformers language model as a distribution over its outputs.

    Parameters
    ----------
    model
        A local folder, a Hugging Face Hub name, or an already-loaded model (possibly wrapped by
        peft or dispatched by accelerate). Required for now.
    tokenizer
        The tokenizer, or its folder/Hub name; by default loaded from the model's folder or name.
    auto
        ``"causal"``, ``"seq2seq"``, a transformers Auto class, or ``None`` to read it from the
        model's config (``is_encoder_decoder``).
    freeze
        Make every parameter non-trainable (the base model of a target is never tuned).
    length
        The length cap: at most this many tokens per sample (EOS included).
    device
        Where to run. ``"auto"``: a model loaded here goes to CUDA when available, else CPU; a
        model passed in stays where it is.
    temperature, top_k, top_p
        Sampling warps, part of the distribution (``log_score`` applies them too).
        ``top_k=0`` and ``top_p=1.0`` switch them off.
    trust_remote_code
        Allow a Hub repository's own Python code to run (off by default).
    batch_size
        At most this many sequences per forward pass, so memory stays bounded.
    model_kwargs
        Extra keyword arguments for ``from_pretrained`` (``dtype``, ``revision``,
        ``local_files_only`` …) when ``model`` is a name.
    **generate_kwargs
        The original disco's ``network`` (for ``model``) and ``nature`` (for ``auto``);
        ``max_new_tokens`` (same as ``length``), the token ids ``eos_token_id``,
        ``pad_token_id``, ``bos_token_id``, ``decoder_start_token_id``, ``forced_bos_token_id``,
        and generation options at their neutral values. Options that would change the
        distribution in other ways (repetition penalty, beams …) raise ``ValueError``; use
        :meth:`decode` for those decoding methods.
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        auto: Any = None,
        freeze: bool = True,
        length: int = 40,
        device: str | torch.device = "auto",
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        trust_remote_code: bool = False,
        *,
        batch_size: int = 64,
        model_kwargs: dict[str, Any] | None = None,
        **generate_kwargs: Any,
    ) -> None:
        model, auto = lm_arguments(model, auto, generate_kwargs)  # network=, nature= (original)
        self._is_default = model is None
        self.model_name: str | None = (
            os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        )
        if model is None:
            model = _default_model()
        model_kwargs = dict(model_kwargs or {})
        tokens = self._check_generate_kwargs(generate_kwargs)
        if "max_new_tokens" in generate_kwargs:
            length = generate_kwargs["max_new_tokens"]
        self.length = self._check_length(length)
        self.warp = self._check_warp(temperature, top_k, top_p)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        self.batch_size = batch_size

        loaded_here = isinstance(model, (str, os.PathLike))
        if loaded_here:
            name = os.fspath(model)
            model, self.is_seq2seq = _load_model(name, auto, trust_remote_code, model_kwargs)
            if tokenizer is None:
                tokenizer = _tokenizer_source(name)
        else:
            self.is_seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
            if auto in (_CAUSAL, _SEQ2SEQ) and (auto == _SEQ2SEQ) != self.is_seq2seq:
                kind = _SEQ2SEQ if self.is_seq2seq else _CAUSAL
                raise ValueError(f"auto={auto!r}, but the model passed in is {kind}")
            if tokenizer is None:
                tokenizer = getattr(model.config, "_name_or_path", None) or getattr(
                    model, "name_or_path", None
                )
                if not tokenizer:
                    raise ValueError("pass the tokenizer of a model that was loaded in memory")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = _load_tokenizer(os.fspath(tokenizer), trust_remote_code, model_kwargs)
        self.model = model
        self.tokenizer = tokenizer

        self.model.eval()
        self._trainable = [p.requires_grad for p in self.model.parameters()]
        if freeze:
            self.freeze()
        self._place(device, loaded_here)
        self._read_special_tokens(tokens)
        self._use_position_ids = not self.is_seq2seq and _forward_accepts(model, "position_ids")
        self._use_logits_to_keep = not self.is_seq2seq and _forward_accepts(model, "logits_to_keep")

    # ------------------------------------------------------------------ construction helpers

    @staticmethod
    def _check_generate_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
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

    @staticmethod
    def _check_length(length: Any) -> int:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive integer; got {length!r}")
        return length

    @staticmethod
    def _check_warp(temperature: Any, top_k: Any, top_p: Any) -> _Warp:
        if not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (temperature, top_p)
        ):
            raise ValueError(
                f"temperature and top_p must be numbers; got {temperature!r}, {top_p!r}"
            )
        temperature, top_p = float(temperature), float(top_p)
        if not (temperature >= MIN_TEMPERATURE and math.isfinite(temperature)):
            raise ValueError(
                f"temperature must be finite and at least {MIN_TEMPERATURE:g} (below, the warped "
                f"logits overflow); got {temperature} (for greedy decoding use decode())"
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer (0: off); got {top_k!r}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1: off); got {top_p}")
        return _Warp(temperature, top_k, top_p)

    def _place(self, device: str | torch.device, loaded_here: bool) -> None:
        device_map = getattr(self.model, "hf_device_map", None)
        if isinstance(device, str) and device == "auto":
            if loaded_here and not device_map:
                self.model.to("cuda" if torch.cuda.is_available() else "cpu")
            return
        if device_map and len(set(device_map.values())) > 1:
            raise ValueError(
                "the model is dispatched over several devices (accelerate); pass device='auto' "
                "to leave it where it is"
            )
        self.model.to(device)

    def _read_special_tokens(self, tokens: dict[str, Any]) -> None:
        model, tok = self.model, self.tokenizer
        config = model.config
        gen = getattr(model, "generation_config", None)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        weight = getattr(head, "weight", None)
        if weight is not None:
            self.vocab_size = int(weight.shape[0])
        else:
            text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
            self.vocab_size = int(text_config.vocab_size)

        def in_vocab(ids: list[int]) -> list[int]:
            return [i for i in ids if 0 <= i < self.vocab_size]

        if "eos_token_id" in tokens:
            eos = in_vocab(_ids(tokens["eos_token_id"]))
        else:
            eos = in_vocab(
                _ids(getattr(gen, "eos_token_id", None))
                or _ids(getattr(config, "eos_token_id", None))
            )
            eos += [i for i in in_vocab(_ids(getattr(tok, "eos_token_id", None))) if i not in eos]
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(eos))
        pad = _first(
            in_vocab(_ids(tokens.get("pad_token_id"))),
            in_vocab(_ids(getattr(tok, "pad_token_id", None))),
            in_vocab(_ids(getattr(gen, "pad_token_id", None))),
            self.eos_token_ids,
        )
        # Padding is told apart by the attention mask, never by this id: any id will do.
        self.pad_token_id: int = 0 if pad is None else pad
        bos = _first(
            in_vocab(_ids(tokens.get("bos_token_id"))),
            in_vocab(_ids(getattr(gen, "bos_token_id", None))),
            in_vocab(_ids(getattr(config, "bos_token_id", None))),
            in_vocab(_ids(getattr(tok, "bos_token_id", None))),
            self.eos_token_ids,
        )
        self.bos_token_id: int | None = bos
        self.decoder_prefix: tuple[int, ...] = ()
        if self.is_seq2seq:
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
            self.decoder_prefix = (start,) if forced is None else (start, forced)

    # ------------------------------------------------------------------ public API

    @property
    def device(self) -> torch.device:
        """The device inputs go to (that of the input embeddings)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def temperature(self) -> float:
        """The sampling temperature."""
        return self.warp.temperature

    @property
    def top_k(self) -> int:
        """Top-k (0: off)."""
        return self.warp.top_k

    @property
    def top_p(self) -> float:
        """Top-p (1.0: off)."""
        return self.warp.top_p

    def to_spec(self) -> dict[str, Any]:
        """How to rebuild this distribution (for saving EBMs): model path or name and warps.

        ``model`` is ``None`` for the embedded default model. A model passed in as an object
        cannot be described by a path: save it with ``save_pretrained`` and load it from there.
        """
        if self.model_name is None and not self._is_default:
            raise ValueError(
                "this LMDistribution wraps a model object, not a path: save it with "
                "save_pretrained() and build the distribution from that folder to save it"
            )
        return {
            "model": self.model_name,
            "length": self.length,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
        }

    def freeze(self, frozen: bool = True) -> LMDistribution:
        """Make every parameter non-trainable, or (``frozen=False``) trainable again.

        Unfreezing restores the trainable set the model came with (for a peft model: its
        adapters); if it came fully frozen, every parameter becomes trainable.
        """
        parameters = list(self.model.parameters())
        if frozen:
            for p in parameters:
                p.requires_grad_(False)
        else:
            restore = self._trainable if any(self._trainable) else [True] * len(parameters)
            for p, trainable in zip(parameters, restore, strict=True):
                p.requires_grad_(trainable)
        return self

    def clone(self) -> LMDistribution:
        """Return an independent copy: its own parameters, the same tokenizer and settings."""
        new = copy.copy(self)
        new.model = copy.deepcopy(self.model)
        return new

    def without_adapters(self) -> BaseDistribution:
        """The base model under a LoRA/peft policy: the same weights with the adapters disabled.

        Use it as the base of the target when tuning a peft-wrapped policy, so that one copy of
        the model serves both: ``target = policy.without_adapters() * ExponentialScorer(...)``.
        """
        if not callable(getattr(self.model, "disable_adapter", None)):
            raise ValueError(
                "without_adapters() needs a peft-wrapped model (one with disable_adapter())"
            )
        return _AdaptersDisabled(self)

    def to(self, device: str | torch.device) -> LMDistribution:
        """Move the model to ``device``; return ``self``."""
        self.model.to(device)
        return self

    def sample(
        self, context: str = "", sampling_size: int = 32
    ) -> tuple[list[TextSample], torch.Tensor]:
        """Draw ``sampling_size`` outputs for ``context``; return them and their log-probabilities.

        The log-probabilities (1-D float64) are those of the warped distribution sampled from.
        """
        samples, log_probs = self.sample_batch([context], sampling_size)
        return samples[0], log_probs[0]

    def sample_batch(
        self, contexts: Sequence[str], sampling_size: int = 32
    ) -> tuple[list[list[TextSample]], torch.Tensor]:
        """Draw ``sampling_size`` outputs for each context, batched across contexts.

        Returns one list of samples per context and their log-probabilities as a ``C x n``
        float64 tensor.
        """
        n = _check_size(sampling_size)
        prompts = self._encode_contexts(contexts)
        rows = [c for c in range(len(prompts)) for _ in range(n)]
        ids: list[tuple[int, ...]] = []
        log_probs: list[torch.Tensor] = []
        for chunk in _chunks(rows, self.batch_size):
            chunk_ids, chunk_lp = self._sample_rows(prompts, chunk)
            ids.extend(chunk_ids)
            log_probs.append(chunk_lp)
        flat = self._text_samples(ids)
        samples = [flat[c * n : (c + 1) * n] for c in range(len(prompts))]
        if not log_probs:
            return samples, torch.empty(0, n, dtype=torch.float64, device=self.device)
        return samples, torch.cat(log_probs).double().view(len(prompts), n)

    def log_score(
        self, samples: Sequence[TextSample | Sequence[int]], context: str = "", grad: bool = False
    ) -> torch.Tensor:
        """Log-probabilities (1-D float64) of ``samples`` given ``context``.

        Tokens after the first EOS are ignored; a sample without EOS counts as cut off by the
        length cap. Under top-k / top-p a sample using a removed token scores ``-inf``. With
        ``grad=True`` the result is differentiable with respect to the model's parameters.
        """
        return self.log_score_batch([samples], [context], grad=grad)[0]

    def log_score_batch(
        self,
        samples: Sequence[Sequence[TextSample | Sequence[int]]],
        contexts: Sequence[str],
        grad: bool = False,
    ) -> torch.Tensor:
        """Log-probabilities of ``samples[c]`` given ``contexts[c]``, as a ``C x n`` tensor."""
        if isinstance(contexts, str):
            raise ValueError("contexts must be a sequence of strings, not a string")
        if len(samples) != len(contexts):
            raise ValueError(
                f"length mismatch: {len(samples)} groups of samples for {len(contexts)} contexts"
            )
        sizes = {len(group) for group in samples}
        if len(sizes) > 1:
            raise ValueError(f"every context needs the same number of samples; got {sorted(sizes)}")
        n = sizes.pop() if sizes else 0
        prompts = self._encode_contexts(contexts)
        rows = [
            (c, self._sample_ids(s, f"samples[{c}][{i}]"))
            for c, g in enumerate(samples)
            for i, s in enumerate(g)
        ]
        self._check_texts(samples)
        scores = self._score_rows(prompts, rows, self.warp, grad)
        return scores.view(len(contexts), n)

    def decode(
        self, context: str = "", **generate_kwargs: Any
    ) -> tuple[list[TextSample], torch.Tensor]:
        """Decode ``context`` with any method of ``model.generate`` (greedy by default).

        ``num_beams`` gives beam search, ``do_sample=True`` with ``top_k`` / ``top_p`` gives
        top-k or nucleus sampling; ``max_new_tokens`` defaults to the length cap. Returns the
        outputs (cut after their first EOS) and their log-probabilities under the model itself
        (no temperature or truncation), the quantity that stays meaningful for every method.
        """
        (prompt,) = self._encode_contexts([context])
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.length,
            "do_sample": False,
            "pad_token_id": self.pad_token_id,
        }
        if self.eos_token_ids:
            kwargs["eos_token_id"] = list(self.eos_token_ids)
        if self.is_seq2seq:
            kwargs["decoder_start_token_id"] = self.decoder_prefix[0]
            if len(self.decoder_prefix) > 1:  # generate counts the forced token as a new one
                kwargs["forced_bos_token_id"] = self.decoder_prefix[1]
                kwargs["max_new_tokens"] = self.length + 1
        kwargs.update(generate_kwargs)
        inputs = torch.tensor([prompt], dtype=torch.long, device=self.device)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=inputs, attention_mask=torch.ones_like(inputs), **kwargs
            )
        skip = len(self.decoder_prefix) if self.is_seq2seq else inputs.shape[1]
        ids = [self._cut(row) for row in out[:, skip:].tolist()]
        ids = [t for t in ids if t]
        samples = self._text_samples(ids)
        rows = [(0, t) for t in ids]
        log_probs = self._score_rows([prompt], rows, _IDENTITY, grad=False)
        return samples, log_probs

    # ------------------------------------------------------------------ internals

    def _cut(self, ids: Sequence[int]) -> tuple[int, ...]:
        """Keep the tokens up to and including the first EOS."""
        eos = self.eos_token_ids
        for i, t in enumerate(ids):
            if t in eos:
                return tuple(ids[: i + 1])
        return tuple(ids)

    def _text_samples(self, ids: list[tuple[int, ...]]) -> list[TextSample]:
        if not ids:
            return []
        texts = self.tokenizer.batch_decode([list(t) for t in ids], skip_special_tokens=True)
        return [TextSample(t, s) for t, s in zip(ids, texts, strict=True)]

    def _encode_contexts(self, contexts: Sequence[str]) -> list[list[int]]:
        if isinstance(contexts, str):
            raise ValueError("contexts must be a sequence of strings, not a string")
        prompts: list[list[int]] = []
        for c, context in enumerate(contexts):
            if not isinstance(context, str):
                raise ValueError(f"contexts[{c}] must be a string; got {type(context).__name__}")
            ids = (
                list(self.tokenizer(context, add_special_tokens=True)["input_ids"])
                if context
                else []
            )
            if not ids:
                if self.is_seq2seq:
                    raise ValueError(
                        f"contexts[{c}] is empty: a seq2seq model needs a non-empty context "
                        "(its encoder input)"
                    )
                if self.bos_token_id is None:
                    raise ValueError(
                        f"contexts[{c}] is empty and the model has neither a BOS nor an EOS token "
                        "to start from"
                    )
                ids = [self.bos_token_id]
            prompts.append(ids)
        return prompts

    def _sample_ids(self, sample: Any, where: str) -> tuple[int, ...]:
        ids = sample.token_ids if isinstance(sample, TextSample) else sample
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise ValueError(
                f"{where} must be a TextSample or a sequence of token ids; "
                f"got {type(sample).__name__}"
            )
        try:
            ids = tuple(int(t) for t in ids)
        except (TypeError, ValueError):
            raise ValueError(f"{where} has token ids that are not integers") from None
        if not ids:
            raise ValueError(f"{where} has no tokens (a sample holds at least EOS)")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(
                f"{where} has token id {bad[0]} outside this model's vocabulary "
                f"(0..{self.vocab_size - 1}): was it made with another tokenizer?"
            )
        return self._cut(ids)

    def _check_texts(self, samples: Sequence[Sequence[Any]]) -> None:
        """Check that samples carrying text decode to it (else: from another tokenizer)."""
        checked = [
            (c, i, s)
            for c, group in enumerate(samples)
            for i, s in enumerate(group)
            if isinstance(s, TextSample) and s.text
        ]
        if not checked:
            return
        decoded = self.tokenizer.batch_decode(
            [list(s.token_ids) for _, _, s in checked], skip_special_tokens=True
        )
        for (c, i, s), text in zip(checked, decoded, strict=True):
            if text != s.text:
                raise ValueError(
                    f"samples[{c}][{i}]: its token ids decode to {text!r}, not to its text "
                    f"{s.text!r}: was it made with another tokenizer?"
                )

    def _sample_rows(
        self, prompts: list[list[int]], rows: list[int]
    ) -> tuple[list[tuple[int, ...]], torch.Tensor]:
        """Sample one output per row (``rows[i]`` indexes ``prompts``) in one batch."""
        device = self.device
        batch = len(rows)
        eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=device)
        tokens = torch.full(
            (batch, self.length), self.pad_token_id, dtype=torch.long, device=device
        )
        log_probs = torch.zeros(batch, dtype=torch.float32, device=device)
        alive = torch.ones(batch, dtype=torch.bool, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        with torch.no_grad():
            step = self._decoder_steps(prompts, rows)
            logits = next(step)
            for t in range(self.length):
                scores = logits.float()
                if not self.warp.is_identity:
                    scores = warp_logits(scores, *self._warp_args())
                token_lp = torch.log_softmax(scores, dim=-1)
                chosen = _draw(token_lp)
                chosen = torch.where(alive, chosen, self.pad_token_id)
                log_probs += torch.where(alive, token_lp.gather(1, chosen[:, None]).squeeze(1), 0.0)
                tokens[:, t] = chosen
                lengths += alive
                alive &= ~torch.isin(chosen, eos)
                if t == self.length - 1 or not bool(alive.any()):
                    break
                logits = step.send(chosen)
            step.close()
        kept = tokens.tolist()
        out = [tuple(row[:n]) for row, n in zip(kept, lengths.tolist(), strict=True)]
        return out, log_probs

    def _warp_args(self) -> tuple[float, int, float]:
        return self.warp.temperature, self.warp.top_k, self.warp.top_p

    def _decoder_steps(
        self, prompts: list[list[int]], rows: list[int]
    ) -> Generator[torch.Tensor, torch.Tensor, None]:
        """Run the model step by step: yield next-token logits (B x V), receive tokens (B,)."""
        device = self.device
        model = self.model
        cache = _cache_keyword(model)
        if self.is_seq2seq:
            encoder_kwargs = self._encoder_inputs(prompts, rows)
            prefix = torch.tensor(self.decoder_prefix, dtype=torch.long, device=device)
            out = model(
                decoder_input_ids=prefix.expand(len(rows), -1), use_cache=True, **encoder_kwargs
            )
            while True:
                chosen = yield out.logits[:, -1, :]
                out = model(
                    decoder_input_ids=chosen[:, None],
                    use_cache=True,
                    **{cache: getattr(out, cache)},
                    **encoder_kwargs,
                )
        ids, mask = _pad([prompts[r] for r in rows], self.pad_token_id, device, left=True)
        kwargs: dict[str, Any] = {}
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if self._use_position_ids:
            kwargs["position_ids"] = positions
        if self._use_logits_to_keep:
            # An index tensor, not the int 1: the head then gets a contiguous copy of the last
            # hidden states, where a strided slice takes a much slower matmul path on CPU.
            last = torch.tensor([ids.shape[1] - 1], device=device)
            out = model(
                input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=last, **kwargs
            )
        else:
            out = model(input_ids=ids, attention_mask=mask, use_cache=True, **kwargs)
        next_position = positions[:, -1:] + 1
        one = torch.ones(len(rows), 1, dtype=mask.dtype, device=device)
        while True:
            chosen = yield out.logits[:, -1, :]
            mask = torch.cat([mask, one], dim=1)
            if self._use_position_ids:
                kwargs["position_ids"] = next_position
            out = model(
                input_ids=chosen[:, None],
                attention_mask=mask,
                use_cache=True,
                **{cache: getattr(out, cache)},
                **kwargs,
            )
            next_position = next_position + 1

    def _encoder_inputs(self, prompts: list[list[int]], rows: list[int]) -> dict[str, Any]:
        """Encode each distinct context of ``rows`` once; spread the states over the rows."""
        from transformers.modeling_outputs import BaseModelOutput

        distinct = sorted(set(rows))
        position = {c: i for i, c in enumerate(distinct)}
        ids, mask = _pad([prompts[c] for c in distinct], self.pad_token_id, self.device, left=False)
        states = self.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        index = torch.tensor([position[r] for r in rows], dtype=torch.long, device=self.device)
        return {
            "encoder_outputs": BaseModelOutput(last_hidden_state=states.index_select(0, index)),
            "attention_mask": mask.index_select(0, index),
        }

    def _score_rows(
        self,
        prompts: list[list[int]],
        rows: list[tuple[int, tuple[int, ...]]],
        warp: _Warp,
        grad: bool,
    ) -> torch.Tensor:
        """Log-probability of each (context index, sample ids) row; chunked, in row order."""
        if not rows:
            return torch.empty(0, dtype=torch.float64, device=self.device)
        if len(rows) <= self.batch_size:
            order = list(range(len(rows)))
        else:  # similar lengths together: less padding
            order = sorted(
                range(len(rows)), key=lambda i: len(prompts[rows[i][0]]) + len(rows[i][1])
            )
        parts: list[torch.Tensor] = []
        with torch.set_grad_enabled(grad):
            for chunk in _chunks(order, self.batch_size):
                parts.append(self._score_chunk(prompts, [rows[i] for i in chunk], warp))
        scores = torch.cat(parts)
        if order != list(range(len(rows))):
            inverse = torch.empty(len(order), dtype=torch.long, device=scores.device)
            inverse[torch.tensor(order, device=scores.device)] = torch.arange(
                len(order), device=scores.device
            )
            scores = scores[inverse]
        return scores.double()

    def _score_chunk(
        self,
        prompts: list[list[int]],
        rows: list[tuple[int, tuple[int, ...]]],
        warp: _Warp,
    ) -> torch.Tensor:
        device = self.device
        lengths = torch.tensor([len(s) for _, s in rows], device=device)
        longest = int(lengths.max())
        if self.is_seq2seq:
            encoder_kwargs = self._encoder_inputs(prompts, [c for c, _ in rows])
            prefix = list(self.decoder_prefix)
            inputs = [prefix + list(s[:-1]) for _, s in rows]
            dec_ids, _ = _pad(inputs, self.pad_token_id, device, left=False)
            out = self.model(decoder_input_ids=dec_ids, use_cache=False, **encoder_kwargs)
            logits = out.logits[:, len(prefix) - 1 :, :]
            targets, _ = _pad([list(s) for _, s in rows], self.pad_token_id, device, left=False)
            steps = torch.arange(longest, device=device)
            counted = steps[None, :] < lengths[:, None]
        else:
            ids, mask = _pad(
                [prompts[c] + list(s) for c, s in rows], self.pad_token_id, device, left=True
            )
            kwargs: dict[str, Any] = {}
            if self._use_position_ids:
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            # The positions that predict the last ``longest`` tokens (the samples; rows end
            # together under left padding). An index tensor keeps the head's input contiguous.
            width = ids.shape[1]
            wanted = torch.arange(width - longest - 1, width - 1, device=device)
            if self._use_logits_to_keep:
                kwargs["logits_to_keep"] = wanted
            out = self.model(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs)
            logits = out.logits if self._use_logits_to_keep else out.logits[:, wanted, :]
            targets = ids[:, -longest:]
            steps = torch.arange(longest, device=device)
            counted = steps[None, :] >= (longest - lengths)[:, None]
        token_lp = _token_log_probs(logits, targets, warp)
        zero = torch.zeros((), dtype=token_lp.dtype, device=device)
        return torch.where(counted, token_lp, zero).sum(dim=-1)


class _AdaptersDisabled(BaseDistribution):
    """A view of a peft-wrapped ``LMDistribution`` that samples and scores with adapters off."""

    def __init__(self, lm: LMDistribution) -> None:
        self.lm = lm
        self.name = "base (adapters disabled)"

    def sample(self, context: Any = "", sampling_size: int = 32) -> tuple[list[Any], torch.Tensor]:
        """Sample from the base weights."""
        with self.lm.model.disable_adapter():
            return self.lm.sample(context, sampling_size)

    def log_score(
        self, samples: Sequence[Any], context: Any = "", grad: bool = False
    ) -> torch.Tensor:
        """Log-probabilities under the base weights."""
        with self.lm.model.disable_adapter():
            return self.lm.log_score(samples, context, grad=grad)

    def log_score_batch(
        self, samples: Sequence[Sequence[Any]], contexts: Sequence[Any], grad: bool = False
    ) -> torch.Tensor:
        """Batched log-probabilities under the base weights."""
        with self.lm.model.disable_adapter():
            return self.lm.log_score_batch(samples, contexts, grad=grad)


def _draw(log_probs: torch.Tensor) -> torch.Tensor:
    """One token per row, drawn with probability ``exp(log_probs)`` (rows sum to one).

    Inverse-CDF sampling: one uniform per row against the float64 cumulative sum, exact to
    float64 rounding and several times faster than ``torch.multinomial`` on CPU. A token of
    probability zero spans an empty interval and is never drawn.
    """
    cumulative = log_probs.exp().double().cumsum(dim=-1)
    total = cumulative[:, -1:]
    uniform = torch.rand(total.shape, dtype=torch.float64, device=total.device) * total
    chosen = torch.searchsorted(cumulative, uniform, right=True)
    last = (cumulative < total).sum(dim=-1, keepdim=True)  # the last token of positive mass
    return torch.minimum(chosen, last).squeeze(1)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pad(
    sequences: list[list[int]], pad: int, device: torch.device, *, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``sequences``, padded on the left or the right."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            where = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, where] = torch.tensor(s, dtype=torch.long)
            mask[i, where] = 1
    return ids.to(device), mask.to(device)
