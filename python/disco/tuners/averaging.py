"""Iterate averaging: an exponential moving average of the policy's trainable parameters.

A stochastic-gradient method with a step size that does not reach zero ends in a cloud of
iterates around the optimum whose spread grows with the step size and the gradient's noise
(a noise floor). The average of the iterates sits near the centre of that cloud, so it is
closer to the optimum than any single iterate (Polyak–Juditsky averaging; an exponential
average forgets the early iterates, which a uniform average would keep forever).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

__all__ = ["ParameterAverage"]


class ParameterAverage:
    """Exponential moving average of named parameters, with a uniform start.

    After update ``t`` (counting from 1) the average is ``avg <- d_t avg + (1 - d_t) theta``
    with ``d_t = min(decay, 1 - 1/t)``: the plain mean of the iterates for the first
    ``1/(1 - decay)`` updates, then an exponential average whose memory is about
    ``1/(1 - decay)`` steps. The first update therefore replaces the starting point entirely.

    Parameters
    ----------
    parameters:
        The live parameters (name -> tensor) whose values are averaged.
    decay:
        The largest weight of the old average, in ``[0, 1)``.
    """

    def __init__(self, parameters: Mapping[str, torch.Tensor], decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the averaging decay must be in [0, 1), got {decay}")
        self.parameters = dict(parameters)
        self.decay = float(decay)
        self.updates = 0
        self.average = {n: p.detach().clone() for n, p in self.parameters.items()}
        self._held_iterate: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters' current values into the average."""
        self.updates += 1
        keep = min(self.decay, 1.0 - 1.0 / self.updates)
        for name, p in self.parameters.items():
            self.average[name].mul_(keep).add_(p.detach(), alpha=1.0 - keep)

    @property
    def held(self) -> bool:
        """Whether the live parameters hold the average (see :meth:`hold`)."""
        return self._held_iterate is not None

    @torch.no_grad()
    def hold(self) -> None:
        """Put the average into the live parameters, keeping the iterate aside."""
        if self._held_iterate is not None:
            return
        self._held_iterate = {n: p.detach().clone() for n, p in self.parameters.items()}
        for name, p in self.parameters.items():
            p.copy_(self.average[name])

    @torch.no_grad()
    def release(self) -> None:
        """Put the iterate kept aside by :meth:`hold` back into the live parameters."""
        if self._held_iterate is None:
            return
        for name, p in self.parameters.items():
            p.copy_(self._held_iterate[name])
        self._held_iterate = None

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Inside the block the live parameters hold the average; as they were after it."""
        if self.held:
            yield
            return
        self.hold()
        try:
            yield
        finally:
            self.release()

    @contextmanager
    def iterate_in_place(self) -> Iterator[None]:
        """Inside the block the live parameters hold the iterate; as they were after it."""
        if not self.held:
            yield
            return
        self.release()
        try:
            yield
        finally:
            self.hold()

    def tensors(self) -> dict[str, torch.Tensor]:
        """The averaged values (CPU, contiguous), for checkpoints."""
        return {n: t.detach().cpu().contiguous() for n, t in self.average.items()}

    def load(self, tensors: Mapping[str, torch.Tensor], updates: int) -> None:
        """Restore the averaged values and the update count from :meth:`tensors`."""
        if set(tensors) != set(self.average):
            raise ValueError("the stored average holds other parameters than this policy's")
        with torch.no_grad():
            for name, value in tensors.items():
                self.average[name].copy_(value)
        self.updates = int(updates)
