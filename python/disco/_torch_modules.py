"""The torch side of a distribution: its module, trainable parameters and device."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["device_of", "torch_module", "trainable_parameters"]


def torch_module(distribution: Any) -> torch.nn.Module:
    """The torch module holding a distribution's parameters."""
    if isinstance(distribution, torch.nn.Module):
        return distribution
    model = getattr(distribution, "model", None)
    if isinstance(model, torch.nn.Module):
        return model
    raise TypeError(
        f"{type(distribution).__name__} exposes no torch module (a .model or nn.Module) to tune"
    )


def trainable_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters the optimiser moves, by name (those with ``requires_grad``)."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def device_of(module: torch.nn.Module) -> torch.device:
    """Where the module's parameters live (the CPU for a module without any)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
