"""What every parallel mode provides, with the behaviour of a policy held whole on each rank."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from disco._torch_modules import device_of
from disco.distributed import World

__all__ = ["GradientPath", "Setup", "WholeState"]


@dataclass
class Setup:
    """What a mode is made for: the policy, its trainable parameters and the world."""

    requested: str
    """The ``parallel`` setting as given (``'auto'`` or the mode's name), for messages."""
    distribution: Any
    parameters: Sequence[torch.nn.Parameter]
    world: World
    lockstep: bool = False
    """FSDP: keep the model sharded within a step (see ``TunerConfig.fsdp_lockstep``)."""


@dataclass
class WholeState:
    """The trainable parameters and the optimizer's state, whole, as one process holds them."""

    parameters: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


class GradientPath:
    """The interface every mode shares, with the behaviour of a policy held whole on each rank.

    Made by :meth:`create` once :meth:`check_tuner` accepted the tuner's settings. A step runs
    inside :meth:`whole_model`, its backward passes inside :meth:`accumulating`; :meth:`finish`
    turns the accumulated local gradients into the global sum on every rank and :meth:`step`
    applies it. :meth:`prepare` takes the optimizer once it is made, and :meth:`hand_over`
    leaves the tuned policy usable after tuning. A checkpoint stores :meth:`whole_state` and is
    read back with :meth:`load_parameters` and :meth:`load_optimizer_state`.
    """

    name: ClassVar[str]
    lockstep = False
    """Whether every rank must call the policy's model alike (only FSDP's lockstep mode)."""

    _max_grad_norm: float | None = None

    @classmethod
    def check_tuner(cls, requested: str, config: Any, policy: Any, others: dict[str, Any]) -> None:
        """Refuse tuner settings this mode cannot honour (before anything is set up).

        ``requested``: the ``parallel`` setting as given (``'auto'`` or the mode's name);
        ``config``: the tuner's ``TunerConfig``; ``others``: what else a step calls besides the
        policy, by role (target, base, features).
        """

    @classmethod
    def create(cls, setup: Setup) -> GradientPath:
        """The mode for ``setup`` (a ``ValueError`` saying why when it cannot apply)."""
        raise NotImplementedError

    def prepare(self, optimizer: torch.optim.Optimizer, max_grad_norm: float | None) -> None:
        """Take the tuner's optimizer once it is made, and the norm :meth:`step` clips to."""
        self._max_grad_norm = max_grad_norm

    @contextlib.contextmanager
    def whole_model(self) -> Iterator[None]:
        """A step (or a validation) runs inside this: every rank holds the whole model."""
        yield

    @contextlib.contextmanager
    def accumulating(self) -> Iterator[None]:
        """The backward passes of one step run inside this (local accumulation)."""
        yield

    def chunk_done(self) -> None:
        """After one chunk's backward passes (where a mode accumulates chunk by chunk)."""

    def finish(self) -> None:
        """Turn the accumulated local gradients into the global sum, on every rank."""
        raise NotImplementedError

    def step(
        self, optimizer: torch.optim.Optimizer, parameters: Sequence[torch.nn.Parameter]
    ) -> float:
        """Clip the summed gradients of ``parameters`` to their global norm, then step.

        Returns the norm before clipping (0 when no parameter has a gradient).
        """
        params = [p for p in parameters if p.grad is not None]
        norm = 0.0
        if params:
            max_norm = self._max_grad_norm if self._max_grad_norm is not None else math.inf
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        optimizer.step()
        return norm

    def hand_over(self) -> None:
        """After tuning: leave the policy usable like any model (here it already is)."""

    def whole_state(
        self, parameters: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer
    ) -> WholeState:
        """What a checkpoint stores of the parameters and the optimizer; every rank calls it.

        Here the live ones: whatever the parameters hold when the checkpoint is written.
        """
        return WholeState(dict(parameters), optimizer.state_dict())

    def load_parameters(
        self, parameters: dict[str, torch.nn.Parameter], stored: dict[str, torch.Tensor]
    ) -> None:
        """Copy a checkpoint's whole parameters into the live ones."""
        with torch.no_grad():
            for name, value in stored.items():
                parameters[name].copy_(value)

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
        """Restore the optimizer from a checkpoint's whole state (after :meth:`load_parameters`)."""
        optimizer.load_state_dict(saved)


def zero_gradient_pass(wrapper: Any, model: torch.nn.Module) -> None:
    """A one-token forward through ``wrapper`` and a backward of zeros, on every rank.

    It runs the wrapper's gradient communication on what the step accumulated and adds nothing.
    """
    with torch.enable_grad():
        logits = wrapper(**one_token(model)).logits
        logits.backward(torch.zeros_like(logits))


def one_token(model: torch.nn.Module) -> dict[str, Any]:
    """The smallest full forward of a Hugging Face model: one pad token (both sides for seq2seq)."""
    pad = int(getattr(model.config, "pad_token_id", None) or 0)
    token = torch.full((1, 1), pad, dtype=torch.long, device=device_of(model))
    inputs: dict[str, Any] = {
        "input_ids": token,
        "attention_mask": torch.ones_like(token),
        "use_cache": False,
    }
    if getattr(model.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = token
    return inputs


def is_hf_policy(distribution: Any) -> bool:
    """Whether ``distribution`` runs a Hugging Face model (a torch module with a ``config``)."""
    model = getattr(distribution, "model", None)
    return (
        isinstance(model, torch.nn.Module)
        and hasattr(model, "config")
        and model is not distribution
    )


def require_hf_policy(distribution: Any, what: str) -> None:
    """Refuse a policy without a Hugging Face model; ``what`` says what the mode does with one."""
    if not is_hf_policy(distribution):
        raise ValueError(
            f"{what} a Hugging Face model; {type(distribution).__name__} has none "
            "(use parallel='none': an explicit all-reduce of its gradients)"
        )


def configured(kind: str) -> bool:
    """Whether ``accelerate launch`` was given a config file for ``kind``.

    ``kind`` is ``"DEEPSPEED"`` or ``"FSDP"``: the launcher says so in the environment of the
    processes it starts.
    """
    return os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true"
