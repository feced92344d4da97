"""Saving and loading EBMs as data: JSON for the structure, safetensors for the numbers.

An EBM built by ``constrain`` (or by hand from a base distribution and scorers) is saved as
``ebm.json`` — the base distribution by its specification (a model path, or an enumerable
model's configuration), each feature by its specification (:mod:`disco.features`) — and
``tensors.safetensors`` for coefficients and any base parameters. Nothing is pickled.

Loading an EBM someone else saved runs none of their code: the base model is loaded with
``trust_remote_code`` off unless the *caller* passes ``trust_remote_code=True`` (a file that asks
for it is refused without that), import-path features are refused unless the caller passes
``allow_imports=True``, the base specification accepts only the keys :func:`save_ebm` writes,
a relative model path is looked up next to the EBM (never in the current folder), and the
files' sizes are bounded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disco._atomic import replace_folder
from disco._safetensors import write_safetensors
from disco.distributions import EnumerableLM
from disco.features import feature
from disco.scorers import BooleanScorer, ExponentialScorer, Product, Scorer

__all__ = ["FORMAT", "load_ebm", "save_ebm"]

FORMAT = "disco-ebm"
VERSION = 1
# ebm.json holds specifications and a fit report: a few kilobytes; a hostile one stays bounded.
MAX_DOCUMENT_BYTES = 16 * 2**20
# What the base specification of an "lm" base may hold: what LMDistribution.to_spec() writes.
LM_KEYS = ("model", "length", "temperature", "top_k", "top_p")
ENUMERABLE_KEYS = ("tokens", "max_length", "contexts")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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
        spec = {"type": "lm", **to_spec()}
        model = spec.get("model")
        if isinstance(model, str) and Path(model).expanduser().exists():
            spec["model"] = str(Path(model).expanduser().resolve())  # loads from any folder
        return spec
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
    path.parent.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed into place: a full disk or a kill leaves the old folder (or none),
    # never a json without its tensors.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        write_safetensors(tensors or {"empty": torch.zeros(0)}, tmp / "tensors.safetensors")
        (tmp / "ebm.json").write_text(json.dumps(document, indent=2))
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _refuse_remote_code(spec: dict[str, Any], trust_remote_code: bool, where: Path) -> None:
    asks = {
        "base.trust_remote_code": spec.get("trust_remote_code"),
        "base.model_kwargs.trust_remote_code": (spec.get("model_kwargs") or {}).get(
            "trust_remote_code"
        )
        if isinstance(spec.get("model_kwargs"), dict)
        else None,
    }
    for key, value in asks.items():
        if value and not trust_remote_code:
            raise ValueError(
                f"{where} asks to run the base model's own code ({key} = {value!r}); refused: "
                "load it with trust_remote_code=True (disco sample --trust-remote-code) only if "
                "you trust where it came from"
            )


def _model_location(model: Any, folder: Path) -> str | None:
    """The base model's folder or Hub name; a relative path is looked up next to the EBM only."""
    if model is None:
        return None  # the embedded model
    if not isinstance(model, str) or not model:
        raise ValueError(f"base.model must be a path or Hub name, got {model!r}")
    given = Path(model)
    if given.is_absolute():
        return model
    beside = folder / given
    if beside.exists():
        return str(beside.resolve())
    if given.exists() or not _HUB_NAME.match(model) or model.startswith("."):
        raise ValueError(
            f"base.model {model!r} is a relative path that is not next to the EBM ({folder}); "
            "it is never looked up in the current folder: save the EBM with an absolute path, "
            "or pass base= to load_ebm"
        )
    return model  # a Hub name


def _load_base(
    spec: Any,
    tensors: dict[str, torch.Tensor],
    base: Any,
    folder: Path,
    trust_remote_code: bool,
) -> Any:
    if base is not None:
        return base
    if not isinstance(spec, dict):
        raise ValueError(f"base must be a table, got {spec!r:.60}")
    kind = spec.get("type")
    settings = {k: v for k, v in spec.items() if k != "type"}
    if kind == "enumerable":
        unknown = sorted(set(settings) - set(ENUMERABLE_KEYS))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the base of {folder / 'ebm.json'}")
        state = {k.removeprefix("base."): v for k, v in tensors.items() if k.startswith("base.")}
        try:
            model = EnumerableLM(
                tokens=spec["tokens"], max_length=spec["max_length"], contexts=spec["contexts"]
            )
            model.load_state_dict(state)
        except (KeyError, TypeError, RuntimeError) as err:
            raise ValueError(
                f"malformed enumerable base in {folder / 'ebm.json'}: {err!r}"
            ) from None
        return model
    if kind == "lm":
        _refuse_remote_code(spec, trust_remote_code, folder / "ebm.json")
        settings.pop("trust_remote_code", None)
        kwargs = settings.pop("model_kwargs", None)
        if isinstance(kwargs, dict) and set(kwargs) <= {"trust_remote_code"}:
            kwargs = None  # asked for remote code only, which the caller's flag now decides
        if kwargs is not None:
            settings["model_kwargs"] = kwargs  # refused just below, as undocumented
        unknown = sorted(set(settings) - set(LM_KEYS))
        if unknown:
            raise ValueError(
                f"unknown key(s) {', '.join('base.' + k for k in unknown)} in "
                f"{folder / 'ebm.json'}: a saved base holds only {', '.join(LM_KEYS)}"
            )
        import disco.distributions

        settings["model"] = _model_location(settings.get("model"), folder)
        return disco.distributions.LMDistribution(**settings, trust_remote_code=trust_remote_code)
    raise ValueError(f"unknown base type {kind!r} in the saved EBM")


def _read_document(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{path} is {size} bytes, more than an EBM description can be")
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        format_ = document.get("format") if isinstance(document, dict) else None
        raise ValueError(f"{path} is not a disco EBM (format {format_!r})")
    if document.get("version") != VERSION:
        raise ValueError(
            f"unsupported EBM format version {document.get('version')!r} (this disco reads {VERSION})"
        )
    if not isinstance(document.get("factors"), list) or not all(
        isinstance(f, dict) for f in document["factors"]
    ):
        raise ValueError(f"{path}: factors must be a list of tables")
    return document


def load_ebm(
    directory: str | os.PathLike[str],
    base: Any = None,
    *,
    trust_remote_code: bool = False,
    allow_imports: bool = False,
) -> Product:
    """Rebuild an EBM saved by :func:`save_ebm` (``base`` overrides the saved base distribution).

    ``trust_remote_code`` lets the base model's own Python code run (a saved file cannot turn it
    on); ``allow_imports`` lets import-path features import their modules. Both are off: loading
    an EBM from elsewhere runs none of its code.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory)
    if not (path / "ebm.json").is_file():
        raise FileNotFoundError(f"no saved EBM in {path} (expected {path / 'ebm.json'})")
    document = _read_document(path / "ebm.json")
    try:
        tensors = load_file(path / "tensors.safetensors")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read {path / 'tensors.safetensors'}: {err}") from None
    factors: list[Any] = [_load_base(document.get("base"), tensors, base, path, trust_remote_code)]
    for entry in document["factors"]:
        kind = entry.get("kind")
        if kind == "exponential":
            specs = entry.get("features")
            coefficients = tensors.get(str(entry.get("coefficients")))
            if not isinstance(specs, list) or coefficients is None:
                raise ValueError(f"an exponential factor in {path} lacks features or coefficients")
            if coefficients.shape != (len(specs),) or not coefficients.is_floating_point():
                raise ValueError(
                    f"{len(specs)} features but coefficients of shape {tuple(coefficients.shape)}"
                )
            features = [_spec_feature(spec, path, allow_imports) for spec in specs]
            factors.append(ExponentialScorer(features, coefficients.numpy()))
        elif kind in ("boolean", "positive"):
            factors.append(_spec_feature(entry.get("feature"), path, allow_imports))
        else:
            raise ValueError(f"unknown factor kind {kind!r} in {path / 'ebm.json'}")
    ebm = Product(*factors)
    if "fit_report" in document:
        from disco.distributions.constraints import FitReport

        try:
            fields: dict[str, Any] = dict(document["fit_report"])
            for key in ("coefficients", "targets", "moments"):
                fields[key] = np.asarray(fields[key], dtype=np.float64)
            for key in ("max_error", "ess", "log_z"):
                fields[key] = float(fields[key])
            ebm.fit_report = FitReport(**fields)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"malformed fit_report in {path / 'ebm.json'}: {err!r}") from None
    return ebm


def _spec_feature(spec: Any, folder: Path, allow_imports: bool) -> Any:
    """A saved feature; a classifier's relative model folder is looked up next to the EBM."""
    if isinstance(spec, dict) and spec.get("type") == "classifier":
        model = spec.get("model")
        if isinstance(model, str) and not Path(model).is_absolute():
            spec = {**spec, "model": _model_location(model, folder)}
    if not isinstance(spec, dict):
        raise ValueError(f"a saved feature is a table, got {spec!r:.60}")
    return feature(spec, allow_imports=allow_imports)
