"""The original disco's (disco-generation 1.1.1) QRS estimator and accept step, for bench_qrs.

Runs only under the reference venv, loaded by ``_ref_runner.py``; never imported by disco or
its tests. Inputs are float64 tensors made once, outside the timing.

- ``curve``: ``QuasiRejectionSamplerEstimator`` fed the log-scores directly (its constructor
  would draw them), then, one beta at a time, ``acceptance_rate_at_beta(b)``,
  ``divergence_at_beta(b, KL)`` and ``divergence_at_beta(b, TV)``: its only way to a curve.
- ``accept``: the arithmetic of ``QuasiRejectionSampler.sample``'s decision,
  ``us < clamp(exp(log P - log q) / beta, 0, 1)``, with the uniforms given (it draws them with
  ``torch.rand``); the Python list of accepted samples it then builds is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch


def build(
    fn: str, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]
) -> Callable[[], Any] | None:
    """A zero-argument callable computing ``fn`` with 1.1.1's code, or ``None`` if it has none."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    if fn == "curve":
        from disco.metrics import KL, TV
        from disco.samplers.quasi_rejection_sampler import QuasiRejectionSamplerEstimator

        estimator = QuasiRejectionSamplerEstimator.__new__(QuasiRejectionSamplerEstimator)
        estimator.target_log_scores = tensors["target"]
        estimator.proposal_log_scores = tensors["proposal"]
        betas = [float(b) for b in params["betas"]]

        def curve() -> list[float]:
            out: list[float] = []
            for b in betas:
                out.append(estimator.acceptance_rate_at_beta(b))
                out.append(estimator.divergence_at_beta(b, KL))
                out.append(estimator.divergence_at_beta(b, TV))
            return out

        return curve
    if fn == "accept":
        log_ratios, uniforms = tensors["log_ratios"], tensors["uniforms"]
        zeros = torch.zeros_like(log_ratios)
        beta = float(params["beta"])

        def accept() -> int:
            rs = torch.clamp(torch.exp(log_ratios - zeros) / beta, min=0.0, max=1.0)
            return int((uniforms < rs).sum())

        return accept
    return None
