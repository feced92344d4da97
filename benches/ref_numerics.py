"""The original disco's (disco-generation 1.1.1) counterparts of ``disco.numerics`` kernels.

Runs only under the reference venv, loaded by ``_ref_runner.py``; never imported by disco or
its tests. Each entry calls the 1.1.1 code, or reproduces the one-line tensor expression it
uses inline, on the same log-scores as ours (float64 tensors made once, outside the timing):

- ``logmeanexp``: its running estimate of Z, ``MovingAverage() += exp(log P - log q)``
  (``Tuner._update_moving_z``), then ``log``; it keeps no log-space form.
- ``normalized_weights``: ``r = exp(l); r / r.sum()`` as ``BaseDistribution.constrain`` forms
  its self-normalised weights.
- ``weighted_moments``: ``(r * features).sum(dim=1) / r.sum()`` with the features stacked
  K x N, as in ``constrain``.
- ``kl`` / ``tv`` / ``js``: ``disco.metrics.KL`` / ``TV`` / ``JS`` ``.divergence(target,
  model, z, proposal)`` with ``z = exp(log_z)``.
- ``logsumexp`` and ``effective_sample_size``: 1.1.1 has no counterpart (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch


def build(
    fn: str, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]
) -> Callable[[], Any] | None:
    """A zero-argument callable computing ``fn`` with 1.1.1's code, or ``None`` if it has none."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    if fn == "logmeanexp":
        from disco.utils.moving_average import MovingAverage

        x = tensors["x"]

        def logmeanexp() -> float:
            z = MovingAverage()
            z += torch.exp(x)
            return math.log(float(z.value))

        return logmeanexp
    if fn == "normalized_weights":
        x = tensors["x"]

        def normalized_weights() -> torch.Tensor:
            r = torch.exp(x)
            return r / r.sum()

        return normalized_weights
    if fn == "weighted_moments":
        x, features_kn = tensors["x"], tensors["features_kn"]

        def weighted_moments() -> torch.Tensor:
            r = torch.exp(x)
            return (r * features_kn).sum(dim=1) / r.sum()

        return weighted_moments
    if fn in ("kl", "tv", "js"):
        from disco.metrics import JS, KL, TV

        metric = {"kl": KL, "tv": TV, "js": JS}[fn]
        target, model, proposal = tensors["target"], tensors["model"], tensors["proposal"]
        z = torch.tensor(math.exp(params["log_z"]), dtype=torch.float64)
        return lambda: metric.divergence(target, model, z, proposal)
    return None
