"""Iterate averaging: an exponential moving average of the policy's trainable parameters.

A stochastic-gradient method with a step size that does not reach zero ends in a cloud of
iterates around the optimum whose spread grows with the step size and the gradient's noise
(a noise floor). The average of the iterates sits near the centre of that cloud, so it is
closer to the optimum than any single iterate (Polyak–Juditsky averaging; an exponential
average forgets the early iterates, which a uniform average would keep forever). While the
iterates still travel towards the optimum, a plain mean lags half-way behind them: polynomial-
decay averaging (Shamir and Zhang, 2013) weights iterate t by about t**power, so the average
keeps up with a run that is shorter than the exponential memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

__all__ = ["ParameterAverage"]


class ParameterAverage:
    """Exponential moving average of named parameters, with a polynomial-decay start.

    After update ``t`` (counting from 1) the average is ``avg <- d_t avg + (1 - d_t) theta``
    with ``d_t = min(decay, 1 - (power + 1)/(t + power))``: until the exponential weight takes
    over, iterate ``s`` of the first ``t`` has a weight proportional to about ``s**power``
    (``power=0``: the plain mean), then the average is exponential with a memory of about
    ``1/(1 - decay)`` steps. The first update replaces the starting point entirely.

    Parameters
    ----------
    parameters:
        The live parameters (name -> tensor) whose values are averaged.
    decay:
        The largest weight of the old average, in ``[0, 1)``.
    power:
        How much the start favours recent iterates (``>= 0``; 0: all equally).
    """

    def __init__(
        self, parameters: Mapping[str, torch.Tensor], decay: float, power: float = 0.0
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the averaging decay must be in [0, 1), got {decay}")
        if not (power >= 0.0 and math.isfinite(power)):
            raise ValueError(f"the averaging power must be finite and non-negative, got {power}")
        self.parameters = dict(parameters)
        self.decay = float(decay)
        self.power = float(power)
        self.updates = 0
        self.average = {n: p.detach().clone() for n, p in self.parameters.items()}
        self._held_iterate: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def update(self) -> None:
        """Fold the parameters' current values into the average."""
        self.updates += 1
        keep = min(self.decay, 1.0 - (self.power + 1.0) / (self.updates + self.power))
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
