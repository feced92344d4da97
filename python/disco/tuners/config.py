"""The tuner's settings: one dataclass, every field with its meaning and default."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any

from disco._fields import described as _help
from disco.parallel import CHOICES as PARALLEL

__all__ = ["TunerConfig"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("constant", "linear", "cosine")
PROPOSALS = ("online", "offline")
UPDATE_METRICS = ("kl", "tv", "js")
AUTOCAST = ("auto", "bf16", "off")
AVERAGING = ("ema", "none")
MAX_LEARNING_RATE = 100.0


@dataclass
class TunerConfig:
    """Settings of a :class:`disco.tuners.Tuner` run (see each field's ``help``)."""

    n_steps: int = _help("number of gradient steps", default=100)
    samples_per_context: int = _help("samples drawn per context at each step", default=128)
    contexts_per_step: int = _help(
        "contexts drawn from the context distribution at each step", default=1
    )
    metrics_samples: int = _help(
        "samples of each context's batch the step's reported metrics are estimated on (0: all): "
        "a large batch buys a less noisy gradient without paying the reported policy's and the "
        "base's extra forward passes on all of it",
        default=0,
    )
    sampling_batch_size: int = _help(
        "samples drawn per call to the proposal (bounds memory)", default=64
    )
    scoring_batch_size: int = _help(
        "samples scored per forward/backward pass of the policy (gradients accumulate)", default=64
    )
    optimizer: str = _help("'adam', 'adamw' or 'sgd'", default="adam")
    learning_rate: float = _help("peak learning rate", default=1e-4)
    weight_decay: float = _help(
        "weight decay (decoupled for AdamW, L2 for Adam and SGD)", default=0.0
    )
    momentum: float = _help("SGD momentum", default=0.0)
    scheduler: str = _help(
        "learning-rate schedule after warm-up: 'constant', 'linear' or 'cosine'", default="constant"
    )
    warmup_steps: int = _help("linear warm-up steps from 0 to the peak learning rate", default=0)
    averaging: str = _help(
        "'ema': the tuned policy is an exponential moving average of the iterates' parameters "
        "(what tune() leaves in the policy, what the metrics describe); 'none': the last iterate",
        default="ema",
    )
    averaging_decay: float = _help(
        "weight of the old average at each step (memory of about 1/(1 - decay) steps)",
        default=0.95,
    )
    averaging_power: float = _help(
        "how much the average favours recent iterates before the exponential memory takes over: "
        "iterate t weighs about t**power (0: the plain mean, which lags half-way behind a run "
        "still moving; polynomial-decay averaging)",
        default=0.0,
    )
    stopping_window: int = _help(
        "stop before n_steps once the divergence estimate has stopped improving: the mean of "
        "its last stopping_window steps is not below the mean of the window before by more than "
        "the difference's standard error, at each of the last stopping_window steps (0: always "
        "run n_steps)",
        default=0,
    )
    max_grad_norm: float | None = _help(
        "clip the gradient's global norm to this (None: no clipping)", default=1.0
    )
    proposal: str = _help(
        "'online': sample from the current policy; 'offline': from a frozen copy replaced by the policy "
        "whenever the policy is closer to the target",
        default="online",
    )
    proposal_update_interval: int = _help(
        "offline: steps between comparisons of policy and proposal", default=1
    )
    proposal_update_metric: str = _help(
        "offline: divergence to the target that decides the replacement: 'kl', 'tv' or 'js'",
        default="kl",
    )
    baseline: bool = _help(
        "subtract a moving-average baseline from the pseudo-rewards", default=True
    )
    baseline_window: int = _help("batches covered by the moving-average baseline", default=32)
    max_log_t: float = _help(
        "cap on log(pi/p) when forming pseudo-rewards of unbounded losses", default=30.0
    )
    seed: int = _help(
        "seeds torch, numpy and the context draws: one seed reproduces a run", default=0
    )
    features: tuple[Any, ...] = _help(
        "scorers whose moments under the policy are reported each step", default=()
    )
    kl_from_base: bool = _help("report KL(pi || base) (needs the tuner's base)", default=False)
    validation_contexts: tuple[Any, ...] = _help(
        "contexts on which metrics are also estimated every validation_interval steps", default=()
    )
    validation_interval: int = _help("steps between validation estimates (0: never)", default=0)
    validation_samples: int = _help("samples per validation context", default=128)
    checkpoint_dir: str | None = _help(
        "folder for checkpoints (None: no checkpoints)", default=None
    )
    checkpoint_interval: int = _help("steps between checkpoints (0: only at the end)", default=0)
    keep_checkpoints: int = _help("how many recent checkpoints to keep", default=2)
    autocast: str = _help(
        "'auto' (bf16 on a GPU that supports it, float32 on the CPU), 'bf16' or 'off'",
        default="auto",
    )
    parallel: str = _help(
        "how the gradients of several processes (torch.distributed) meet: 'ddp': the policy's "
        "Hugging Face model wrapped by accelerate's DistributedDataParallel (bucketed "
        "all-reduce); 'fsdp': its parameters, gradients and optimizer state sharded between "
        "steps by torch's FSDP2 (fully_shard per transformer block, then the model; within a "
        "step each rank gathers the whole model unless fsdp_lockstep; online tuning with "
        "averaging='none' only); "
        "'deepspeed': the model and the optimizer in a DeepSpeed ZeRO engine through accelerate "
        "(the 'deepspeed' extra; stage 2, or the stage of `accelerate launch`'s DeepSpeed "
        "config, 1 or 2): whole parameters on every rank, the optimizer state, its float32 "
        "master copy and the reduced gradients partitioned (a step accumulates whole "
        "gradients locally first); "
        "'none': every rank holds the whole policy and sums the gradients exactly (each "
        "chunk's gradient added in float64, one float64 all-reduce), so N processes take one "
        "process's step bit for bit; 'auto': 'deepspeed' under an accelerate DeepSpeed config, "
        "'fsdp' for a Hugging Face policy under an accelerate FSDP config, else 'none'. Each "
        "gives the step of one process (the sum of the gradients; 'ddp', 'fsdp' and "
        "'deepspeed' up to float32 summation order); one process sums exactly whatever is set",
        default="auto",
    )
    fsdp_lockstep: bool = _help(
        "under FSDP ('fsdp', or 'auto' choosing it): keep the model sharded within a step (each "
        "block gathered only for its own forward and backward, gradients reduce-scattered per "
        "backward), so a model too large for one device can be tuned. Every rank then makes "
        "the same calls of the model: a rank with fewer chunks draws and learns from a dummy "
        "one (discarded, zero gradient) and sampling decodes to the full length (same samples); "
        "needs samples_per_context (and validation_samples) to be a multiple of "
        "sampling_batch_size or at most it, a target and base that do not share the policy's "
        "model, and leaves the tuned model sharded (gather it with "
        "disco.parallel.whole_state_dict). False: each rank gathers the whole model for a step",
        default=False,
    )

    def _check_types(self) -> None:
        integers = [f.name for f in dataclasses.fields(self) if f.type == "int"]
        reals = [f.name for f in dataclasses.fields(self) if f.type in ("float", "float | None")]
        for name in integers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in reals:
            value = getattr(self, name)
            optional = value is None and name == "max_grad_norm"
            if not optional and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        for name in ("baseline", "kl_from_base", "fsdp_lockstep"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("features", "validation_contexts"):
            if isinstance(getattr(self, name), (str, bytes)):
                raise ValueError(f"{name} must be a list, got the string {getattr(self, name)!r}")
        if self.checkpoint_dir is not None and not isinstance(
            self.checkpoint_dir, (str, os.PathLike)
        ):
            raise ValueError(f"checkpoint_dir must be a path, got {self.checkpoint_dir!r}")

    def _check_ranges(self) -> None:
        """Values that pass the type checks but cannot train: refused before any work starts."""
        if not self.learning_rate <= MAX_LEARNING_RATE:
            raise ValueError(
                f"learning_rate must be at most {MAX_LEARNING_RATE:g} (larger steps overflow the "
                f"weights), got {self.learning_rate}"
            )
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(
                f"weight_decay must be finite and non-negative, got {self.weight_decay}"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        if not self.max_log_t > 0:  # nan too; inf means no cap
            raise ValueError(f"max_log_t must be positive, got {self.max_log_t}")

    def __post_init__(self) -> None:
        self._check_types()
        choices = {
            "optimizer": OPTIMIZERS,
            "scheduler": SCHEDULERS,
            "proposal": PROPOSALS,
            "proposal_update_metric": UPDATE_METRICS,
            "autocast": AUTOCAST,
            "averaging": AVERAGING,
            "parallel": PARALLEL,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value.lower() not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
            setattr(self, name, value.lower())
        positive = (
            "n_steps",
            "samples_per_context",
            "contexts_per_step",
            "sampling_batch_size",
            "scoring_batch_size",
            "proposal_update_interval",
            "baseline_window",
            "validation_samples",
            "keep_checkpoints",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "warmup_steps",
            "validation_interval",
            "checkpoint_interval",
            "stopping_window",
            "metrics_samples",
        ):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.stopping_window == 1:
            raise ValueError(
                "stopping_window must be 0 (off) or at least 2 (a window's spread needs two steps)"
            )
        if not 0.0 <= self.averaging_decay < 1.0:
            raise ValueError(f"averaging_decay must be in [0, 1), got {self.averaging_decay}")
        if not (self.averaging_power >= 0 and math.isfinite(self.averaging_power)):
            raise ValueError(
                f"averaging_power must be finite and non-negative, got {self.averaging_power}"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        self.features = tuple(self.features)
        self.validation_contexts = tuple(self.validation_contexts)
        self._check_ranges()

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each setting's help text."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}

    def replace(self, **settings: Any) -> TunerConfig:
        """A copy with ``settings`` changed; an unknown name is an error that lists the valid ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"unknown tuner setting(s) {unknown}; valid settings: {sorted(known)}")
        return dataclasses.replace(self, **settings)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-friendly values (features by name)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "features":
                value = [getattr(s, "name", repr(s)) for s in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out
