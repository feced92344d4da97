"""Conversion of user arrays (numpy, sequences, torch tensors) to what the Rust core reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

ArrayLike = Any
"""Anything with numbers in it: a numpy array, a (nested) sequence, a torch tensor."""

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _to_float64(x: ArrayLike, name: str) -> FloatArray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        if x.is_complex():
            raise ValueError(f"{name} is a complex tensor: real numbers are expected")
        # np.asarray with order="C", not np.ascontiguousarray: the latter turns a 0-d array
        # into a 1-D one, which let scalars through where 1-D arrays are documented.
        return np.asarray(x.detach().cpu().double().numpy(), order="C")
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} cannot be read as an array of numbers: {err}") from err
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {array.dtype}: real numbers are expected")
    return np.asarray(array, dtype=np.float64, order="C")


def as_vector(x: ArrayLike, name: str) -> FloatArray:
    """Convert ``x`` to a contiguous 1-D float64 array, or raise ``ValueError`` naming ``name``."""
    array = _to_float64(x, name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per sample); got shape {array.shape}")
    return array


def as_matrix(x: ArrayLike, name: str) -> FloatArray:
    """Convert ``x`` to a C-contiguous 2-D float64 array (a 1-D input becomes one column)."""
    array = _to_float64(x, name)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples x features); got shape {array.shape}")
    return array


def _as_scalar(x: ArrayLike, name: str) -> float:
    """Convert a single number (a Python or numpy scalar, a 0-d array or tensor) to float."""
    array = _to_float64(x, name)
    if array.ndim != 0:
        raise ValueError(f"{name} must be a single number; got shape {array.shape}")
    return float(array)


def _at_most_1d(x: ArrayLike, name: str) -> FloatArray:
    """A scalar or a 1-D array as a 1-D float64 array; anything with more dimensions is refused."""
    array = _to_float64(x, name)
    if array.ndim > 1:
        raise ValueError(f"{name} must be a number or 1-D; got shape {array.shape}")
    return np.atleast_1d(array)


def _scalar_input(x: ArrayLike | None) -> bool:
    return x is not None and np.ndim(x.detach().cpu().numpy() if hasattr(x, "detach") else x) == 0
