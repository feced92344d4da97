"""A tuner's checkpoints: written atomically, verified on reading, never pickled.

:class:`~disco.tuners.Tuner`'s ``save_checkpoint`` and ``load_checkpoint`` delegate here, so the
file format lives in one place. A checkpoint is a folder ``step-NNNNNNNN`` under the checkpoint
root holding

- ``policy.safetensors`` (the trainable parameters) and, with an offline proposal,
  ``proposal.safetensors``;
- ``training.safetensors``: every other tensor (optimizer moments, random-generator states);
- ``state.json``: everything else as JSON, the tensors' places in it, and each file's size and
  SHA-256, written last.

The folder is built under a temporary name and renamed into place, then the one-line ``latest``
pointer is replaced; the root's ``.lock`` (see :mod:`disco._lock`) keeps a second process from
writing there meanwhile. Reading checks every file against ``state.json`` before anything is restored,
so a truncated or corrupted checkpoint is skipped, with a :class:`CheckpointWarning` naming the bad
file, in favour of the newest intact one. Nothing is unpickled and no path is followed out of the
checkpoint root. Files are not fsynced (on a busy disk that costs more than a small step): a
process killed at any point loses nothing written, and after a power cut the checks above find
any checkpoint the system had not yet flushed and skip it.

To add state, extend :func:`tuner_state` and :func:`_restore`: values may be JSON types, tuples,
dicts with non-string keys and tensors, nested freely (:func:`encode` stores the tensors apart).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from disco._lock import exclusive
from disco.parallel import DeepSpeedZeRO
from disco.tuners.modules import torch_module

if TYPE_CHECKING:
    from disco.tuners.tuner import Tuner

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "decode",
    "encode",
    "find",
    "gather",
    "load",
    "save",
    "tuner_state",
]

FORMAT = "disco-checkpoint"
VERSION = 2
STEP_NAME = re.compile(r"^step-\d{8}$")
# state.json holds the metric history: generous, but a hostile file cannot exhaust memory.
MAX_STATE_BYTES = 256 * 2**20


class CheckpointError(ValueError):
    """No usable checkpoint: missing, truncated, corrupted, or for another policy."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an earlier intact one."""


# ------------------------------------------------------------------------- kill points (tests)

_KILL_AT = os.environ.get("DISCO_TEST_KILL_AT")
_PAUSE_AT = os.environ.get("DISCO_TEST_PAUSE_AT")
_PAUSE_DIR = os.environ.get("DISCO_TEST_PAUSE_DIR")
_kill_count = 0
_passed: dict[str, int] = {}


def kill_point(label: str) -> None:
    """Test hook for the crash and signal harnesses; does nothing unless a variable below is set.

    With ``DISCO_TEST_KILL_AT=N`` the process names each point it passes on stderr and SIGKILLs
    itself at the N-th (``0``: never), so a test can crash it at a chosen I/O step. With
    ``DISCO_TEST_PAUSE_AT=LABEL#K`` and ``DISCO_TEST_PAUSE_DIR=DIR`` it waits at the K-th pass of
    that point, having written ``DIR/paused-PID`` (its PID, rank and the label), until
    ``DIR/release`` exists, so a test can signal it or start a second run meanwhile.
    """
    global _kill_count
    if _PAUSE_AT is not None and _PAUSE_DIR is not None:
        _passed[label] = _passed.get(label, 0) + 1
        if f"{label}#{_passed[label]}" == _PAUSE_AT:
            _pause(label, Path(_PAUSE_DIR))
    if _KILL_AT is None:
        return
    _kill_count += 1
    print(f"disco-kill-point {_kill_count} {label}", file=sys.stderr, flush=True)
    if _kill_count == int(_KILL_AT):
        os.kill(os.getpid(), signal.SIGKILL)


def _pause(label: str, folder: Path) -> None:
    import time

    note = {"pid": os.getpid(), "rank": int(os.environ.get("RANK", "0")), "label": label}
    (folder / f".paused-{os.getpid()}").write_text(json.dumps(note))
    os.replace(folder / f".paused-{os.getpid()}", folder / f"paused-{os.getpid()}")
    while not (folder / "release").exists():
        time.sleep(0.02)


# ------------------------------------------------------------------------- state as JSON + tensors


def encode(value: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """``value`` as JSON, its tensors moved into ``tensors`` (named ``prefix.N``).

    Tuples and dicts whose keys are not all strings are tagged so :func:`decode` restores them.
    """
    if isinstance(value, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {"$tensor": key}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, tensors, prefix) for v in value]}
    if isinstance(value, list):
        return [encode(v, tensors, prefix) for v in value]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v, tensors, prefix) for k, v in value.items()}
        return {
            "$items": [
                [encode(k, tensors, prefix), encode(v, tensors, prefix)] for k, v in value.items()
            ]
        }
    raise TypeError(f"a checkpoint cannot hold a {type(value).__name__} ({value!r:.80})")


def decode(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Invert :func:`encode`."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "$tensor":
            return tensors[inner]
        if tag == "$tuple":
            return tuple(decode(v, tensors) for v in inner)
        if tag == "$items":
            return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in inner}
    return {k: decode(v, tensors) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


# ------------------------------------------------------------------------------- the tuner's state


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


@dataclass
class Whole:
    """The parameters and the optimizer's state, whole (FSDP's shards gathered)."""

    parameters: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


def gather(tuner: Tuner) -> Whole:
    """What :func:`save` writes of the sharded state; every rank calls it (a no-op unsharded).

    Under FSDP each rank holds a shard of every parameter and optimizer moment, under DeepSpeed
    ZeRO a partition of the optimizer's state: the checkpoint format stays the one-process one
    (whole tensors, loadable under any world size), so the pieces are gathered here, on every
    rank, before rank 0 writes.
    """
    with torch.no_grad():
        parameters = {k: _whole(v.detach()) for k, v in tuner.parameters.items()}
    if isinstance(tuner.gradients, DeepSpeedZeRO):
        # Whole parameters (detached views of the live ones: what iterate_in_place puts there
        # shows in them); the optimizer's state gathered from the partitions.
        return Whole(parameters, tuner.gradients.whole_optimizer_state())
    return Whole(parameters, _whole(tuner.optimizer.state_dict()))


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


def _sharded_optimizer_state(tuner: Tuner, saved: dict[str, Any]) -> dict[str, Any]:
    """The saved (whole) optimizer state with each sharded parameter's moments cut to its shard."""
    params = [p for group in tuner.optimizer.param_groups for p in group["params"]]
    state = {}
    for index, entry in saved["state"].items():
        p = params[int(index)]
        state[index] = {
            k: _shard_like(p, v) if isinstance(v, torch.Tensor) and v.shape == p.shape else v
            for k, v in entry.items()
        }
    return {**saved, "state": state}


def tuner_state(tuner: Tuner, optimizer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a resumed tuner needs besides its parameters (tensors allowed, see :func:`encode`).

    ``optimizer``: the optimizer's state to store (by default its own; :func:`gather` gives the
    whole one under FSDP).
    """
    return {
        "step": tuner.step_count,
        "log_z_sums": tuner.log_z_sums,
        "log_z_counts": tuner.log_z_counts,
        "loss": tuner.loss.state_dict(),
        "numpy_rng": tuner.rng.bit_generator.state,
        "python_rng": random.getstate(),
        "history": tuner.history,
        "config": tuner.config.to_dict(),
        "proposal_is_policy": tuner.proposal is tuner.policy,
        "proposal_copied_at": tuner.proposal_copied_at,
        "seeded": tuner._seeded,
        "optimizer": tuner.optimizer.state_dict() if optimizer is None else optimizer,
        "scheduler": tuner.scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "policy_rng": tuner.policy.random_state()
        if hasattr(tuner.policy, "random_state")
        else None,
        "proposal_rng": tuner.proposal.random_state()
        if hasattr(tuner.proposal, "random_state")
        else None,
        "log_z_relative_variance": tuner.log_z_relative_variance,
        "average": None
        if tuner.average is None
        else {"tensors": tuner.average.tensors(), "updates": tuner.average.updates},
    }


def _restore(tuner: Tuner, state: dict[str, Any], stored: _Stored) -> None:
    """Put a verified checkpoint's contents back into ``tuner``."""
    average = state.get("average")
    if tuner.average is not None and average is None:
        raise ValueError(
            "the checkpoint has no parameter average: it was written with averaging='none'; "
            "resume it with the same setting"
        )
    if tuner.average is not None:
        tuner.average.release()  # the checkpoint's iterate replaces whatever is held
    with torch.no_grad():
        for name, value in stored.policy.items():
            tuner.parameters[name].copy_(_shard_like(tuner.parameters[name], value))
    if state["proposal_is_policy"]:
        tuner.proposal = tuner.policy
    else:
        tuner.proposal = tuner._frozen_copy(tuner.policy)
        params = dict(torch_module(tuner.proposal).named_parameters())
        with torch.no_grad():
            for name, value in (stored.proposal or {}).items():
                params[name].copy_(value)
    if isinstance(tuner.gradients, DeepSpeedZeRO):  # the master copy and this rank's partition
        tuner.gradients.restore(state["optimizer"])
    else:
        tuner.optimizer.load_state_dict(_sharded_optimizer_state(tuner, state["optimizer"]))
    tuner.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if state["policy_rng"] is not None and hasattr(tuner.policy, "set_random_state"):
        tuner.policy.set_random_state(state["policy_rng"])
    if (
        state["proposal_rng"] is not None
        and hasattr(tuner.proposal, "set_random_state")
        and tuner.proposal is not tuner.policy
    ):
        tuner.proposal.set_random_state(state["proposal_rng"])
    tuner.step_count = int(state["step"])
    copied_at = state.get("proposal_copied_at")  # absent from checkpoints before 0.2
    tuner.proposal_copied_at = None if copied_at is None else int(copied_at)
    tuner.log_z_sums = {k: (float(v[0]), float(v[1])) for k, v in state["log_z_sums"].items()}
    tuner.log_z_counts = {k: int(v) for k, v in state["log_z_counts"].items()}
    tuner.loss.load_state_dict(state["loss"])
    tuner.rng.bit_generator.state = state["numpy_rng"]
    random.setstate(state["python_rng"])
    tuner.history = state["history"]
    tuner._seeded = bool(state["seeded"])
    tuner.log_z_relative_variance = {
        k: float(v) for k, v in state.get("log_z_relative_variance", {}).items()
    }
    if tuner.average is not None and average is not None:
        tuner.average.load(average["tensors"], int(average["updates"]))
        tuner.average.hold()  # as after tune(): the policy is the average, the iterate aside


# ----------------------------------------------------------------------------------------- writing


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    from disco.io import write_safetensors

    write_safetensors(tensors, path)
    return {"bytes": path.stat().st_size, "sha256": _digest(path)}


def save(
    tuner: Tuner, directory: str | os.PathLike[str] | None = None, whole: Whole | None = None
) -> Path:
    """Write a checkpoint atomically; returns its folder (``checkpoint_dir/step-NNNNNNNN``).

    ``whole``: the parameters and optimizer state from :func:`gather` (needed under FSDP; by
    default the tuner's own). On any error (a full disk) the half-written folder is removed and
    the earlier checkpoints and the ``latest`` pointer are left as they were. Another process
    holding the folder's lock (see :meth:`Tuner.tune`) is a ``RuntimeError`` naming it.
    """
    if whole is None:
        whole = Whole(dict(tuner.parameters), tuner.optimizer.state_dict())
    root = Path(directory or tuner.config.checkpoint_dir or "")
    if not str(root):
        raise ValueError("no checkpoint folder: set checkpoint_dir")
    with exclusive(root):  # one writer per folder (re-entrant inside the tuner's own tune())
        return _write(tuner, root, whole)


def _write(tuner: Tuner, root: Path, whole: Whole) -> Path:
    final = root / f"step-{tuner.step_count:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    kill_point("checkpoint: temporary folder made")
    try:
        files: dict[str, Any] = {}
        files["policy.safetensors"] = _write_tensors(
            {k: v.detach().cpu().contiguous() for k, v in whole.parameters.items()},
            tmp / "policy.safetensors",
        )
        kill_point("checkpoint: policy.safetensors written")
        if tuner.proposal is not tuner.policy:
            files["proposal.safetensors"] = _write_tensors(
                {
                    n: p.detach().cpu().contiguous()
                    for n, p in torch_module(tuner.proposal).named_parameters()
                    if n in tuner.parameters
                },
                tmp / "proposal.safetensors",
            )
            kill_point("checkpoint: proposal.safetensors written")
        tensors: dict[str, torch.Tensor] = {}
        state = encode(tuner_state(tuner, whole.optimizer), tensors)
        files["training.safetensors"] = _write_tensors(tensors, tmp / "training.safetensors")
        kill_point("checkpoint: training.safetensors written")
        document = {"format": FORMAT, "version": VERSION, "files": files, "state": state}
        (tmp / "state.json").write_text(json.dumps(document), encoding="utf-8")
        kill_point("checkpoint: state.json written")
        if final.exists():  # the same step saved again: set the old copy aside first
            aside = Path(tempfile.mkdtemp(prefix=".old-", dir=root))
            os.replace(final, aside / final.name)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
        kill_point("checkpoint: folder renamed into place")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / ".latest.tmp"
    pointer.write_text(final.name)
    kill_point("checkpoint: latest pointer written aside")
    os.replace(pointer, root / "latest")
    kill_point("checkpoint: latest pointer replaced")
    kept = sorted(p for p in root.iterdir() if STEP_NAME.match(p.name) and p.is_dir())
    for old in kept[: -tuner.config.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    kill_point("checkpoint: old checkpoints pruned")
    return final


# ----------------------------------------------------------------------------------------- reading


@dataclass
class _Stored:
    policy: dict[str, torch.Tensor]
    proposal: dict[str, torch.Tensor] | None


def _read_verified(folder: Path, name: str, files: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = folder / name
    expected = files.get(name)
    if not isinstance(expected, Mapping):
        raise CheckpointError(f"{path}: not listed in state.json")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    size = path.stat().st_size
    if size != expected.get("bytes"):
        raise CheckpointError(
            f"{path}: {size} bytes, state.json says {expected.get('bytes')} (truncated?)"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
        raise CheckpointError(f"{path}: contents do not match the SHA-256 in state.json")
    try:
        return load(data)
    except (SafetensorError, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors ({err})") from None


def _read(folder: Path, tuner: Tuner) -> tuple[dict[str, Any], _Stored]:
    """A checkpoint folder's state and tensors, every file checked; :class:`CheckpointError` if not."""
    state_file = folder / "state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{state_file}: missing")
    if state_file.stat().st_size > MAX_STATE_BYTES:
        raise CheckpointError(f"{state_file}: larger than {MAX_STATE_BYTES} bytes")
    try:
        document = json.loads(state_file.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{state_file}: not valid JSON ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{state_file}: not a disco checkpoint")
    if document.get("version") != VERSION:
        raise CheckpointError(
            f"{state_file}: checkpoint format version {document.get('version')!r}, this disco "
            f"reads {VERSION}"
        )
    files = document.get("files")
    if not isinstance(files, Mapping):
        raise CheckpointError(f"{state_file}: no file list")
    policy = _read_verified(folder, "policy.safetensors", files)
    proposal = (
        _read_verified(folder, "proposal.safetensors", files)
        if "proposal.safetensors" in files
        else None
    )
    training = _read_verified(folder, "training.safetensors", files)
    try:
        state = decode(document["state"], training)
        _check_state(state)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{state_file}: incomplete or malformed state ({err!r})") from None
    if set(policy) != set(tuner.parameters):
        raise CheckpointError(f"{folder} holds other parameters than this policy's")
    for name, value in policy.items():
        if value.shape != tuner.parameters[name].shape:
            raise CheckpointError(
                f"{folder / 'policy.safetensors'}: {name} has shape {tuple(value.shape)}, the "
                f"policy's has {tuple(tuner.parameters[name].shape)}"
            )
    return state, _Stored(policy, proposal)


_STATE_KEYS = {
    "step": int,
    "log_z_sums": dict,
    "log_z_counts": dict,
    "loss": dict,
    "numpy_rng": dict,
    "python_rng": tuple,
    "history": list,
    "proposal_is_policy": bool,
    "seeded": bool,
    "optimizer": dict,
    "scheduler": dict,
    "torch_rng": torch.Tensor,
    "cuda_rng": list,
}


def _check_state(state: Any) -> None:
    if not isinstance(state, dict):
        raise TypeError("the state is not a table")
    for key, kind in _STATE_KEYS.items():
        if not isinstance(state[key], kind):
            raise TypeError(f"{key} is a {type(state[key]).__name__}, not a {kind.__name__}")
    if state["step"] < 0 or not all(
        isinstance(v, list | tuple) and len(v) == 2 and not any(map(math.isnan, v))
        for v in state["log_z_sums"].values()
    ):
        raise ValueError("step or log_z_sums out of range")


def _candidates(root: Path) -> Iterator[Path]:
    """The checkpoint folders under ``root``, newest first; never a path outside it."""
    names = [p.name for p in root.iterdir() if STEP_NAME.match(p.name) and p.is_dir()]
    for name in sorted(names, reverse=True):
        yield root / name


def _pointer_problem(root: Path) -> str | None:
    """Why ``root/latest`` cannot be followed, or ``None`` when it names a checkpoint here."""
    pointer = root / "latest"
    if not pointer.exists():
        return None
    if not pointer.is_file() or pointer.stat().st_size > 64:
        return f"{pointer} is not a short text file"
    text = pointer.read_bytes().decode("utf-8", "replace").strip()
    if not text:
        return f"{pointer} is empty"
    if not STEP_NAME.match(text):
        return f"{pointer} names {text!r}, not a step-NNNNNNNN folder of {root} (refused)"
    if not (root / text).is_dir():
        return f"{pointer} names {text}, which does not exist"
    return None


def find(path: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint folder under a checkpoint root (unverified), or ``None``."""
    root = Path(path)
    if not root.is_dir():
        return None
    return next(_candidates(root), None)


def load(tuner: Tuner, path: str | os.PathLike[str]) -> Path:
    """Restore the newest intact checkpoint under a root (or the given folder); returns its folder.

    Damaged checkpoints are skipped with a :class:`CheckpointWarning` naming the bad file; a
    ``latest`` pointer that is empty, or names anything but a ``step-NNNNNNNN`` folder of the root,
    is never followed. Nothing is restored unless a whole checkpoint checks out.
    """
    path = Path(path)
    if (path / "state.json").exists() or STEP_NAME.match(path.name):
        folders, root = [path], path.parent
    else:
        if not path.is_dir():
            raise CheckpointError(f"no checkpoint folder at {path}")
        root = path
        problem = _pointer_problem(root)
        if problem is not None:
            warnings.warn(f"{problem}; using the newest intact checkpoint", CheckpointWarning, 2)
        folders = list(_candidates(root))
    del root
    problems: list[str] = []
    for folder in folders:
        try:
            state, stored = _read(folder, tuner)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        for problem in problems:
            warnings.warn(
                f"skipped a damaged checkpoint: {problem}; resuming from {folder.name}",
                CheckpointWarning,
                2,
            )
        _restore(tuner, state, stored)
        return folder
    if not problems:
        raise CheckpointError(f"no checkpoint at {path}")
    raise CheckpointError("no intact checkpoint: " + "; ".join(problems))
