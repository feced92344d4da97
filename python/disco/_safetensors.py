"""Writing safetensors files, with a full disk reported as the ``OSError`` it is."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

__all__ = ["write_safetensors"]


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``safetensors`` ``save_file``, its I/O failures (a full disk) raised as :class:`OSError`."""
    from safetensors import SafetensorError
    from safetensors import torch as safetensors_torch

    try:
        safetensors_torch.save_file(tensors, path)
    except SafetensorError as err:
        code = re.search(r"os error (\d+)", str(err))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(path)) from None
