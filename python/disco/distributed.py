"""Data parallelism on ``torch.distributed`` with results that do not depend on the world size.

Work is cut into **chunks** keyed by ``(seed, purpose, step, context position, chunk index)``.
Each chunk's sampling is seeded from its key alone (:func:`chunk_seed`, a SHA-256 of a canonical
encoding), chunks are dealt to ranks round-robin, and every rank all-gathers the per-chunk
results (log-scores, feature values: small) and reduces them **in chunk order**. So every
per-sample statistic (log Z, baselines, metrics, a fitted λ, an accepted set) is bitwise the same
on 1, 2 or N processes; only gradients are summed across ranks (equal up to float summation
order): by an explicit all-reduce, accelerate's DDP or torch's FSDP2 (:func:`gradient_sync`).

One process is simply world size 1 (:func:`current_world` when ``torch.distributed`` is not
initialised): the same code runs, and the collectives are skipped.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.util
import json
import os
import pickle
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch

__all__ = [
    "AccelerateDDP",
    "Chunk",
    "GradientSum",
    "ShardedFSDP",
    "World",
    "chunk_seed",
    "current_world",
    "draw_chunk",
    "gradient_sync",
    "init_from_environment",
    "keyed_random",
    "plan_chunks",
    "shared_seed",
    "whole_state_dict",
]

T = TypeVar("T")
MAX_SEED = 2**63 - 1


def chunk_seed(*key: int | str) -> int:
    """A 63-bit seed from a key of ints and strings: the first 8 bytes of a SHA-256.

    The encoding is canonical (each part tagged with its type, JSON), so the seed is the same in
    every process, Python version and platform; Python's ``hash`` is salted per process and is
    never used.

    >>> chunk_seed(0, "tune", 3, 0, 1) == chunk_seed(0, "tune", 3, 0, 1)
    True
    >>> chunk_seed(0, "tune", 3, 0, 1) != chunk_seed(0, "tune", 3, 0, 2)
    True
    """
    parts = []
    for part in key:
        if isinstance(part, bool) or not isinstance(part, int | str):
            raise TypeError(f"a chunk key holds ints and strings, not {type(part).__name__}")
        parts.append(["i", part] if isinstance(part, int) else ["s", part])
    digest = hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Chunk:
    """One unit of work: ``size`` samples for the context at ``position``, keyed by ``key``."""

    index: int
    """Position in the job's chunk list (the order every reduction follows)."""
    position: int
    """Which of the job's contexts."""
    context: Any
    start: int
    """Offset of the chunk's first sample within its context's samples."""
    size: int
    key: tuple[int | str, ...]
    """``(*job key, context position, chunk number within the context)``."""

    @property
    def seed(self) -> int:
        """The seed of this chunk's draws: :func:`chunk_seed` of its key."""
        return chunk_seed(*self.key)


def plan_chunks(contexts: Sequence[Any], n: int, chunk_size: int, *key: int | str) -> list[Chunk]:
    """``n`` samples for each context in chunks of ``chunk_size``, context by context.

    The chunk for context position ``c`` and chunk ``j`` is keyed by ``(*key, c, j)``: the plan,
    and so every sample, depends on the key and the sizes, not on the world size.
    """
    if n < 1 or chunk_size < 1:
        raise ValueError(
            f"need at least one sample and a positive chunk size, got {n} and {chunk_size}"
        )
    chunks: list[Chunk] = []
    for position, context in enumerate(contexts):
        for j, start in enumerate(range(0, n, chunk_size)):
            size = min(chunk_size, n - start)
            chunks.append(Chunk(len(chunks), position, context, start, size, (*key, position, j)))
    return chunks


def _is_generator_state(state: Any) -> bool:
    reference = torch.Generator().get_state()
    return (
        isinstance(state, torch.Tensor)
        and state.dtype == reference.dtype
        and state.shape == reference.shape
    )


@contextlib.contextmanager
def keyed_random(distribution: Any, seed: int) -> Iterator[None]:
    """Run the body with torch's generators (and ``distribution``'s own) seeded from ``seed``.

    Distributions draw from torch's global generators (``LMDistribution``) or from their own
    torch generator exposed as ``random_state`` / ``set_random_state`` (``EnumerableLM``); both
    are seeded here and restored afterwards, so a keyed draw leaves no trace on other streams.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    own = getattr(distribution, "random_state", None)
    saved = own() if callable(own) else None
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if _is_generator_state(saved):
            distribution.set_random_state(torch.Generator().manual_seed(seed).get_state())
        try:
            yield
        finally:
            if _is_generator_state(saved):
                distribution.set_random_state(saved)


def draw_chunk(proposal: Any, chunk: Chunk) -> tuple[list[Any], npt.NDArray[np.float64]]:
    """The chunk's samples from ``proposal`` and their log-probabilities (float64 numpy).

    The one way disco draws a fixed number of samples for a context: batches are checked (an
    empty batch is an error, never an endless loop) and the stream is seeded by the chunk's key.
    """
    from disco.samplers._common import draw_batch  # the samplers import this module

    samples: list[Any] = []
    log_q: list[npt.NDArray[np.float64]] = []
    with keyed_random(proposal, chunk.seed):
        while len(samples) < chunk.size:
            want = chunk.size - len(samples)
            batch, lq = draw_batch(proposal, chunk.context, want)
            samples.extend(batch[:want])
            log_q.append(lq[:want])
    return samples, np.concatenate(log_q)


class World:
    """The processes working together: ``rank`` of ``size`` (size 1 without torch.distributed).

    Every method is a no-op or an identity at size 1, so callers have one code path.
    """

    def __init__(self, rank: int = 0, size: int = 1) -> None:
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is outside a world of size {size}")
        self.rank = rank
        self.size = size

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size})"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, shows progress and writes files."""
        return self.rank == 0

    def mine(self, chunks: Sequence[T]) -> list[T]:
        """The share of ``chunks`` dealt to this rank (round-robin)."""
        return list(chunks[self.rank :: self.size])

    # -- collectives ------------------------------------------------------------------------

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [value]
        out: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(out, value)
        return out

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if self.size == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def together(self, work: Callable[[], T]) -> T:
        """Run ``work`` on every rank; if it raises on any rank, raise that error on all of them.

        Ranks that fail tell the others at this point instead of leaving them waiting in a later
        collective: the first failing rank's error (same type and message) is raised everywhere.
        """
        try:
            result, error = work(), None
        except Exception as err:  # re-raised below on every rank
            result, error = None, err
        self.raise_any(error)
        return result  # type: ignore[return-value]

    def raise_any(self, error: BaseException | None) -> None:
        """Exchange this rank's error (or ``None``); raise the first rank's error on every rank."""
        if self.size == 1:
            if error is not None:
                raise error
            return
        errors = self.all_gather(_portable(error))
        if error is not None:
            raise error
        for other in errors:
            if other is not None:
                raise other

    def gather_chunks(self, chunks: Sequence[Chunk], work: Callable[[Chunk], T]) -> list[T]:
        """``work(chunk)`` for every chunk, each computed by one rank, returned in chunk order.

        An error in any rank's work is raised on every rank (see :meth:`together`).
        """

        def mine() -> list[tuple[int, T]]:
            return [(c.index, work(c)) for c in self.mine(chunks)]

        try:
            local, error = mine(), None
        except Exception as err:  # re-raised below on every rank
            local, error = [], err
        if self.size == 1:
            if error is not None:
                raise error
            return [value for _, value in local]
        gathered = self.all_gather((_portable(error), local))
        if error is not None:
            raise error
        for other, _ in gathered:
            if other is not None:
                raise other
        results = dict(pair for _, part in gathered for pair in part)
        return [results[c.index] for c in chunks]

    def sum_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the ranks (an all-reduce), in place.

        A parameter no rank computed a gradient for keeps ``grad=None`` (as in one process, so
        optimisers skip it); one computed on some ranks only counts zeros for the others.
        """
        if self.size == 1:
            return
        device = parameters[0].device if parameters else torch.device("cpu")
        present = torch.tensor(
            [p.grad is not None for p in parameters], dtype=torch.int32, device=device
        )
        torch.distributed.all_reduce(present, op=torch.distributed.ReduceOp.MAX)
        for p, any_rank in zip(parameters, present.tolist()):
            if not any_rank:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.size > 1:
            torch.distributed.barrier()


def _portable(error: BaseException | None) -> BaseException | None:
    """``error`` if it survives pickling, else a ``RuntimeError`` with its one-line message."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # any pickling failure: send the message
        return RuntimeError(f"{type(error).__name__}: {error}")


def current_world() -> World:
    """The world of ``torch.distributed`` when a process group is initialised, else size 1."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def shared_seed(seed: int | None, world: World | None = None) -> int:
    """``seed``, or one drawn from torch's generator on rank 0 and shared with every rank."""
    world = world or current_world()
    if seed is None:
        seed = int(torch.randint(0, MAX_SEED, (1,)))
    return int(world.broadcast(seed))


def init_from_environment(timeout_s: float = 1800.0) -> World:
    """Join the process group that ``torchrun`` or ``accelerate launch`` describes, if any.

    Those launchers set ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``; with ``WORLD_SIZE`` above 1 the group is initialised (NCCL when CUDA is
    available, each rank on GPU ``LOCAL_RANK``; gloo otherwise). Without a launcher, or when a
    group already exists, nothing changes. Returns the world.
    """
    dist = torch.distributed
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and dist.is_available() and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            backend = "nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return current_world()


# ------------------------------------------------------------------------ gradient summation
# The tuner backpropagates each rank's chunks, then needs the exact global SUM of the gradients
# on every rank (one process's gradient of the whole batch). Three ways, one interface.


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
