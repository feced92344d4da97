"""Which parallel mode a tuner runs: ``'auto'`` resolved once, the mode checked, then made."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch

from disco.distributed import World
from disco.parallel import CHOICES, MODES
from disco.parallel.base import GradientPath, Setup, configured, is_hf_policy

__all__ = ["for_tuner", "gradient_sync", "resolve"]


def resolve(parallel: str, distribution: Any, world: World) -> type[GradientPath]:
    """The mode ``parallel`` names for ``distribution`` on ``world`` (see ``TunerConfig.parallel``).

    One process always sums exactly (nothing to exchange); ``'auto'`` is ``'deepspeed'`` under
    an accelerate DeepSpeed config, ``'fsdp'`` under an accelerate FSDP config (for a Hugging
    Face policy), else ``'none'``: the exact sum, which makes N processes take one process's
    step bit for bit.
    """
    if world.size == 1:
        name = "none"
    elif parallel != "auto":
        name = parallel
    elif configured("DEEPSPEED"):
        name = "deepspeed"
    elif configured("FSDP") and is_hf_policy(distribution):
        name = "fsdp"
    else:
        name = "none"
    if name not in MODES:
        raise ValueError(f"parallel={parallel!r} is not one of {CHOICES}")
    module, _, cls = MODES[name].partition(":")
    mode: type[GradientPath] = getattr(importlib.import_module(module), cls)
    return mode


def gradient_sync(
    parallel: str,
    distribution: Any,
    parameters: Sequence[torch.nn.Parameter],
    world: World,
    lockstep: bool = False,
) -> GradientPath:
    """How a tuner's gradients meet across ``world`` (see ``TunerConfig.parallel``).

    Call it before the optimizer is made: ``'fsdp'`` replaces the parameters by their shards,
    and ``'deepspeed'``'s engine is made around the optimizer (``prepare``). ``'ddp'`` and
    ``'deepspeed'`` need a Hugging Face policy and accelerate seeing the group (errors
    otherwise). ``lockstep``: FSDP keeps the model sharded within a step; the caller makes
    every rank's calls of the model the same.
    """
    mode = resolve(parallel, distribution, world)
    return mode.create(Setup(parallel, distribution, list(parameters), world, lockstep))


def for_tuner(
    config: Any,
    policy: Any,
    parameters: Sequence[torch.nn.Parameter],
    world: World,
    others: dict[str, Any],
) -> GradientPath:
    """The mode a tuner's ``config`` (a ``TunerConfig``) asks for, its settings checked first.

    ``others``: what else a step calls besides the policy, by role (target, base, features).
    """
    mode = resolve(config.parallel, policy, world)
    mode.check_tuner(config.parallel, config, policy, others)
    setup = Setup(config.parallel, policy, list(parameters), world, config.fsdp_lockstep)
    return mode.create(setup)
