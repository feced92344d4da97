"""``parallel='none'``: whole copies of the policy, gradients summed exactly in float64."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from disco.distributed import World
from disco.parallel.base import GradientPath, Setup

__all__ = ["GradientSum"]


class GradientSum(GradientPath):
    """Every rank holds the whole policy; the gradients are summed exactly, chunk by chunk.

    Each chunk's gradient is added to a float64 total as soon as its backward passes end, and
    :meth:`finish` all-reduces the totals in float64 and rounds them once to the parameters'
    type. Float64 holds a sum of float32 terms exactly (unless their exponents span more than 29
    bits), so the step does not depend on how the chunks were dealt: one process and N processes
    take the same step, bit for bit, and sample the same afterwards. The mode for any policy (an
    ``EnumerableLM`` is not a Hugging Face model), and the one ``'auto'`` picks for a policy
    held whole.
    """

    name = "none"

    def __init__(self, world: World, parameters: Sequence[torch.nn.Parameter]) -> None:
        self.world = world
        self.parameters = list(parameters)
        self._totals: dict[int, torch.Tensor] = {}

    @classmethod
    def create(cls, setup: Setup) -> GradientSum:
        """Any policy, any world (one process sums this way whatever was requested)."""
        return cls(setup.world, setup.parameters)

    def chunk_done(self) -> None:
        """Move the chunk's gradients into the float64 totals (the parameters' ``grad`` cleared)."""
        for i, p in enumerate(self.parameters):
            if p.grad is None:
                continue
            total = self._totals.get(i)
            if total is None:
                self._totals[i] = p.grad.detach().to(torch.float64, copy=True)
            else:
                total += p.grad.detach()
            p.grad = None

    def finish(self) -> None:
        """Turn the accumulated local gradients into the global sum, on every rank.

        A parameter no rank computed a gradient for keeps ``grad=None`` (as in one process, so
        optimisers skip it).
        """
        self.chunk_done()  # whatever was accumulated outside a chunk
        totals = self.world.sum_exactly(self._totals, self.parameters)
        self._totals = {}
        for i, total in totals.items():
            p = self.parameters[i]
            p.grad = total.to(p.dtype)
