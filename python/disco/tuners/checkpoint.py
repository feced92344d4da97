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

The tuner's own state is :mod:`disco.tuners.tuner_state`, stored through :mod:`disco.tuners.codec`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from disco._atomic import replace_folder
from disco._crash_points import kill_point
from disco._lock import exclusive
from disco._safetensors import write_safetensors
from disco._torch_modules import torch_module
from disco.parallel import WholeState
from disco.tuners.codec import decode, encode
from disco.tuners.tuner_state import Stored, check_state, restore, tuner_state

if TYPE_CHECKING:
    from disco.tuners.tuner import Tuner

__all__ = [
    "CheckpointError",
    "CheckpointWarning",
    "decode",
    "encode",
    "find",
    "load",
    "save",
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


# ----------------------------------------------------------------------------------------- writing


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    write_safetensors(tensors, path)
    return {"bytes": path.stat().st_size, "sha256": _digest(path)}


def save(
    tuner: Tuner, directory: str | os.PathLike[str] | None = None, whole: WholeState | None = None
) -> Path:
    """Write a checkpoint atomically; returns its folder (``checkpoint_dir/step-NNNNNNNN``).

    ``whole``: the parameters and optimizer state whole (the parallel mode's ``whole_state``,
    needed where ranks hold pieces of them; by default the tuner's own). On any error (a full disk) the half-written folder is removed and
    the earlier checkpoints and the ``latest`` pointer are left as they were. Another process
    holding the folder's lock (see :meth:`Tuner.tune`) is a ``RuntimeError`` naming it.
    """
    if whole is None:
        whole = WholeState(dict(tuner.parameters), tuner.optimizer.state_dict())
    root = Path(directory or tuner.config.checkpoint_dir or "")
    if not str(root):
        raise ValueError("no checkpoint folder: set checkpoint_dir")
    with exclusive(root):  # one writer per folder (re-entrant inside the tuner's own tune())
        return _write(tuner, root, whole)


def _write(tuner: Tuner, root: Path, whole: WholeState) -> Path:
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
        replace_folder(tmp, final)  # the same step saved again replaces the old copy
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


def _read(folder: Path, tuner: Tuner) -> tuple[dict[str, Any], Stored]:
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
        check_state(state)
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
    return state, Stored(policy, proposal)


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
        restore(tuner, state, stored)
        return folder
    if not problems:
        raise CheckpointError(f"no checkpoint at {path}")
    raise CheckpointError("no intact checkpoint: " + "; ".join(problems))
