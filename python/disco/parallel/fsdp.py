"""``parallel='fsdp'``: the policy's model sharded by torch's FSDP2, and its whole weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from disco.parallel.base import (
    GradientPath,
    Setup,
    WholeState,
    one_token,
    require_hf_policy,
    zero_gradient_pass,
)

__all__ = ["ShardedFSDP", "check_lockstep", "whole_state_dict"]


class ShardedFSDP(GradientPath):
    """The policy's Hugging Face model sharded by torch's FSDP2 (``fully_shard``).

    Each transformer block (the model's ``_no_split_modules`` classes) and then the model are
    sharded, as accelerate's FSDP2 plugin does; between steps each rank holds one shard of the
    parameters, their gradients and the optimizer's state. Under FSDP every forward is a
    collective, so the ranks must run the same forwards; two ways to ensure it:

    - gathered (``lockstep=False``): ranks run uneven numbers of forward passes (their chunks;
      generation stops when every row has ended), so a step (:meth:`whole_model`) all-gathers
      the whole model once, runs every forward and backward locally without resharding or
      gradient sync, and :meth:`finish` reduce-scatters the accumulated gradients with one
      zero-gradient pass (a sum: the divide factor is 1). Peak memory within a step is a whole
      model per rank.
    - lockstep (``lockstep=True``): every rank makes the same calls in the same order (the
      tuner deals each rank the same number of chunks, padding with a discarded dummy one, and
      the distribution decodes to its full ``length``), so the model stays sharded: each block
      is gathered in its own forward hook and freed after it (``reshard_after_forward``), again
      in backward, and each backward reduce-scatters the blocks' gradients into the shards
      (summed). Within a step a rank holds the root's own parameters (embeddings, head) and
      their accumulated gradients (reduced once, in :meth:`finish`), one block gathered at a
      time, and shards of the rest. The blocks' gradients are reduced per backward, not
      accumulated: whole accumulated gradients would cost a whole model again; the price is
      one reduce-scatter per block and scoring batch instead of one per step. After tuning
      the model stays sharded (:meth:`hand_over`): call it on every rank alike, or gather it
      with :func:`whole_state_dict`.

    Tuning is online without averaging: the average and the offline proposal copy parameters,
    which FSDP holds as shards (:meth:`check_tuner`).
    """

    name = "fsdp"

    def __init__(self, distribution: Any, lockstep: bool = False) -> None:
        from torch.distributed.fsdp import FSDPModule, fully_shard

        model = distribution.model
        blocks = set(getattr(model, "_no_split_modules", None) or ())
        for module in list(model.modules()):
            if type(module).__name__ in blocks:
                fully_shard(module, reshard_after_forward=lockstep)
        # The root's own parameters (embeddings, head) stay gathered through a step either way:
        # a seq2seq distribution runs its encoder alone, outside the root's forward hooks.
        fully_shard(model, reshard_after_forward=False)
        self.model = model
        self.lockstep = lockstep
        self.units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in self.units:
            unit.set_gradient_divide_factor(1.0)
            # A plain SUM: a custom factor otherwise asks for PREMUL_SUM, which gloo lacks.
            unit.set_force_sum_reduction_for_comms(True)
        model.set_reshard_after_backward(lockstep)
        # The root's own parameters stay gathered through a step (see above).
        model.set_reshard_after_backward(False, recurse=False)
        if lockstep:
            distribution.decode_to_length = True
        # FSDP sets itself up on the root's first forward and refuses a block's forward before
        # it; a seq2seq distribution runs its encoder alone first. One forward now, on every rank.
        with torch.no_grad():
            model(**one_token(model))
        for unit in self.units:
            unit.reshard()

    @classmethod
    def check_tuner(cls, requested: str, config: Any, policy: Any, others: dict[str, Any]) -> None:
        """Online tuning without averaging; under lockstep, calls every rank can make alike."""
        if config.averaging != "none" or config.proposal != "online":
            chosen = " (parallel='auto' chose it from accelerate's FSDP config)"
            raise ValueError(
                "parallel='fsdp' tunes online without averaging (averaging='none', "
                "proposal='online'): the average and the offline proposal copy parameters, "
                "which FSDP holds as shards" + (chosen if requested == "auto" else "")
            )
        if config.fsdp_lockstep:
            size = config.sampling_batch_size
            batches = {"samples_per_context": (config.samples_per_context, size)}
            if config.validation_interval and config.validation_contexts:
                batches["validation_samples"] = (config.validation_samples, size)
            check_lockstep(policy, others, batches)

    @classmethod
    def create(cls, setup: Setup) -> ShardedFSDP:
        """Shard ``distribution.model`` (it replaces the parameters by their shards)."""
        require_hf_policy(setup.distribution, "parallel='fsdp' shards")
        return cls(setup.distribution, setup.lockstep)

    @contextlib.contextmanager
    def whole_model(self) -> Iterator[None]:
        """A step runs inside this: the whole model gathered (lockstep: only the root's own).

        Sharded again afterwards.
        """
        for unit in [self.model] if self.lockstep else self.units:
            unit.unshard()
        try:
            yield
        finally:
            for unit in self.units:
                unit.reshard()

    @contextlib.contextmanager
    def accumulating(self) -> Iterator[None]:
        """Backward passes accumulate unsharded gradients locally.

        Lockstep: only the root's own (each block reduce-scatters in its backward). The root's
        parameters also serve calls outside its forward (a seq2seq encoder run alone, tied
        embeddings), whose gradients arrive after FSDP's reduction of the root's in that
        backward: so the root reduces once, in :meth:`finish`.
        """
        recurse = not self.lockstep
        self.model.set_requires_gradient_sync(False, recurse=recurse)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True, recurse=recurse)

    def finish(self) -> None:
        """Reduce-scatter the accumulated gradients (summed) into each rank's shard.

        Lockstep: the blocks' zero gradients too (they add nothing), one block at a time.
        """
        zero_gradient_pass(self.model, self.model)

    def hand_over(self) -> None:
        """After tuning: gather the whole model on every rank (lockstep: leave it sharded).

        Sharded, every forward of the policy would be a collective, and whatever runs next
        (sampling, evaluation, a QRS sampler on the tuned policy) runs uneven numbers of
        forwards on the ranks. Gathered, the policy is a plain model on each rank; the next
        step (a later ``tune()``) shards it again at its end. Lockstep is for a model that
        does not fit whole on one device: it stays sharded.
        """
        if self.lockstep:
            return
        for unit in self.units:
            unit.unshard()

    def whole_state(
        self, parameters: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer
    ) -> WholeState:
        """Every shard of the parameters and the optimizer's moments gathered whole (CPU).

        The checkpoint format stays the one-process one (loadable under any world size).
        """
        with torch.no_grad():
            whole = {k: _whole(v.detach()) for k, v in parameters.items()}
        return WholeState(whole, _whole(optimizer.state_dict()))

    def load_parameters(
        self, parameters: dict[str, torch.nn.Parameter], stored: dict[str, torch.Tensor]
    ) -> None:
        """Copy this rank's shard of each whole stored parameter into the live one."""
        with torch.no_grad():
            for name, value in stored.items():
                parameters[name].copy_(_shard_like(parameters[name], value))

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
        """Restore the optimizer from the whole state, each parameter's moments cut to its shard."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        state = {}
        for index, entry in saved["state"].items():
            p = params[int(index)]
            state[index] = {
                k: _shard_like(p, v) if isinstance(v, torch.Tensor) and v.shape == p.shape else v
                for k, v in entry.items()
            }
        optimizer.load_state_dict({**saved, "state": state})


def _whole(value: Any) -> Any:
    """``value`` with every DTensor (an FSDP shard) gathered whole onto the CPU, recursively.

    A collective for each DTensor: every rank calls it on the same structure (a state dict's
    order is the same on every rank).
    """
    if isinstance(value, torch.distributed.tensor.DTensor):
        return value.full_tensor().cpu()
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def _shard_like(parameter: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` (whole, read by every rank) cut to ``parameter``'s shard when it is a DTensor."""
    if not isinstance(parameter, torch.distributed.tensor.DTensor):
        return value
    return torch.distributed.tensor.distribute_tensor(
        value.to(parameter.device, parameter.dtype),
        parameter.device_mesh,
        parameter.placements,
        src_data_rank=None,  # every rank holds the whole value: no communication
    )


def whole_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """A model's state dict gathered whole on rank 0 (CPU) when FSDP shards it, else ``None``.

    A collective when sharded: every rank calls it (ranks other than 0 get an empty dict), and
    the model is left as it was: gathered whole, as ``tune()`` leaves it, or sharded (under
    ``fsdp_lockstep``), one parameter gathered at a time. ``None`` means the model's own
    ``state_dict()`` is whole.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return None

    from torch.distributed.tensor import DTensor

    # Gathered whole (as tune() leaves it), or sharded (fsdp_lockstep: too large to gather).
    gathered = not any(isinstance(p, DTensor) for p in model.parameters())
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    whole = get_model_state_dict(model, options=options)
    for unit in model.modules():  # reading it resharded the model: gather it again (hand_over)
        if gathered and isinstance(unit, FSDPModule):
            unit.unshard()
    # Tied weights (an LM head sharing the input embeddings) come back as separate copies; keep
    # one name per tensor, as named_parameters() does and save_pretrained expects.
    distinct = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {n: v for n, v in whole.items() if n in distinct and isinstance(v, torch.Tensor)}


def check_lockstep(
    distribution: Any, others: dict[str, Any], batches: dict[str, tuple[int, int]]
) -> None:
    """Refuse what would make the ranks' calls of a lockstep-sharded model differ.

    ``others``: what else a step calls, by role (target, base, features), which must not run the
    policy's model (its calls would be collectives the tuner does not pair across ranks);
    ``batches``: ``{setting: (samples, sampling_batch_size)}``, whose chunks must be of equal
    size (a dummy chunk then makes the same calls as a real one).
    """
    problems = [
        f"{name}={n} is neither a multiple of sampling_batch_size={size} nor at most it"
        for name, (n, size) in batches.items()
        if n > size and n % size
    ]
    model = distribution.model
    problems += [
        f"the {role} ({type(other).__name__}) runs the policy's model (e.g. "
        "without_adapters()), which the tuner cannot call in step on every rank: give it its "
        "own copy of the base model"
        for role, other in others.items()
        if other is not None and _reaches(other, model)
    ]
    if problems:
        raise ValueError("fsdp_lockstep=True: " + "; ".join(problems))


def _reaches(
    value: Any, model: torch.nn.Module, depth: int = 6, seen: set[int] | None = None
) -> bool:
    """Whether ``value`` holds ``model`` (or a module wrapping it) in its attributes."""
    seen = set() if seen is None else seen
    if id(value) in seen or depth == 0:
        return False
    seen.add(id(value))
    if isinstance(value, torch.nn.Module):
        return any(m is model for m in value.modules())
    if isinstance(value, dict):
        items: list[Any] = list(value.values())
    elif isinstance(value, list | tuple | set):
        items = list(value)
    else:
        items = list(getattr(value, "__dict__", {}).values())
    if len(items) > 1000:  # a vocabulary, a list of samples: no model in there
        return False
    return any(_reaches(v, model, depth - 1, seen) for v in items)
