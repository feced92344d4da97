"""Language models as distributions over their outputs (docs/design.md §9).

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
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from disco.distributions.adapters import AdaptersDisabled
from disco.distributions.base import BaseDistribution, TextSample, TokenIds
from disco.distributions.lm_runner import ModelRunner, chunks
from disco.distributions.loading import (
    check_generate_kwargs,
    forward_accepts,
    open_model,
    read_special_tokens,
)
from disco.distributions.warp import MIN_TEMPERATURE, Warp, warp_logits

__all__ = ["MIN_TEMPERATURE", "LMDistribution", "Warp", "warp_logits"]


def _default_model() -> str:
    """The embedded default model's folder (a small GPT-2 trained on the KJV; no download)."""
    from disco.models import default_model_path

    return str(default_model_path())


def _check_size(sampling_size: Any) -> int:
    if isinstance(sampling_size, bool) or not isinstance(sampling_size, int):
        raise ValueError(f"sampling_size must be a positive integer; got {sampling_size!r}")
    if sampling_size < 1:
        raise ValueError(f"sampling_size must be a positive integer; got {sampling_size}")
    return sampling_size


class LMDistribution(ModelRunner, BaseDistribution):
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
        if "network" in generate_kwargs or "nature" in generate_kwargs:
            from disco.compat import lm_arguments  # the original's names for model and auto

            model, auto = lm_arguments(model, auto, generate_kwargs)
        self._is_default = model is None
        self.model_name: str | None = (
            os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        )
        tokens = check_generate_kwargs(generate_kwargs)
        self.length = self._check_length(generate_kwargs.get("max_new_tokens", length))
        self.warp = Warp(temperature, top_k, top_p)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        self.batch_size = batch_size
        loaded_here = model is None or isinstance(model, (str, os.PathLike))
        self.model, self.tokenizer, self.is_seq2seq = open_model(
            _default_model() if model is None else model,
            tokenizer,
            auto,
            trust_remote_code,
            dict(model_kwargs or {}),
        )
        self.model.eval()
        self._trainable = [p.requires_grad for p in self.model.parameters()]
        if freeze:
            self.freeze()
        self._place(device, loaded_here)
        self._read_special_tokens(tokens)

    # ------------------------------------------------------------------ construction helpers

    @staticmethod
    def _check_length(length: Any) -> int:
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive integer; got {length!r}")
        return length

    def _read_special_tokens(self, tokens: dict[str, Any]) -> None:
        """The vocabulary size, EOS, pad, BOS and decoder prefix, and what ``forward`` accepts."""
        special = read_special_tokens(self.model, self.tokenizer, tokens, self.is_seq2seq)
        self.vocab_size = special.vocab_size
        self.eos_token_ids = special.eos_token_ids
        self.pad_token_id = special.pad_token_id
        self.bos_token_id = special.bos_token_id
        self.decoder_prefix = special.decoder_prefix
        causal = not self.is_seq2seq
        self._use_position_ids = causal and forward_accepts(self.model, "position_ids")
        self._use_logits_to_keep = causal and forward_accepts(self.model, "logits_to_keep")

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

    # ------------------------------------------------------------------ public API

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

    def __getattr__(self, name: str) -> Any:
        # Only reached for a missing attribute: the original disco's names (network, params,
        # scorable, nature) are answered by the alias layer.
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        from disco.compat import original_attribute

        return original_attribute(self, name)

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
        return AdaptersDisabled(self)

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
        for chunk in chunks(rows, self.batch_size):
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
        self._check_texts(samples, [ids for _, ids in rows])
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
        log_probs = self._score_rows([prompt], rows, Warp(), grad=False)
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
        return [TextSample(TokenIds(t), s) for t, s in zip(ids, texts, strict=True)]

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
        """A sample's token ids, up to and including the first EOS, checked.

        The ids may come as a tuple, a list or a 1-D tensor or array. Tokens after the first
        EOS are dropped (padding, when the pad is the EOS); a tensor row is read as a row of a
        padded batch (``tokenizer(texts, return_tensors="pt", padding=True)``), so without an
        EOS its trailing pad tokens are dropped too. A sample without an EOS counts as cut off
        by the length cap.
        """
        ids: Any = sample.token_ids if isinstance(sample, TextSample) else sample
        what = "its token_ids" if isinstance(sample, TextSample) else "it"
        padded = isinstance(ids, torch.Tensor | np.ndarray)
        if padded:
            if ids.ndim != 1:
                raise ValueError(
                    f"{where}: {what} must be one sequence of token ids (a 1-D tensor); "
                    f"got a tensor of shape {tuple(ids.shape)}"
                )
            integral = (
                not (ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool)
                if isinstance(ids, torch.Tensor)
                else ids.dtype.kind in "iu"
            )
            if not integral:
                raise ValueError(
                    f"{where}: {what} must hold integer token ids; got dtype {ids.dtype}"
                )
            ids = ids.tolist()
        elif isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
            raise ValueError(
                f"{where} must be a TextSample or a sequence of token ids (tuple, list or 1-D "
                f"tensor); {what} is a {type(ids).__name__}"
            )
        try:
            ids = tuple(int(t) for t in ids)
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: {what} holds values that are not integer token ids"
            ) from None
        if not ids:
            raise ValueError(f"{where} has no tokens (a sample holds at least EOS)")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(
                f"{where} has token id {bad[0]} outside this model's vocabulary "
                f"(0..{self.vocab_size - 1}): was it made with another tokenizer?"
            )
        ids = self._cut(ids)
        if padded and ids[-1] not in self.eos_token_ids:
            # a padded row without EOS: the pad (not an EOS here) fills the row after the text
            end = len(ids)
            while end > 1 and ids[end - 1] == self.pad_token_id:
                end -= 1
            ids = ids[:end]
        return ids

    def _decodes_with_specials(self, sample: TextSample, ids: tuple[int, ...]) -> bool:
        """Whether the text is the ids decoded with their special tokens (the original's way)."""
        decoded = self.tokenizer.decode(list(ids), skip_special_tokens=False)
        return bool(decoded == sample.text or sample.text.startswith(decoded))

    def _check_texts(
        self, samples: Sequence[Sequence[Any]], rows: Sequence[tuple[int, ...]]
    ) -> None:
        """Check that samples carrying text decode to it (else: from another tokenizer)."""
        checked = [
            (c, i, s, ids)
            for (c, i, s), ids in zip(
                [(c, i, s) for c, group in enumerate(samples) for i, s in enumerate(group)],
                rows,
                strict=True,
            )
            if isinstance(s, TextSample) and s.text
        ]
        if not checked:
            return
        decoded = self.tokenizer.batch_decode(
            [list(ids) for _, _, _, ids in checked], skip_special_tokens=True
        )
        for (c, i, s, ids), text in zip(checked, decoded, strict=True):
            if (
                text != s.text
                and text != s.text.strip()
                and not self._decodes_with_specials(s, ids)
            ):
                raise ValueError(
                    f"samples[{c}][{i}]: its token ids decode to {text!r}, not to its text "
                    f"{s.text!r}: was it made with another tokenizer?"
                )
