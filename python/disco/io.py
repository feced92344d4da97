"""Saving and loading EBMs as data: JSON for the structure, safetensors for the numbers.

An EBM built by ``constrain`` (or by hand from a base distribution and scorers) is saved as
``ebm.json`` — the base distribution by its specification (a model path, or an enumerable
model's configuration), each feature by its specification (:mod:`disco.features`) — and
``tensors.safetensors`` for coefficients and any base parameters. Nothing is pickled, so
loading runs no code beyond the named built-ins and import paths.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disco.distributions import EnumerableLM
from disco.features import feature
from disco.scorers import BooleanScorer, ExponentialScorer, Product, Scorer

__all__ = ["FORMAT", "load_ebm", "save_ebm"]

FORMAT = "disco-ebm"
VERSION = 1


def _scorer_spec(scorer: Scorer) -> dict[str, Any]:
    if scorer.spec is None:
        raise ValueError(
            f"feature {scorer.name!r} has no specification, so it cannot be saved as data: build it "
            "with disco.features (word_present, regex_match, ..., from_import_path) instead of a lambda"
        )
    return dict(scorer.spec)


def _base_spec(base: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    if isinstance(base, EnumerableLM):
        for name, value in base.state_dict().items():
            tensors[f"base.{name}"] = value.detach().cpu().contiguous()
        return {
            "type": "enumerable",
            "tokens": list(base.tokens),
            "max_length": base.max_length,
            "contexts": list(base.contexts),
        }
    to_spec = getattr(base, "to_spec", None)
    if callable(to_spec):
        return {"type": "lm", **to_spec()}
    raise ValueError(
        f"cannot save a base distribution of type {type(base).__name__}: it has no to_spec()"
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return str(float(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_ebm(ebm: Product, directory: str | os.PathLike[str]) -> Path:
    """Write ``ebm`` (a product of a base distribution and scorers) to ``directory``."""
    from safetensors.torch import save_file

    if not isinstance(ebm, Product):
        raise TypeError(f"save_ebm expects a Product (an EBM), got {type(ebm).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    base, *rest = ebm.factors
    factors: list[dict[str, Any]] = []
    for i, factor in enumerate(rest):
        if isinstance(factor, ExponentialScorer):
            key = f"coefficients.{i}"
            tensors[key] = factor.coefficients.detach().cpu().contiguous()
            factors.append(
                {
                    "kind": "exponential",
                    "features": [_scorer_spec(f) for f in factor.features],
                    "coefficients": key,
                }
            )
        elif isinstance(factor, BooleanScorer):
            factors.append({"kind": "boolean", "feature": _scorer_spec(factor)})
        elif isinstance(factor, Scorer):
            factors.append({"kind": "positive", "feature": _scorer_spec(factor)})
        else:
            raise ValueError(
                f"factor {i + 1} ({type(factor).__name__}) is not a scorer: only the first factor may be a distribution"
            )
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "base": _base_spec(base, tensors),
        "factors": factors,
    }
    if ebm.fit_report is not None:
        document["fit_report"] = {
            k: _jsonable(v) for k, v in dataclasses.asdict(ebm.fit_report).items()
        }
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors or {"empty": torch.zeros(0)}, path / "tensors.safetensors")
    tmp = path / "ebm.json.tmp"
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path / "ebm.json")
    return path


def _load_base(spec: dict[str, Any], tensors: dict[str, torch.Tensor], base: Any) -> Any:
    if base is not None:
        return base
    kind = spec.get("type")
    if kind == "enumerable":
        model = EnumerableLM(
            tokens=spec["tokens"], max_length=spec["max_length"], contexts=spec["contexts"]
        )
        state = {k.removeprefix("base."): v for k, v in tensors.items() if k.startswith("base.")}
        model.load_state_dict(state)
        return model
    if kind == "lm":
        import disco.distributions

        settings = {k: v for k, v in spec.items() if k != "type"}
        return disco.distributions.LMDistribution(**settings)
    raise ValueError(f"unknown base type {kind!r} in the saved EBM")


def load_ebm(directory: str | os.PathLike[str], base: Any = None) -> Product:
    """Rebuild an EBM saved by :func:`save_ebm` (``base`` overrides the saved base distribution)."""
    from safetensors.torch import load_file

    path = Path(directory)
    if not (path / "ebm.json").exists():
        raise FileNotFoundError(f"no saved EBM in {path} (expected {path / 'ebm.json'})")
    document = json.loads((path / "ebm.json").read_text())
    if document.get("format") != FORMAT:
        raise ValueError(
            f"{path / 'ebm.json'} is not a disco EBM (format {document.get('format')!r})"
        )
    if document.get("version") != VERSION:
        raise ValueError(
            f"unsupported EBM format version {document.get('version')!r} (this disco reads {VERSION})"
        )
    tensors = load_file(path / "tensors.safetensors")
    factors: list[Any] = [_load_base(document["base"], tensors, base)]
    for entry in document["factors"]:
        if entry["kind"] == "exponential":
            features = [feature(spec) for spec in entry["features"]]
            factors.append(ExponentialScorer(features, tensors[entry["coefficients"]].numpy()))
        else:
            factors.append(feature(entry["feature"]))
    ebm = Product(*factors)
    if "fit_report" in document:
        from disco.distributions.constraints import FitReport

        fields: dict[str, Any] = dict(document["fit_report"])
        for key in ("coefficients", "targets", "moments"):
            fields[key] = np.asarray(fields[key], dtype=np.float64)
        for key in ("max_error", "ess", "log_z"):
            fields[key] = float(fields[key])
        ebm.fit_report = FitReport(**fields)
    return ebm
