"""The sampling warps of a language model: temperature, top-k and top-p (docs/design.md §9).

A :class:`Warp` is part of an ``LMDistribution``'s distribution: sampling draws from the warped
softmax and ``log_score`` scores under it, through the same :meth:`Warp.apply`, so the two
cannot drift apart.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["MIN_TEMPERATURE", "Warp", "warp_logits"]

# Dividing logits (of magnitude up to ~1e3) by less than this overflows float32.
MIN_TEMPERATURE = 1e-4


def _kept_mask(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor | None:
    """Which tokens top-k then top-p keep (``None``: all); ``scores`` are temperature-scaled."""
    import torch

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
    through the kept logits; the kept set itself is computed without gradient. The arguments are
    not checked: :class:`Warp` checks them.

    >>> import torch
    >>> warp_logits(torch.tensor([2.0, 1.0, 0.0]), temperature=2.0, top_k=2).tolist()
    [1.0, 0.5, -inf]
    """
    if temperature != 1.0:
        logits = logits / temperature
    keep = _kept_mask(logits, top_k, top_p)
    return logits if keep is None else logits.masked_fill(~keep, -math.inf)


def _is_real(value: Any) -> bool:
    """A real number, booleans excluded (``True`` is no temperature)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Warp:
    """Temperature, top-k and top-p, checked once and applied in transformers' order.

    Parameters
    ----------
    temperature
        Divides the logits; finite and at least :data:`MIN_TEMPERATURE` (below, float32
        logits overflow; for greedy decoding use ``LMDistribution.decode``).
    top_k
        Keep the ``top_k`` most likely tokens (ties at the threshold included); ``0``: off.
    top_p
        Keep the most likely tokens whose probabilities first sum past ``top_p``, in ``(0, 1]``;
        ``1.0``: off.

    Raises
    ------
    ValueError
        A setting out of range, in one line naming it.

    Examples
    --------
    >>> import torch
    >>> Warp(temperature=0.5).apply(torch.tensor([1.0, 0.0])).tolist()
    [2.0, 0.0]
    >>> Warp().is_identity
    True
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        temperature, top_k, top_p = self.temperature, self.top_k, self.top_p
        if not (_is_real(temperature) and _is_real(top_p)):
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
        # Stored as plain floats, so that equal warps compare and hash equal.
        object.__setattr__(self, "temperature", temperature)
        object.__setattr__(self, "top_p", top_p)

    @property
    def is_identity(self) -> bool:
        """Whether this warp leaves every distribution as it is."""
        return self.temperature == 1.0 and self.top_k == 0 and self.top_p == 1.0

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """The warped logits (last axis: the vocabulary); removed tokens get ``-inf``.

        See :func:`warp_logits`; the identity warp returns ``logits`` itself.
        """
        if self.is_identity:
            return logits
        return warp_logits(logits, self.temperature, self.top_k, self.top_p)
