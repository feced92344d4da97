"""``parallel='ddp'``: accelerate's ``DistributedDataParallel`` around the policy's model, summing."""

from __future__ import annotations

import contextlib
import importlib.util
import typing
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from disco._torch_modules import device_of
from disco.distributed import World
from disco.parallel.base import GradientPath, Setup, require_hf_policy, zero_gradient_pass

__all__ = ["AccelerateDDP"]


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


class AccelerateDDP(GradientPath):
    """The policy's Hugging Face model wrapped by accelerate's ``DistributedDataParallel``.

    Ranks deal themselves uneven numbers of chunks (none, some), so nothing a rank does per
    chunk may be a collective. A step's forward and backward passes call the model itself,
    under DDP's ``no_sync``: the gradients accumulate locally. The wrapper runs only in
    :meth:`finish`, one tiny forward/backward of a zero gradient on every rank, which
    all-reduces the accumulated gradients in DDP's buckets. DDP's own collectives at a
    forward (rebuilding its buckets after the first step) then happen at the same point on
    every rank; a forward through the wrapper per chunk would run them on the ranks that hold
    a chunk alone, and the others would wait forever. A communication hook sums where DDP
    averages, so the step is the exact global sum :class:`~disco.parallel.GradientSum`
    computes (no loss rescaling). Buffers are not broadcast at each forward (they are equal on
    every rank).
    """

    name = "ddp"

    def __init__(
        self, model: torch.nn.Module, wrapper: torch.nn.parallel.DistributedDataParallel
    ) -> None:
        self.model = model
        self.wrapper = wrapper
        wrapper.register_comm_hook(None, _sum_hook)

    @classmethod
    def create(cls, setup: Setup) -> AccelerateDDP:
        """Wrap ``distribution.model`` with accelerate's DDP (an error when it cannot)."""
        if importlib.util.find_spec("accelerate") is None:
            raise ValueError(
                "parallel='ddp' wraps the policy with accelerate, which is not installed: "
                "pip install 'disco-control[distributed]' (or set parallel='none')"
            )
        require_hf_policy(setup.distribution, "parallel='ddp' wraps")
        wrapper = _accelerate_wrapper(setup.distribution.model, setup.world)
        return cls(setup.distribution.model, wrapper)

    @contextlib.contextmanager
    def accumulating(self) -> Iterator[None]:
        """The step's backward passes: the model itself, with the wrapper not synchronising."""
        with self.wrapper.no_sync():
            yield

    def finish(self) -> None:
        """One synchronising pass: a one-token forward, backpropagating zeros."""
        zero_gradient_pass(self.wrapper, self.model)


def _accelerate_wrapper(
    model: torch.nn.Module, world: World
) -> torch.nn.parallel.DistributedDataParallel:
    """The DDP wrapper accelerate makes around ``model`` (an error when it makes anything else)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

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
    return wrapper
