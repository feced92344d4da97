"""What moves the policy's parameters: the optimizer, the learning-rate schedule, the precision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch

from disco.tuners.config import TunerConfig

__all__ = ["autocast", "learning_rate_factor", "make_optimizer", "make_scheduler"]


def make_optimizer(
    config: TunerConfig, parameters: Sequence[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names, over ``parameters``."""
    params = list(parameters)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay
    )


def learning_rate_factor(config: TunerConfig, step: int) -> float:
    """The fraction of the peak learning rate at ``step``: linear warm-up, then the schedule."""
    if step < config.warmup_steps:
        return (step + 1) / (config.warmup_steps + 1)
    if config.scheduler == "constant":
        return 1.0
    span = max(1, config.n_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    if config.scheduler == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    config: TunerConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of ``config`` on ``optimizer``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(learning_rate_factor, config))


def autocast(mode: str, device: torch.device) -> Any:
    """The precision of the policy's forward passes: ``'auto'``, ``'bf16'`` or ``'off'``.

    bf16 on a CUDA device that supports it (``'auto'`` and ``'bf16'``), else float32;
    ``'bf16'`` elsewhere is an error.
    """
    if device.type == "cuda" and mode in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if mode == "bf16" and device.type != "cuda":
        raise ValueError("autocast='bf16' needs a CUDA device; the policy is on " + str(device))
    return torch.autocast(device.type, enabled=False)
