"""A tuner's checkpoints: writing them atomically and restoring them.

:class:`~disco.tuners.Tuner`'s ``save_checkpoint`` and ``load_checkpoint`` delegate here, so the
file format lives in one place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from disco.tuners.tuner import Tuner

__all__ = ["load", "save", "tuner_state"]


def tuner_state(tuner: Tuner) -> dict[str, Any]:
    """The tuner's JSON-friendly state (step, partition-function estimates, loss, RNGs, history)."""
    np_state = tuner.rng.bit_generator.state
    return {
        "step": tuner.step_count,
        "log_z_sums": tuner.log_z_sums,
        "log_z_counts": tuner.log_z_counts,
        "loss": tuner.loss.state_dict(),
        "numpy_rng": np_state,
        "python_rng": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "history": tuner.history,
        "config": tuner.config.to_dict(),
        "proposal_is_policy": tuner.proposal is tuner.policy,
        "seeded": tuner._seeded,
    }


def save(tuner: Tuner, directory: str | os.PathLike[str] | None = None) -> Path:
    """Write a checkpoint atomically; returns its folder (``checkpoint_dir/step-NNNNNNNN``)."""
    from safetensors.torch import save_file

    from disco.tuners.tuner import _module

    root = Path(directory or tuner.config.checkpoint_dir or "")
    if not str(root):
        raise ValueError("no checkpoint folder: set checkpoint_dir")
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{tuner.step_count:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tuner.parameters.items()},
            tmp / "policy.safetensors",
        )
        if tuner.proposal is not tuner.policy:
            proposal_params = {
                n: p.detach().cpu().contiguous()
                for n, p in _module(tuner.proposal).named_parameters()
                if n in tuner.parameters
            }
            save_file(proposal_params, tmp / "proposal.safetensors")
        torch.save(
            {
                "optimizer": tuner.optimizer.state_dict(),
                "scheduler": tuner.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "policy_rng": tuner.policy.random_state()
                if hasattr(tuner.policy, "random_state")
                else None,
                "proposal_rng": tuner.proposal.random_state()
                if hasattr(tuner.proposal, "random_state")
                else None,
            },
            tmp / "training.pt",
        )
        (tmp / "state.json").write_text(json.dumps(tuner_state(tuner)))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / "latest")
    kept = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in kept[: -tuner.config.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(tuner: Tuner, path: str | os.PathLike[str]) -> None:
    """Restore a checkpoint folder, or the latest one under a checkpoint root, into ``tuner``."""
    from safetensors.torch import load_file

    from disco.tuners.tuner import _module

    path = Path(path)
    if (path / "latest").exists():
        path = path / (path / "latest").read_text().strip()
    if not (path / "state.json").exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = json.loads((path / "state.json").read_text())
    policy_params = load_file(path / "policy.safetensors")
    if set(policy_params) != set(tuner.parameters):
        raise ValueError(f"checkpoint {path} holds other parameters than this policy's")
    with torch.no_grad():
        for name, value in policy_params.items():
            tuner.parameters[name].copy_(value)
    if state["proposal_is_policy"]:
        tuner.proposal = tuner.policy
    else:
        tuner.proposal = tuner._frozen_copy(tuner.policy)
        if (path / "proposal.safetensors").exists():
            stored = load_file(path / "proposal.safetensors")
            params = dict(_module(tuner.proposal).named_parameters())
            with torch.no_grad():
                for name, value in stored.items():
                    params[name].copy_(value)
    training = torch.load(path / "training.pt", weights_only=True)
    tuner.optimizer.load_state_dict(training["optimizer"])
    tuner.scheduler.load_state_dict(training["scheduler"])
    torch.set_rng_state(training["torch_rng"])
    if training["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(training["cuda_rng"])
    if training["policy_rng"] is not None and hasattr(tuner.policy, "set_random_state"):
        tuner.policy.set_random_state(training["policy_rng"])
    if (
        training["proposal_rng"] is not None
        and hasattr(tuner.proposal, "set_random_state")
        and tuner.proposal is not tuner.policy
    ):
        tuner.proposal.set_random_state(training["proposal_rng"])
    tuner.step_count = int(state["step"])
    tuner.log_z_sums = {k: (float(v[0]), float(v[1])) for k, v in state["log_z_sums"].items()}
    tuner.log_z_counts = {k: int(v) for k, v in state["log_z_counts"].items()}
    tuner.loss.load_state_dict(state["loss"])
    tuner.rng.bit_generator.state = state["numpy_rng"]
    py = state["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    tuner.history = state["history"]
    tuner._seeded = bool(state["seeded"])
