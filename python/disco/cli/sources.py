"""What a configuration points at: the TOML file itself, local paths, contexts, the model's size.

Everything here reads files only (no weights, no network, no module of the user's is run), so a
configuration is checked whole before any work starts.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from disco.cli.errors import UserError

__all__ = [
    "MAX_CONFIG_BYTES",
    "check_positions",
    "import_dirs",
    "local",
    "make_importable",
    "model_path",
    "read_contexts",
    "read_toml",
]

MAX_CONFIG_BYTES = 1 * 2**20
MAX_CONTEXT_FILE_BYTES = 16 * 2**20
MAX_CONTEXTS = 100_000
CONTEXT_KEYS = ("context", "contexts", "context_file")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _toml() -> Any:
    import importlib

    try:
        return importlib.import_module("tomllib")
    except ModuleNotFoundError:  # Python 3.10
        try:
            return importlib.import_module("tomli")
        except ModuleNotFoundError:
            raise UserError(
                "reading TOML needs Python 3.11+ or the tomli package",
                "CONFIG",
                "pip install tomli",
            ) from None


def _utf8(file: Path, key: str, fix: str) -> str:
    try:
        return file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{file} is not UTF-8 text ({err.reason} at byte {err.start})", key, fix
        ) from None


def read_toml(file: Path) -> dict[str, Any]:
    """The TOML table in ``file``; a missing, huge, non-UTF-8 or malformed file is a user error."""
    if not file.is_file():
        raise UserError(
            f"no configuration file at {file}", "CONFIG", "give the path of a .toml file"
        )
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(
            f"{file} is larger than {MAX_CONFIG_BYTES} bytes", "CONFIG", "is it a configuration?"
        )
    toml = _toml()
    text = _utf8(file, "CONFIG", "save it as UTF-8 (TOML files are UTF-8; UTF-16 is not accepted)")
    try:
        return dict(toml.loads(text))
    except toml.TOMLDecodeError as err:
        raise UserError(
            f"malformed TOML in {file}: {err}", "CONFIG", "fix the syntax there"
        ) from None
    except RecursionError:
        raise UserError(
            f"{file} nests arrays or tables too deeply", "CONFIG", "flatten the configuration"
        ) from None


def make_importable(config_folder: Path) -> None:
    """Let ``function`` features import modules next to the config or in the current folder.

    Only with ``--allow-imports``. The ``disco`` script's own folder, not the current one, heads
    ``sys.path``; appending keeps installed packages first.
    """
    for entry in import_dirs(config_folder):
        if entry not in sys.path:
            sys.path.append(entry)


def import_dirs(config_folder: Path | None) -> list[str]:
    """Where ``--allow-imports`` lets function features' modules come from, after sys.path."""
    return [str(config_folder.resolve()), os.getcwd()] if config_folder is not None else []


def local(path: str, base_dir: Path | None) -> Path | None:
    """``path`` as an existing file or folder, or ``None`` when there is none.

    A relative path is looked up next to the config file first, then in the current directory.
    """
    given = Path(os.path.expanduser(path))
    candidates = [given] if given.is_absolute() or base_dir is None else [base_dir / given, given]
    return next((c.resolve() for c in candidates if c.exists()), None)


def model_path(path: Any, base_dir: Path | None) -> str:
    """A local folder (an absolute path, so saved EBMs load from anywhere) or a Hub name."""
    if not isinstance(path, str) or not path:
        raise UserError(f"{path!r} is not a path", "model.path", 'write path = "folder/or/name"')
    found = local(path, base_dir)
    if found is not None:
        return str(found)
    if _HUB_NAME.match(path) and not path.startswith("."):
        return path  # loading tries the Hub and reports the failure as a user error
    raise UserError(
        f"no model at {path}",
        "model.path",
        "give an existing model folder or a Hub name (org/name)",
    )


def _context_file(name: Any, base_dir: Path | None) -> list[str]:
    file = local(name, base_dir) if isinstance(name, str) and name else None
    if file is None or not file.is_file():
        raise UserError(f"no context file at {name}", "context_file", "give an existing file")
    if file.stat().st_size > MAX_CONTEXT_FILE_BYTES:
        raise UserError(
            f"{file} is larger than {MAX_CONTEXT_FILE_BYTES} bytes",
            "context_file",
            "give fewer contexts",
        )
    text = _utf8(file, "context_file", "save it as UTF-8")
    contexts = [line for line in text.splitlines() if line.strip()]
    if not contexts:
        raise UserError(f"{file} has no contexts", "context_file", "write one context a line")
    if len(contexts) > MAX_CONTEXTS:
        raise UserError(
            f"{file} has {len(contexts)} contexts", "context_file", f"use at most {MAX_CONTEXTS}"
        )
    return contexts


def read_contexts(raw: dict[str, Any], base_dir: Path | None) -> list[str]:
    """The contexts of ``context``, ``contexts`` or ``context_file`` (at most one of them)."""
    given = [k for k in CONTEXT_KEYS if k in raw]
    if len(given) > 1:
        raise UserError(
            f"both {given[0]} and {given[1]} are set", given[1], "keep one way of giving contexts"
        )
    if "context_file" in raw:
        return _context_file(raw["context_file"], base_dir)
    if "contexts" in raw:
        contexts = raw["contexts"]
        if (
            not isinstance(contexts, list)
            or not contexts
            or not all(isinstance(c, str) for c in contexts)
        ):
            raise UserError(
                "contexts must be a non-empty list of strings", "contexts", 'contexts = ["A", "B"]'
            )
        if len(set(contexts)) != len(contexts):
            raise UserError("contexts has duplicates", "contexts", "list each context once")
        if len(contexts) > MAX_CONTEXTS:
            raise UserError(f"{len(contexts)} contexts", "contexts", f"use at most {MAX_CONTEXTS}")
        return list(contexts)
    context = raw.get("context", "")
    if not isinstance(context, str):
        raise UserError(
            f"context must be a string, got {context!r}",
            "context",
            "use contexts = [...] for several",
        )
    return [context]


@functools.lru_cache(maxsize=8)
def _positions_and_tokenizer(path: str | None) -> tuple[int | None, Any]:
    """The model's position limit (``None``: unlimited or unknown) and its tokenizer.

    Read from the local folder's config and tokenizer files only (no weights, no network, no
    remote code); ``(None, None)`` when the model is not a local folder.
    """
    from transformers import AutoConfig, AutoTokenizer

    if path is None:
        from disco.models import default_model_path

        path = str(default_model_path())
    if not Path(path).is_dir() or not (Path(path) / "config.json").is_file():
        return None, None
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError):
        return None, None  # loading the model reports it
    if getattr(config, "is_encoder_decoder", False):
        return None, tokenizer  # relative positions (T5) or separate limits: checked by loading
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        limit = getattr(config, name, None)
        if isinstance(limit, int) and limit > 0:
            return limit, tokenizer
    return None, tokenizer


def check_positions(
    path: str | None, length: int, contexts: Sequence[str], raw: dict[str, Any]
) -> None:
    """A context plus ``length`` new tokens must fit the model's positions."""
    limit, tokenizer = _positions_and_tokenizer(path)
    if limit is None:
        return
    if length + 1 > limit:
        raise UserError(
            f"length {length} does not fit the model's {limit} positions",
            "model.length",
            f"use at most {limit - 1}",
        )
    key = next((k for k in CONTEXT_KEYS if k in raw), "context")
    for i, context in enumerate(contexts):
        if len(context) + length + 1 <= limit:
            continue  # a token is at least one character: fits without tokenizing
        n = len(tokenizer(context, verbose=False)["input_ids"])
        if max(n, 1) + length > limit:
            raise UserError(
                f"context {i} is {n} tokens: with length {length} it exceeds the model's "
                f"{limit} positions",
                key,
                f"shorten it to at most {limit - length} tokens, or lower model.length",
            )
