"""Data parallelism on ``torch.distributed`` with results that do not depend on the world size.

Work is cut into **chunks** keyed by ``(seed, purpose, step, context position, chunk index)``.
Each chunk's sampling is seeded from its key alone (:func:`chunk_seed`, a SHA-256 of a canonical
encoding), chunks are dealt to ranks round-robin, and every rank all-gathers the per-chunk
results (log-scores, feature values: small) and reduces them **in chunk order**. So every
per-sample statistic (log Z, baselines, metrics, a fitted λ, an accepted set) is bitwise the same
on 1, 2 or N processes; only gradients are summed across ranks (equal up to float summation
order): by an explicit all-reduce, accelerate's DDP or torch's FSDP2 (:mod:`disco.parallel`).

One process is simply world size 1 (:func:`current_world` when ``torch.distributed`` is not
initialised): the same code runs, and the collectives are skipped.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from disco._calls import draw_batch

# torch is imported where it is used: the samplers, and with them ``disco list``, import this
# module, and cost no torch.
if TYPE_CHECKING:
    import torch

__all__ = [
    "Chunk",
    "World",
    "chunk_seed",
    "current_world",
    "draw_chunk",
    "init_from_environment",
    "keyed_random",
    "plan_chunks",
    "shared_seed",
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
    import torch

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
    import torch

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
        import torch

        if self.size == 1:
            return [value]
        out: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(out, value)
        return out

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        import torch

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

    def gather_chunks(
        self,
        chunks: Sequence[Chunk],
        work: Callable[[Chunk], T],
        pad: Callable[[], object] | None = None,
    ) -> list[T]:
        """``work(chunk)`` for every chunk, each computed by one rank, returned in chunk order.

        ``pad`` (lockstep): a rank dealt fewer chunks than another calls it once after its own,
        so every rank runs the same number of units of work (its result is discarded).
        An error in any rank's work is raised on every rank (see :meth:`together`).
        """

        def mine() -> list[tuple[int, T]]:
            done = [(c.index, work(c)) for c in self.mine(chunks)]
            if pad is not None and len(done) < -(-len(chunks) // self.size):
                pad()
            return done

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

    def sum_exactly(
        self, sums: dict[int, torch.Tensor], like: Sequence[torch.Tensor]
    ) -> dict[int, torch.Tensor]:
        """Sum float64 tensors over the ranks: ``sums[i]`` is this rank's part shaped as ``like[i]``.

        Returns the totals of every index any rank holds (zeros count for the others), on every
        rank, in one all-reduce of one flat buffer. Float64 sums of float32 terms are exact while
        the terms' exponents span fewer than 29 bits, so the totals do not depend on how the work
        was dealt to the ranks.
        """
        import torch

        if self.size == 1:
            return sums
        device = like[0].device if like else torch.device("cpu")
        held = torch.tensor([i in sums for i in range(len(like))], dtype=torch.int32, device=device)
        torch.distributed.all_reduce(held, op=torch.distributed.ReduceOp.MAX)
        keys = [i for i, flag in enumerate(held.tolist()) if flag]
        if not keys:
            return {}
        flat = torch.cat(
            [
                sums[i].reshape(-1)
                if i in sums
                else torch.zeros(like[i].numel(), dtype=torch.float64, device=device)
                for i in keys
            ]
        )
        torch.distributed.all_reduce(flat)
        totals, start = {}, 0
        for i in keys:
            size = like[i].numel()
            totals[i] = flat[start : start + size].view(like[i].shape)
            start += size
        return totals

    def barrier(self) -> None:
        """Wait for every rank."""
        import torch

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
    import torch

    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def shared_seed(seed: int | None, world: World | None = None) -> int:
    """``seed``, or one drawn from torch's generator on rank 0 and shared with every rank."""
    import torch

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
    import torch

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
