"""How a tuned policy's gradients meet across ranks: one interface, three ways.

The tuner backpropagates each rank's chunks, then needs the exact global SUM of the gradients on
every rank (one process's gradient of the whole batch): an explicit all-reduce
(:class:`GradientSum`), accelerate's DDP with a summing hook (:class:`AccelerateDDP`) or torch's
FSDP2 (:class:`ShardedFSDP`); :func:`gradient_sync` picks one from ``TunerConfig.parallel``.
The chunks and reductions they serve are in :mod:`disco.distributed`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import typing
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from disco.distributed import World

__all__ = [
    "AccelerateDDP",
    "GradientSum",
    "ShardedFSDP",
    "gradient_sync",
    "whole_state_dict",
]


class GradientSum:
    """Every rank holds the whole policy; :meth:`finish` all-reduces each gradient (a sum).

    The way for any policy (an ``EnumerableLM`` is not a Hugging Face model) and for one
    process, where it does nothing.
    """

    name = "none"

    def __init__(self, world: World, parameters: Sequence[torch.nn.Parameter]) -> None:
        self.world = world
        self.parameters = list(parameters)

    @contextlib.contextmanager
    def whole_model(self) -> Iterator[None]:
        """A step (or a validation) runs inside this: every rank holds the whole model."""
        yield

    @contextlib.contextmanager
    def accumulating(self) -> Iterator[None]:
        """The backward passes of one step run inside this (local accumulation)."""
        yield

    def finish(self) -> None:
        """Turn the accumulated local gradients into the global sum, on every rank."""
        self.world.sum_gradients(self.parameters)

    def hand_over(self) -> None:
        """After tuning: leave the policy usable like any model (here it already is)."""


def _sum_hook(
    state: Any, bucket: torch.distributed.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """DDP's all-reduce without its division by the world size: the gradients are summed."""
    work = torch.distributed.all_reduce(bucket.buffer(), async_op=True)
    assert work is not None
    return work.get_future().then(lambda done: done.value()[0])


# DDP compares the hook's annotations with the classes themselves; this module's annotations
# are strings (``from __future__ import annotations``), so resolve them.
_sum_hook.__annotations__ = typing.get_type_hints(_sum_hook)


class _Routed:
    """Stands in for a distribution's model: calls go through the wrapper, the rest to the model.

    ``LMDistribution`` calls its ``model`` for forward passes and reads attributes from it
    (``config``, ``get_input_embeddings()``): the wrapper must see the calls (its hooks do the
    communication) and the model answers everything else.
    """

    def __init__(self, wrapper: torch.nn.Module, model: torch.nn.Module) -> None:
        self._wrapper = wrapper
        self._model = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class AccelerateDDP:
    """The policy's Hugging Face model wrapped by accelerate's ``DistributedDataParallel``.

    Ranks deal themselves uneven numbers of chunks (none, some), so no backward pass may be a
    collective: every chunk's backward runs under DDP's ``no_sync`` (local accumulation, and the
    policy's forward passes go through the wrapper there), and :meth:`finish` runs one tiny
    forward/backward of a zero gradient outside it, on every rank, which all-reduces the
    accumulated gradients in DDP's buckets. A communication hook sums where DDP averages, so
    the step is the exact global sum :class:`GradientSum` computes (no loss rescaling).
    Buffers are not broadcast at each forward (a collective per forward would deadlock ranks
    with different numbers of forwards; they are equal on every rank anyway).
    """

    name = "ddp"

    def __init__(
        self, distribution: Any, wrapper: torch.nn.parallel.DistributedDataParallel
    ) -> None:
        self.distribution = distribution
        self.model = distribution.model
        self.wrapper = wrapper
        wrapper.register_comm_hook(None, _sum_hook)

    @contextlib.contextmanager
    def whole_model(self) -> Iterator[None]:
        """Every rank holds the whole model anyway."""
        yield

    @contextlib.contextmanager
    def accumulating(self) -> Iterator[None]:
        """The step's backward passes: through the wrapper, without synchronising."""
        routed = _Routed(self.wrapper, self.model)
        self.distribution.model = routed
        try:
            with self.wrapper.no_sync():
                yield
        finally:
            self.distribution.model = self.model

    def finish(self) -> None:
        """One synchronising pass: a one-token forward, backpropagating zeros."""
        _zero_gradient_pass(self.wrapper, self.model)

    def hand_over(self) -> None:
        """After tuning: the model itself was never replaced (only wrapped during steps)."""


def _zero_gradient_pass(wrapper: Any, model: torch.nn.Module) -> None:
    """A one-token forward through ``wrapper`` and a backward of zeros, on every rank.

    It runs the wrapper's gradient communication on what the step accumulated and adds nothing.
    """
    with torch.enable_grad():
        logits = wrapper(**_one_token(model)).logits
        logits.backward(torch.zeros_like(logits))


def _one_token(model: torch.nn.Module) -> dict[str, Any]:
    """The smallest full forward of a Hugging Face model: one pad token (both sides for seq2seq)."""
    from disco.tuners.modules import device_of  # the tuners import this module

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


class ShardedFSDP:
    """The policy's Hugging Face model sharded by torch's FSDP2 (``fully_shard``).

    Each transformer block (the model's ``_no_split_modules`` classes) and then the model are
    sharded, as accelerate's FSDP2 plugin does; between steps each rank holds one shard of the
    parameters, their gradients and the optimizer's state. Ranks run uneven numbers of forward
    passes (their chunks; generation stops when every row has ended), and under FSDP every
    forward would be a collective: so a step (:meth:`whole_model`) all-gathers the whole model
    once, runs every forward and backward locally without resharding or gradient sync, and
    :meth:`finish` reduce-scatters the accumulated gradients with one zero-gradient pass (a sum:
    the divide factor is 1). Peak memory within a step is a whole model per rank.
    """

    name = "fsdp"

    def __init__(self, distribution: Any) -> None:
        from torch.distributed.fsdp import FSDPModule, fully_shard

        model = distribution.model
        blocks = set(getattr(model, "_no_split_modules", None) or ())
        for module in list(model.modules()):
            if type(module).__name__ in blocks:
                fully_shard(module, reshard_after_forward=False)
        fully_shard(model, reshard_after_forward=False)
        self.model = model
        self.units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in self.units:
            unit.set_gradient_divide_factor(1.0)
            # A plain SUM: a custom factor otherwise asks for PREMUL_SUM, which gloo lacks.
            unit.set_force_sum_reduction_for_comms(True)
        model.set_reshard_after_backward(False)
        # FSDP sets itself up on the root's first forward and refuses a block's forward before
        # it; a seq2seq distribution runs its encoder alone first. One forward now, on every rank.
        with torch.no_grad():
            model(**_one_token(model))
        for unit in self.units:
            unit.reshard()

    @contextlib.contextmanager
    def whole_model(self) -> Iterator[None]:
        """Gather the whole model on every rank for the body; shard it again afterwards."""
        for unit in self.units:
            unit.unshard()
        try:
            yield
        finally:
            for unit in self.units:
                unit.reshard()

    @contextlib.contextmanager
    def accumulating(self) -> Iterator[None]:
        """Backward passes accumulate unsharded gradients locally."""
        self.model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)

    def finish(self) -> None:
        """Reduce-scatter the accumulated gradients (summed) into each rank's shard."""
        _zero_gradient_pass(self.model, self.model)

    def hand_over(self) -> None:
        """After tuning: gather the whole model on every rank.

        Sharded, every forward of the policy would be a collective, and whatever runs next
        (sampling, evaluation, a QRS sampler on the tuned policy) runs uneven numbers of
        forwards on the ranks. Gathered, the policy is a plain model on each rank; the next
        step (a later ``tune()``) shards it again at its end.
        """
        for unit in self.units:
            unit.unshard()


def _accelerate_ddp(distribution: Any, world: World, required: bool) -> AccelerateDDP | None:
    """Wrap ``distribution.model`` with accelerate; ``None`` (or an error) when it cannot."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from disco.tuners.modules import device_of  # the tuners import this module

    model = distribution.model
    device = device_of(model)
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        device_placement=False,
        # Precision is the tuner's `autocast` setting: accelerate's mixed precision (from a
        # launcher's config) would wrap the model's forward a second time, sampling included.
        mixed_precision="no",
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    if accelerator.num_processes != world.size:
        if not required:
            return None
        raise ValueError(
            f"parallel='ddp': accelerate sees {accelerator.num_processes} process(es) where "
            f"torch.distributed has {world.size}; launch with `accelerate launch` or `torchrun`, "
            "which set WORLD_SIZE, RANK and LOCAL_RANK for it"
        )
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if not kind.startswith("MULTI_"):  # FSDP, DEEPSPEED, ...: not plain data parallelism
        raise ValueError(
            f"parallel={'ddp' if required else 'auto'}: accelerate is configured for {kind}, "
            "whose wrappers the tuner does not use; set parallel='fsdp' (disco shards the model "
            "with torch's fully_shard) or parallel='none' (whole copies, summed gradients)"
        )
    with warnings.catch_warnings():
        # torch 2.15 renames the flag (forward_sync_buffers); accelerate 1.15 only passes this one.
        warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
        wrapper = accelerator.prepare_model(model, device_placement=False)
    if not isinstance(wrapper, torch.nn.parallel.DistributedDataParallel):
        raise ValueError(
            f"accelerate ({kind}) wrapped the model in {type(wrapper).__name__}, not "
            "DistributedDataParallel; set parallel='none'"
        )
    return AccelerateDDP(distribution, wrapper)


def whole_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """A model's state dict gathered whole on rank 0 (CPU) when FSDP shards it, else ``None``.

    A collective when sharded: every rank calls it (ranks other than 0 get an empty dict), and
    the model is left gathered whole, as ``tune()`` leaves it. ``None`` means the model's own
    ``state_dict()`` is whole.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return None

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    whole = get_model_state_dict(model, options=options)
    for unit in model.modules():  # reading it resharded the model: gather it again (hand_over)
        if isinstance(unit, FSDPModule):
            unit.unshard()
    # Tied weights (an LM head sharing the input embeddings) come back as separate copies; keep
    # one name per tensor, as named_parameters() does and save_pretrained expects.
    distinct = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {n: v for n, v in whole.items() if n in distinct and isinstance(v, torch.Tensor)}


def _is_hf_policy(distribution: Any) -> bool:
    model = getattr(distribution, "model", None)
    return (
        isinstance(model, torch.nn.Module)
        and hasattr(model, "config")
        and model is not distribution
    )


def gradient_sync(
    parallel: str, distribution: Any, parameters: Sequence[torch.nn.Parameter], world: World
) -> GradientSum | AccelerateDDP | ShardedFSDP:
    """How a tuner's gradients meet across ``world`` (see ``TunerConfig.parallel``).

    Call it before the optimizer is made: ``'fsdp'`` replaces the parameters by their shards.
    One process and ``'none'`` sum explicitly (nothing to do at size 1); ``'ddp'`` wraps a
    Hugging Face policy with accelerate (an error for any other policy, or when accelerate does
    not see the group); ``'auto'`` does that when it can and sums explicitly otherwise.
    """
    if world.size == 1 or parallel == "none":
        return GradientSum(world, parameters)
    if parallel == "fsdp":
        if not _is_hf_policy(distribution):
            raise ValueError(
                f"parallel='fsdp' shards a Hugging Face model; {type(distribution).__name__} has "
                "none (use parallel='none': an explicit all-reduce of its gradients)"
            )
        return ShardedFSDP(distribution)
    if parallel in ("ddp", "auto"):
        if importlib.util.find_spec("accelerate") is None:
            if parallel == "auto":
                return GradientSum(world, parameters)
            raise ValueError(
                "parallel='ddp' wraps the policy with accelerate, which is not installed: "
                "pip install 'disco-control[distributed]' (or set parallel='none')"
            )
        if not _is_hf_policy(distribution):
            if parallel == "auto":
                return GradientSum(world, parameters)
            raise ValueError(
                f"parallel='ddp' wraps a Hugging Face model; {type(distribution).__name__} has none "
                "(use parallel='none': an explicit all-reduce of its gradients)"
            )
        wrapped = _accelerate_ddp(distribution, world, required=parallel == "ddp")
        return wrapped if wrapped is not None else GradientSum(world, parameters)
    raise ValueError(f"parallel={parallel!r} is not one of ('auto', 'ddp', 'fsdp', 'none')")
