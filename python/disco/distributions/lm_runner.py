"""How ``LMDistribution`` runs its model: cached step-by-step sampling and batched scoring.

Sampling feeds the model one token per step, reusing its key/value cache, and draws from the
warped softmax; scoring is one forward pass over a padded batch. Both go through the same
:class:`~disco.distributions.warp.Warp`, so ``log_score`` recomputes the log-probability
``sample`` returned (docs/design.md §9). Causal models see left-padded prompts (rows end together);
seq2seq models encode each distinct context once.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import torch

from disco.distributions.loading import cache_keyword
from disco.distributions.warp import Warp


class ModelRunner:
    """The forward passes of a language-model distribution (a mixin of ``LMDistribution``).

    The class using it sets the attributes annotated here.
    """

    model: Any
    is_seq2seq: bool
    length: int
    batch_size: int
    warp: Warp
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    decoder_prefix: tuple[int, ...]
    _use_position_ids: bool
    _use_logits_to_keep: bool
    decode_to_length: bool = False
    """Run the decoder for all ``length`` steps even once every row has ended.

    Off by default (sampling stops early). FSDP's lockstep mode sets it: there every forward is
    a collective and each rank must run as many as the others. The rows are the same either
    way: an ended row only gets pad tokens, and the extra steps draw no random numbers.
    """

    @property
    def device(self) -> torch.device:
        """The device inputs go to (that of the input embeddings)."""
        return self.model.get_input_embeddings().weight.device

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
                scores = self.warp.apply(scores)
                token_lp = torch.log_softmax(scores, dim=-1)
                chosen = _draw(token_lp)
                chosen = torch.where(alive, chosen, self.pad_token_id)
                log_probs += torch.where(alive, token_lp.gather(1, chosen[:, None]).squeeze(1), 0.0)
                tokens[:, t] = chosen
                lengths += alive
                alive &= ~torch.isin(chosen, eos)
                if t == self.length - 1:
                    break
                if not bool(alive.any()):
                    if not self.decode_to_length:
                        break
                    for _ in range(t + 1, self.length):  # forwards only: no draws, no changes
                        step.send(chosen)
                    break
                logits = step.send(chosen)
            step.close()
        kept = tokens.tolist()
        out = [tuple(row[:n]) for row, n in zip(kept, lengths.tolist(), strict=True)]
        return out, log_probs

    def _decoder_steps(
        self, prompts: list[list[int]], rows: list[int]
    ) -> Generator[torch.Tensor, torch.Tensor, None]:
        """Run the model step by step: yield next-token logits (B x V), receive tokens (B,)."""
        device = self.device
        model = self.model
        cache = cache_keyword(model)
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
        warp: Warp,
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
            for chunk in chunks(order, self.batch_size):
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
        warp: Warp,
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


def _token_log_probs(logits: torch.Tensor, targets: torch.Tensor, warp: Warp) -> torch.Tensor:
    """Log-probability of each target token under the warped softmax of ``logits`` (float32+)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logits = warp.apply(logits)
    # log_softmax then gather: one fused pass on GPU, and faster than logsumexp on CPU.
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


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


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in consecutive lists of at most ``size``."""
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
