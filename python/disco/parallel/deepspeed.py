"""``parallel='deepspeed'``: the policy's model and the tuner's optimizer in a DeepSpeed ZeRO engine."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from disco.distributed import World
from disco.parallel.base import GradientPath, Setup, WholeState, configured, require_hf_policy

__all__ = ["DeepSpeedZeRO"]


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

    @classmethod
    def create(cls, setup: Setup) -> DeepSpeedZeRO:
        """An accelerate DeepSpeed engine for ``distribution.model`` (ZeRO-2 unless configured)."""
        requested = setup.requested
        require_hf_policy(setup.distribution, f"parallel={requested!r} (DeepSpeed) runs")
        missing = [m for m in ("accelerate", "deepspeed") if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(
                f"parallel={requested!r} (DeepSpeed) needs {' and '.join(missing)}, not "
                "installed: pip install 'disco-control[deepspeed]' (or set parallel='none')"
            )
        return cls(setup.distribution, setup.world, _deepspeed_accelerator())

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
        self, optimizer: torch.optim.Optimizer, parameters: Sequence[torch.nn.Parameter]
    ) -> float:
        """The engine's step (global norm, clipping, the partitions' update); returns the norm.

        The engine holds the optimizer and the clipping norm since :meth:`prepare`.
        """
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return 0.0 if norm is None else float(norm)

    def whole_state(
        self, parameters: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer
    ) -> WholeState:
        """The parameters (whole on every rank) and the optimizer's state from the partitions.

        The parameters are detached views of the live ones: what the checkpoint writer puts
        there (the iterate, under averaging) shows in them.
        """
        with torch.no_grad():
            whole = {k: v.detach() for k, v in parameters.items()}
        return WholeState(whole, self.whole_optimizer_state())

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
        """The master copy and this rank's partition of the optimizer's state (see :meth:`restore`)."""
        self.restore(saved)

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


def _deepspeed_accelerator() -> Any:
    """An accelerator set up for DeepSpeed (ZeRO-2 unless ``accelerate launch`` configured it)."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin

    # `accelerate launch` with a DeepSpeed config describes it in the environment (accelerate
    # reads it); otherwise ZeRO-2 with accelerate's defaults.
    launched = configured("DEEPSPEED")
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
    return accelerator
