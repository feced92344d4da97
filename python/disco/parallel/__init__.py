"""How a tuned policy's gradients meet across ranks: one interface, one object per mode.

The tuner backpropagates each rank's chunks, then needs the exact global SUM of the gradients on
every rank (one process's gradient of the whole batch). Each mode of ``TunerConfig.parallel`` is
one :class:`GradientPath` in a module of its own: ``'none'`` an explicit float64 all-reduce
(:class:`GradientSum`, :mod:`~disco.parallel.exact`), ``'ddp'`` accelerate's DDP with a summing
hook (:class:`AccelerateDDP`), ``'fsdp'`` torch's FSDP2 (:class:`ShardedFSDP`) and
``'deepspeed'`` DeepSpeed's ZeRO stage 1 or 2 through accelerate (:class:`DeepSpeedZeRO`).
Each checks the tuner settings it cannot honour, exchanges the gradients, and gathers and
restores what a checkpoint holds; :func:`gradient_sync` and :func:`for_tuner`
(:mod:`~disco.parallel.selection`) pick one. The chunks and reductions they serve are in
:mod:`disco.distributed`.

A new mode is a :class:`GradientPath` subclass in its own module and one line in
:data:`MODES`. The names below load on first use, so the settings can list the modes without
importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from disco._lazy import lazy_exports

if TYPE_CHECKING:
    from disco.parallel.base import GradientPath, Setup, WholeState
    from disco.parallel.ddp import AccelerateDDP
    from disco.parallel.deepspeed import DeepSpeedZeRO
    from disco.parallel.exact import GradientSum
    from disco.parallel.fsdp import ShardedFSDP, check_lockstep, whole_state_dict
    from disco.parallel.selection import for_tuner, gradient_sync

__all__ = [
    "CHOICES",
    "LEAVE_THE_POLICY_SHARDED",
    "MODES",
    "AccelerateDDP",
    "DeepSpeedZeRO",
    "GradientPath",
    "GradientSum",
    "Setup",
    "ShardedFSDP",
    "WholeState",
    "check_lockstep",
    "for_tuner",
    "gradient_sync",
    "whole_state_dict",
]

MODES: dict[str, str] = {
    "ddp": "disco.parallel.ddp:AccelerateDDP",
    "deepspeed": "disco.parallel.deepspeed:DeepSpeedZeRO",
    "fsdp": "disco.parallel.fsdp:ShardedFSDP",
    "none": "disco.parallel.exact:GradientSum",
}
"""Every mode by its ``TunerConfig.parallel`` name: where its class lives."""
CHOICES = ("auto", *MODES)
"""What ``TunerConfig.parallel`` accepts: a mode, or ``'auto'`` (:func:`selection.resolve`)."""

LEAVE_THE_POLICY_SHARDED: dict[str, str] = {
    "fsdp_lockstep": "parallel = 'fsdp' without it gathers the model within a step",
}
"""Tuner settings after which the tuned policy stays split between the ranks, each with what
does the same work and leaves it whole. A caller that uses the policy on uneven shares after
tuning (the ``disco`` command's QRS and evaluation) refuses them; read from the file alone."""

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "GradientPath": "disco.parallel.base",
        "Setup": "disco.parallel.base",
        "WholeState": "disco.parallel.base",
        "AccelerateDDP": "disco.parallel.ddp",
        "DeepSpeedZeRO": "disco.parallel.deepspeed",
        "GradientSum": "disco.parallel.exact",
        "ShardedFSDP": "disco.parallel.fsdp",
        "check_lockstep": "disco.parallel.fsdp",
        "whole_state_dict": "disco.parallel.fsdp",
        "for_tuner": "disco.parallel.selection",
        "gradient_sync": "disco.parallel.selection",
    },
)
