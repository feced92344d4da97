"""How a tuned policy's gradients meet across ranks: one interface, three ways.

The tuner backpropagates each rank's chunks, then needs the exact global SUM of the gradients on
every rank (one process's gradient of the whole batch): an explicit all-reduce
(:class:`GradientSum`), accelerate's DDP with a summing hook (:class:`AccelerateDDP`), torch's
FSDP2 (:class:`ShardedFSDP`) or DeepSpeed's ZeRO stage 1 or 2 through accelerate
(:class:`DeepSpeedZeRO`); :func:`gradient_sync` picks one from ``TunerConfig.parallel``.
The chunks and reductions they serve are in :mod:`disco.distributed`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import typing
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from disco.distributed import World

__all__ = [
    "AccelerateDDP",
    "DeepSpeedZeRO",
    "GradientPath",
    "GradientSum",
    "ShardedFSDP",
    "check_lockstep",
    "gradient_sync",
    "whole_state_dict",
]


class GradientPath:
    """The interface every way shares, with the behaviour of a policy held whole on each rank.

    A step runs inside :meth:`whole_model`, its backward passes inside :meth:`accumulating`;
    :meth:`finish` turns the accumulated local gradients into the global sum on every rank and
    :meth:`step` applies it. :meth:`prepare` takes the optimizer once it is made, and
    :meth:`hand_over` leaves the tuned policy usable after tuning.
    """

    name: str
    lockstep = False
    """Whether every rank must call the policy's model alike (only FSDP's lockstep mode)."""

    def prepare(self, optimizer: torch.optim.Optimizer, max_grad_norm: float | None) -> None:
        """Take the tuner's optimizer (nothing to do unless the way steps it itself)."""

    @contextlib.contextmanager
    def whole_model(self) -> Iterator[None]:
        """A step (or a validation) runs inside this: every rank holds the whole model."""
        yield

    @contextlib.contextmanager
    def accumulating(self) -> Iterator[None]:
        """The backward passes of one step run inside this (local accumulation)."""
        yield

    def chunk_done(self) -> None:
        """After one chunk's backward passes (where a way accumulates chunk by chunk)."""

    def finish(self) -> None:
        """Turn the accumulated local gradients into the global sum, on every rank."""
        raise NotImplementedError

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: Sequence[torch.nn.Parameter],
        max_grad_norm: float | None,
    ) -> float:
        """Clip the summed gradients to ``max_grad_norm`` (their global norm), then step.

        Returns the norm before clipping (0 when no parameter has a gradient).
        """
        params = [p for p in parameters if p.grad is not None]
        norm = 0.0
        if params:
            max_norm = max_grad_norm if max_grad_norm is not None else math.inf
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        optimizer.step()
        return norm

    def hand_over(self) -> None:
        """After tuning: leave the policy usable like any model (here it already is)."""


class GradientSum(GradientPath):
    """Every rank holds the whole policy; the gradients are summed exactly, chunk by chunk.

    Each chunk's gradient is added to a float64 total as soon as its backward passes end, and
    :meth:`finish` all-reduces the totals in float64 and rounds them once to the parameters'
    type. Float64 holds a sum of float32 terms exactly (unless their exponents span more than 29
    bits), so the step does not depend on how the chunks were dealt: one process and N processes
    take the same step, bit for bit, and sample the same afterwards. The way for any policy (an
    ``EnumerableLM`` is not a Hugging Face model), and the one ``'auto'`` picks for a policy
    held whole.
    """

    name = "none"

    def __init__(self, world: World, parameters: Sequence[torch.nn.Parameter]) -> None:
        self.world = world
        self.parameters = list(parameters)
        self._totals: dict[int, torch.Tensor] = {}

    def chunk_done(self) -> None:
        """Move the chunk's gradients into the float64 totals (the parameters' ``grad`` cleared)."""
        for i, p in enumerate(self.parameters):
            if p.grad is None:
                continue
            total = self._totals.get(i)
            if total is None:
                self._totals[i] = p.grad.detach().to(torch.float64, copy=True)
            else:
                total += p.grad.detach()
            p.grad = None

    def finish(self) -> None:
        """Turn the accumulated local gradients into the global sum, on every rank.

        A parameter no rank computed a gradient for keeps ``grad=None`` (as in one process, so
        optimisers skip it).
        """
        self.chunk_done()  # whatever was accumulated outside a chunk
        totals = self.world.sum_exactly(self._totals, self.parameters)
        self._totals = {}
        for i, total in totals.items():
            p = self.parameters[i]
            p.grad = total.to(p.dtype)


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


class AccelerateDDP(GradientPath):
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
            model(**_one_token(model))
        for unit in self.units:
            unit.reshard()

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
        _zero_gradient_pass(self.model, self.model)

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


class DeepSpeedZeRO(GradientPath):
    """The policy's Hugging Face model and the tuner's optimizer in a DeepSpeed ZeRO engine.

    accelerate prepares the model and the tuner's own torch optimizer into a DeepSpeed engine,
    ZeRO stage 2 (or 1) from ``accelerate launch``'s DeepSpeed config, else stage 2: every rank
    holds the whole model, and 1/N of the optimizer's state, of the float32 master copy of the
    parameters that the optimizer updates and (stage 2) of the reduced gradients. ZeRO reduces
    gradients in backward hooks, and ranks hold uneven numbers of chunks (some none), so no
    chunk's backward may reach them: the step's backward passes run inside the engine's
    ``coalesce_grad_reduction`` (the hooks wait, gradients accumulate locally) and
    :meth:`finish` leaves it, which reduces every gradient once, the same calls on every rank
    (a rank without a gradient contributes zeros). DeepSpeed averages over the ranks, so the
    gradients are first multiplied by the world size: the step is the exact global sum.
    :meth:`step` is the engine's: the global gradient norm, clipping to ``max_grad_norm`` and
    each rank's update of its partition, whose parameters it then shares.
    """

    name = "deepspeed"

    def __init__(self, distribution: Any, world: World, accelerator: Any) -> None:
        self.world = world
        self.model = distribution.model
        self.accelerator = accelerator
        self.config: dict[str, Any] = accelerator.state.deepspeed_plugin.deepspeed_config
        _check_deepspeed_config(self.config)
        self.engine: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        # The parameters of each of the optimizer's groups: DeepSpeed replaces each group's
        # parameters by one flat float32 partition of them.
        self.groups: list[list[torch.nn.Parameter]] = []
        self._coalescing: contextlib.ExitStack | None = None

    def prepare(self, optimizer: torch.optim.Optimizer, max_grad_norm: float | None) -> None:
        """Hand the tuner's optimizer to the engine, which steps it from now on.

        The learning rate stays the torch optimizer's (the tuner's schedule sets it).
        """
        self.config.update(
            # The tuner cuts its own batches; DeepSpeed only checks these against each other.
            train_micro_batch_size_per_gpu=1,
            gradient_accumulation_steps=1,
            train_batch_size=self.world.size,
            gradient_clipping=0.0 if max_grad_norm is None else float(max_grad_norm),
        )
        self.groups = [list(group["params"]) for group in optimizer.param_groups]
        self.engine, _ = self.accelerator.prepare(self.model, optimizer)
        self.optimizer = optimizer

    @contextlib.contextmanager
    def accumulating(self) -> Iterator[None]:
        """The step's backward passes: local, ZeRO's reduction held back until :meth:`finish`."""
        stack = contextlib.ExitStack()
        stack.enter_context(self.engine.coalesce_grad_reduction())
        self._coalescing = stack
        try:
            yield
        except Exception:
            # Every rank raises the same error here (the chunks' errors are shared): leave
            # the engine's context on each, with the same reduction, before raising it.
            self.finish()
            raise

    def finish(self) -> None:
        """Reduce the accumulated gradients (summed) into each rank's partition."""
        stack, self._coalescing = self._coalescing, None
        if stack is None:
            return
        with torch.no_grad():
            for group in self.groups:
                for p in group:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    elif self.world.size > 1:
                        p.grad.mul_(self.world.size)
        stack.close()

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: Sequence[torch.nn.Parameter],
        max_grad_norm: float | None,
    ) -> float:
        """The engine's step (global norm, clipping, the partitions' update); returns the norm.

        The engine holds the optimizer and the clipping norm since :meth:`prepare`.
        """
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return 0.0 if norm is None else float(norm)

    def whole_optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state as one process's torch optimizer holds it: per parameter, whole.

        A collective (one all-reduce per state tensor and group): every rank calls it.
        """
        assert self.optimizer is not None
        state: dict[int, dict[str, Any]] = {}
        groups = []
        first = 0
        for group, params in zip(self.optimizer.param_groups, self.groups):
            flat = group["params"][0]
            held = self.optimizer.state.get(flat, {})
            whole = {
                key: _gather_partition(value, params)
                for key, value in held.items()
                if _is_partition(value, flat)
            }
            if held:
                for k in range(len(params)):
                    state[first + k] = {
                        key: whole[key][k] if key in whole else value.clone()
                        for key, value in held.items()
                    }
            entry = {key: value for key, value in group.items() if key != "params"}
            groups.append({**entry, "params": list(range(first, first + len(params)))})
            first += len(params)
        return {"state": state, "param_groups": groups}

    def restore(self, optimizer_state: dict[str, Any]) -> None:
        """After a checkpoint's parameters were copied into the model: the rest of the state.

        The float32 master copy (which the next step updates) is set from the model's
        parameters and the optimizer's state is cut into this rank's partition from the whole
        one (``optimizer_state``, the one-process format). No communication.
        """
        from deepspeed.utils import safe_set_full_fp32_param

        assert self.optimizer is not None
        saved = {int(k): v for k, v in optimizer_state["state"].items()}
        first = 0
        for group, saved_group, params in zip(
            self.optimizer.param_groups, optimizer_state["param_groups"], self.groups
        ):
            for p in params:
                safe_set_full_fp32_param(p, p.detach())
            group.update({k: v for k, v in saved_group.items() if k != "params"})
            entries = {k: saved[first + k] for k in range(len(params)) if first + k in saved}
            first += len(params)
            if not entries:
                continue
            flat = group["params"][0]
            held = self.optimizer.state.setdefault(flat, {})
            k0, sample = next(iter(entries.items()))
            for key, value in sample.items():
                if isinstance(value, torch.Tensor) and value.shape == params[k0].shape:
                    # Kept in place when it exists: DeepSpeed's views of it stay valid.
                    target = held.get(key)
                    if target is None:
                        target = held[key] = torch.zeros_like(flat)
                    _scatter_partition(target, params, {k: e[key] for k, e in entries.items()})
                else:
                    held[key] = value.clone() if isinstance(value, torch.Tensor) else value


def _is_partition(value: Any, flat: torch.Tensor) -> bool:
    """Whether an optimizer state entry is one value per element of the flat partition."""
    return isinstance(value, torch.Tensor) and value.shape == flat.shape


def _fragments(params: Sequence[torch.nn.Parameter]) -> Iterator[tuple[int, int, int, int]]:
    """Where this rank's partition holds each parameter's pieces (DeepSpeed's map of them).

    For each parameter with a piece here: its index, the piece's start in the parameter and in
    the partition, and its length.
    """
    for k, p in enumerate(params):
        mapping = getattr(p, "_hp_mapping", None)
        if mapping is not None:
            lp, hp = mapping.lp_fragment_address, mapping.hp_fragment_address
            yield k, int(lp.start), int(hp.start), int(lp.numel)


def _gather_partition(
    value: torch.Tensor, params: Sequence[torch.nn.Parameter]
) -> list[torch.Tensor]:
    """Each parameter's whole state from every rank's partition of it (one all-reduce)."""
    sizes = [p.numel() for p in params]
    offsets = [sum(sizes[:k]) for k in range(len(sizes))]
    whole = torch.zeros(sum(sizes), dtype=value.dtype, device=value.device)
    for k, start, at, length in _fragments(params):
        whole.narrow(0, offsets[k] + start, length).copy_(value.narrow(0, at, length))
    torch.distributed.all_reduce(whole)  # each element is held by one rank, zeros elsewhere
    return [
        whole.narrow(0, offset, size).view(p.shape).cpu().clone()  # each its own storage
        for offset, size, p in zip(offsets, sizes, params)
    ]


def _scatter_partition(
    target: torch.Tensor, params: Sequence[torch.nn.Parameter], whole: dict[int, torch.Tensor]
) -> None:
    """Copy this rank's pieces of each parameter's whole state into its flat partition."""
    for k, start, at, length in _fragments(params):
        if k in whole:
            piece = whole[k].reshape(-1).narrow(0, start, length)
            target.narrow(0, at, length).copy_(piece.to(target.device, target.dtype))


def _check_deepspeed_config(config: dict[str, Any]) -> None:
    """Refuse the DeepSpeed settings the tuner cannot honour, saying which and why."""
    stage = config.get("zero_optimization", {}).get("stage", 0)
    problems = []
    if stage not in (1, 2):
        problems.append(
            f"ZeRO stage {stage}: stage 3 shards the parameters, so every forward pass would be a "
            "collective (ranks run uneven numbers of them); use stage 2 or 1, or parallel='fsdp'"
            if stage == 3
            else f"ZeRO stage {stage}: use stage 2 or 1 (stage 0 is plain data parallelism: "
            "parallel='ddp')"
        )
    for key in ("optimizer", "scheduler"):
        if key in config:
            problems.append(
                f"an {key!r} section: the tuner's own optimizer and learning-rate schedule "
                "(TunerConfig.optimizer, learning_rate, scheduler) are used; remove it"
            )
    for key in ("fp16", "bf16"):
        if config.get(key, {}).get("enabled") is True:
            problems.append(
                f"{key} enabled: the tuner's `autocast` setting sets the precision; disable it"
            )
    zero = config.get("zero_optimization", {})
    for key in ("offload_optimizer", "offload_param"):
        if str(zero.get(key, {}).get("device", "none")) not in ("none", "auto"):
            problems.append(f"{key}: not supported with the tuner (DeepSpeed's own CPU Adam)")
    if problems:
        raise ValueError("parallel='deepspeed': the DeepSpeed config has " + "; ".join(problems))


def _accelerate_deepspeed(distribution: Any, world: World) -> DeepSpeedZeRO:
    """An accelerate DeepSpeed engine for ``distribution.model`` (ZeRO-2 unless configured)."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin

    # `accelerate launch` with a DeepSpeed config describes it in the environment (accelerate
    # reads it); otherwise ZeRO-2 with accelerate's defaults.
    launched = _configured("DEEPSPEED")
    accelerator = Accelerator(
        device_placement=False,
        mixed_precision="no",  # the tuner's `autocast` setting, as for DDP
        deepspeed_plugin=None if launched else DeepSpeedPlugin(zero_stage=2),
    )
    # No check of accelerator.num_processes against the world here: on CPUs accelerate 1.15
    # finds no device backend under DeepSpeed and reports one process, while the engine itself
    # communicates in torch.distributed's default group (the world's) all the same.
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if kind != "DEEPSPEED":
        raise ValueError(f"parallel='deepspeed': accelerate set up {kind}, not DeepSpeed")
    return DeepSpeedZeRO(distribution, world, accelerator)


def _accelerate_ddp(distribution: Any, world: World) -> AccelerateDDP:
    """Wrap ``distribution.model`` with accelerate's DDP (an error when it cannot)."""
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
        raise ValueError(
            f"parallel='ddp': accelerate sees {accelerator.num_processes} process(es) where "
            f"torch.distributed has {world.size}; launch with `accelerate launch` or `torchrun`, "
            "which set WORLD_SIZE, RANK and LOCAL_RANK for it"
        )
    kind = str(accelerator.distributed_type).rsplit(".", 1)[-1]
    if not kind.startswith("MULTI_"):  # FSDP, DEEPSPEED, ...: not plain data parallelism
        raise ValueError(
            f"parallel='ddp': accelerate is configured for {kind}, "
            "whose wrappers the tuner does not use; set parallel='fsdp' (disco shards the model "
            "with torch's fully_shard), parallel='deepspeed' (ZeRO through accelerate, from an "
            "accelerate DeepSpeed config) or parallel='none' (whole copies, summed gradients)"
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


def _configured(kind: str) -> bool:
    """Whether ``accelerate launch`` was given a config file for ``kind``.

    ``kind`` is ``"DEEPSPEED"`` or ``"FSDP"``: the launcher says so in the environment of the
    processes it starts.
    """
    return os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true"


def shards_the_policy(parallel: str, distribution: Any, world: World) -> bool:
    """Whether :func:`gradient_sync` will shard the policy with FSDP.

    It does for ``'fsdp'``, and for ``'auto'`` with a Hugging Face policy under an accelerate
    FSDP config, on more than one process.
    """
    if world.size == 1:
        return False
    return parallel == "fsdp" or (
        parallel == "auto" and _configured("FSDP") and _is_hf_policy(distribution)
    )


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


def _is_hf_policy(distribution: Any) -> bool:
    model = getattr(distribution, "model", None)
    return (
        isinstance(model, torch.nn.Module)
        and hasattr(model, "config")
        and model is not distribution
    )


def gradient_sync(
    parallel: str,
    distribution: Any,
    parameters: Sequence[torch.nn.Parameter],
    world: World,
    lockstep: bool = False,
) -> GradientPath:
    """How a tuner's gradients meet across ``world`` (see ``TunerConfig.parallel``).

    Call it before the optimizer is made: ``'fsdp'`` replaces the parameters by their shards,
    and ``'deepspeed'``'s engine is made around the optimizer (:meth:`DeepSpeedZeRO.prepare`).
    One process and ``'none'`` sum explicitly (nothing to do at size 1); ``'ddp'`` and
    ``'deepspeed'`` need a Hugging Face policy and accelerate seeing the group (errors
    otherwise); ``'auto'`` is ``'deepspeed'`` under an accelerate DeepSpeed config, ``'fsdp'``
    under an accelerate FSDP config (for a Hugging Face policy), else ``'none'``: the exact
    sum, which makes N processes take one process's step bit for bit. ``lockstep``: FSDP keeps the model sharded within a step
    (:class:`ShardedFSDP`); the caller makes every rank's calls of the model the same.
    """
    if world.size == 1 or parallel == "none":
        return GradientSum(world, parameters)
    if parallel == "deepspeed" or (parallel == "auto" and _configured("DEEPSPEED")):
        if not _is_hf_policy(distribution):
            raise ValueError(
                f"parallel={parallel!r} (DeepSpeed) runs a Hugging Face model; "
                f"{type(distribution).__name__} has none (use parallel='none': an explicit "
                "all-reduce of its gradients)"
            )
        missing = [m for m in ("accelerate", "deepspeed") if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(
                f"parallel={parallel!r} (DeepSpeed) needs {' and '.join(missing)}, not "
                "installed: pip install 'disco-control[deepspeed]' (or set parallel='none')"
            )
        return _accelerate_deepspeed(distribution, world)
    if shards_the_policy(parallel, distribution, world):
        if not _is_hf_policy(distribution):
            raise ValueError(
                f"parallel='fsdp' shards a Hugging Face model; {type(distribution).__name__} has "
                "none (use parallel='none': an explicit all-reduce of its gradients)"
            )
        return ShardedFSDP(distribution, lockstep)
    if parallel == "auto":  # a policy held whole: the exact sum
        return GradientSum(world, parameters)
    if parallel == "ddp":
        if importlib.util.find_spec("accelerate") is None:
            raise ValueError(
                "parallel='ddp' wraps the policy with accelerate, which is not installed: "
                "pip install 'disco-control[distributed]' (or set parallel='none')"
            )
        if not _is_hf_policy(distribution):
            raise ValueError(
                f"parallel='ddp' wraps a Hugging Face model; {type(distribution).__name__} has none "
                "(use parallel='none': an explicit all-reduce of its gradients)"
            )
        return _accelerate_ddp(distribution, world)
    raise ValueError(
        f"parallel={parallel!r} is not one of ('auto', 'ddp', 'deepspeed', 'fsdp', 'none')"
    )
