"""The tuner's own state in a checkpoint: what is stored besides the parameters, and put back.

To add state, extend :func:`tuner_state` and :func:`restore` (values as :mod:`disco.tuners.codec`
stores them); :func:`check_state` refuses a stored state without what :func:`restore` needs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from disco._torch_modules import torch_module

if TYPE_CHECKING:
    from disco.tuners.tuner import Tuner

__all__ = ["Stored", "check_state", "restore", "tuner_state"]


@dataclass
class Stored:
    """A checkpoint's verified tensors: the policy's and, with an offline proposal, its."""

    policy: dict[str, torch.Tensor]
    proposal: dict[str, torch.Tensor] | None


def tuner_state(tuner: Tuner, optimizer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a resumed tuner needs besides its parameters (tensors allowed, see :func:`encode`).

    ``optimizer``: the optimizer's state to store (by default its own; the parallel mode's
    ``whole_state`` gives it whole where ranks hold pieces of it).
    """
    return {
        "step": tuner.step_count,
        "log_z_sums": tuner.partition.sums,
        "log_z_counts": tuner.partition.counts,
        "loss": tuner.loss.state_dict(),
        "numpy_rng": tuner.rng.bit_generator.state,
        "python_rng": random.getstate(),
        "history": tuner.history,
        "config": tuner.config.to_dict(),
        "proposal_is_policy": tuner.proposal is tuner.policy,
        "proposal_copied_at": tuner.proposal_copied_at,
        "seeded": tuner._seeded,
        "optimizer": tuner.optimizer.state_dict() if optimizer is None else optimizer,
        "scheduler": tuner.scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "policy_rng": tuner.policy.random_state()
        if hasattr(tuner.policy, "random_state")
        else None,
        "proposal_rng": tuner.proposal.random_state()
        if hasattr(tuner.proposal, "random_state")
        else None,
        "log_z_relative_variance": tuner.partition.relative_variance,
        "average": None
        if tuner.average is None
        else {"tensors": tuner.average.tensors(), "updates": tuner.average.updates},
    }


def restore(tuner: Tuner, state: dict[str, Any], stored: Stored) -> None:
    """Put a verified checkpoint's contents back into ``tuner``."""
    average = state.get("average")
    if tuner.average is not None and average is None:
        raise ValueError(
            "the checkpoint has no parameter average: it was written with averaging='none'; "
            "resume it with the same setting"
        )
    if tuner.average is not None:
        tuner.average.release()  # the checkpoint's iterate replaces whatever is held
    tuner.gradients.load_parameters(tuner.parameters, stored.policy)
    if state["proposal_is_policy"]:
        tuner.proposal = tuner.policy
    else:
        tuner.proposal = tuner._frozen_copy(tuner.policy)
        params = dict(torch_module(tuner.proposal).named_parameters())
        with torch.no_grad():
            for name, value in (stored.proposal or {}).items():
                params[name].copy_(value)
    tuner.gradients.load_optimizer_state(tuner.optimizer, state["optimizer"])
    tuner.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if state["policy_rng"] is not None and hasattr(tuner.policy, "set_random_state"):
        tuner.policy.set_random_state(state["policy_rng"])
    if (
        state["proposal_rng"] is not None
        and hasattr(tuner.proposal, "set_random_state")
        and tuner.proposal is not tuner.policy
    ):
        tuner.proposal.set_random_state(state["proposal_rng"])
    tuner.step_count = int(state["step"])
    copied_at = state.get("proposal_copied_at")  # absent from checkpoints before 0.2
    tuner.proposal_copied_at = None if copied_at is None else int(copied_at)
    tuner.partition.load_state_dict(state)
    tuner.loss.load_state_dict(state["loss"])
    tuner.rng.bit_generator.state = state["numpy_rng"]
    random.setstate(state["python_rng"])
    tuner.history = state["history"]
    tuner._seeded = bool(state["seeded"])
    if tuner.average is not None and average is not None:
        tuner.average.load(average["tensors"], int(average["updates"]))
        tuner.average.hold()  # as after tune(): the policy is the average, the iterate aside


_STATE_KEYS = {
    "step": int,
    "log_z_sums": dict,
    "log_z_counts": dict,
    "loss": dict,
    "numpy_rng": dict,
    "python_rng": tuple,
    "history": list,
    "proposal_is_policy": bool,
    "seeded": bool,
    "optimizer": dict,
    "scheduler": dict,
    "torch_rng": torch.Tensor,
    "cuda_rng": list,
}


def check_state(state: Any) -> None:
    """Refuse a decoded state that lacks what :func:`restore` reads, or holds the wrong types."""
    if not isinstance(state, dict):
        raise TypeError("the state is not a table")
    for key, kind in _STATE_KEYS.items():
        if not isinstance(state[key], kind):
            raise TypeError(f"{key} is a {type(state[key]).__name__}, not a {kind.__name__}")
    if state["step"] < 0 or not all(
        isinstance(v, list | tuple) and len(v) == 2 and not any(map(math.isnan, v))
        for v in state["log_z_sums"].values()
    ):
        raise ValueError("step or log_z_sums out of range")
