"""``constrain``: from a base distribution and moment constraints to the EBM that meets them.

The target is the distribution closest in KL to the base ``a`` whose feature moments equal the
requested ones: ``P(x) = a(x) b(x) exp(lambda . phi(x))`` (DESIGN §4). Boolean features with
moment 1.0 (or 0.0) are pointwise constraints and enter ``b`` exactly; the coefficients of the
others are fitted once, on a fixed sample, by the Rust Newton solver
(:func:`disco.numerics.fit_coefficients`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from disco import numerics
from disco.compat import constrain_arguments
from disco.distributions.contexts import resolve_contexts
from disco.scorers.base import BooleanScorer, ExponentialScorer, Product, Scorer, as_scorer

__all__ = ["FitReport", "constrain"]


@dataclass(frozen=True)
class FitReport:
    """What ``constrain`` fitted and how well, on the samples it used."""

    features: list[str] = field(metadata={"help": "names of the distributional features, in order"})
    coefficients: np.ndarray = field(metadata={"help": "fitted lambda, one per feature"})
    targets: np.ndarray = field(metadata={"help": "requested moments"})
    moments: np.ndarray = field(metadata={"help": "moments of the fitted EBM on the samples"})
    max_error: float = field(metadata={"help": "max_k |moment_k - target_k| on the samples"})
    iterations: int = field(metadata={"help": "Newton iterations"})
    ess: float = field(metadata={"help": "effective sample size of the final importance weights"})
    log_z: float = field(metadata={"help": "estimated log partition function (mean over contexts)"})
    n_samples: int = field(metadata={"help": "samples used for the fit"})
    pointwise: list[str] = field(metadata={"help": "features applied as pointwise constraints"})

    def __str__(self) -> str:
        lines = [f"fit on {self.n_samples} samples in {self.iterations} Newton iterations"]
        for name, lam, target, got in zip(
            self.features, self.coefficients, self.targets, self.moments
        ):
            lines.append(f"  {name}: lambda={lam:+.6g}  target={target:.6g}  achieved={got:.6g}")
        lines.append(
            f"  max error {self.max_error:.3g}, ESS {self.ess:.1f}, log Z {self.log_z:.6g}"
        )
        if self.pointwise:
            lines.append("  pointwise: " + ", ".join(self.pointwise))
        return "\n".join(lines)


def _split(
    features: Sequence[Any], moments: Sequence[float]
) -> tuple[list[Scorer], list[float], list[BooleanScorer]]:
    if len(features) != len(moments):
        raise ValueError(f"{len(features)} features but {len(moments)} moments")
    if not features:
        raise ValueError("constrain needs at least one feature")
    distributional: list[Scorer] = []
    targets: list[float] = []
    pointwise: list[BooleanScorer] = []
    for k, (feature, moment) in enumerate(zip(features, moments)):
        scorer = as_scorer(feature, k)
        moment = float(moment)
        if not math.isfinite(moment):
            raise ValueError(
                f"moments[{k}] for feature {scorer.name!r} is {moment}: it must be finite"
            )
        if isinstance(scorer, BooleanScorer):
            if not 0.0 <= moment <= 1.0:
                raise ValueError(
                    f"moments[{k}] = {moment} for boolean feature {scorer.name!r}: a boolean's moment "
                    "is the fraction of samples where it holds and must lie in [0, 1]"
                )
            if moment == 1.0:
                pointwise.append(scorer)
                continue
            if moment == 0.0:
                pointwise.append(scorer.negation())
                continue
        distributional.append(scorer)
        targets.append(moment)
    return distributional, targets, pointwise


def _draw(
    proposal: Any, contexts: Sequence[Any], n_samples: int, sampling_size: int, progress: bool
) -> list[tuple[list[Any], torch.Tensor]]:
    per_context = max(1, n_samples // len(contexts))
    drawn = []
    bar = tqdm(
        total=per_context * len(contexts),
        desc="constrain: sampling",
        disable=not progress,
        leave=False,
    )
    for context in contexts:
        samples: list[Any] = []
        log_q: list[torch.Tensor] = []
        while len(samples) < per_context:
            batch, lq = proposal.sample(context, min(sampling_size, per_context - len(samples)))
            samples.extend(batch)
            log_q.append(lq.detach().to("cpu", torch.float64))
            bar.update(len(batch))
        drawn.append((samples, torch.cat(log_q)))
    bar.close()
    return drawn


def _no_fit(pointwise: list[str]) -> FitReport:
    """The report of a target with pointwise factors only: nothing was fitted."""
    zero = np.zeros(0)
    return FitReport([], zero, zero, zero, 0.0, 0, math.nan, math.nan, 0, pointwise)


def constrain(
    base: Any,
    features: Sequence[Scorer | Callable[..., Any]],
    moments: Sequence[float] | None = None,
    *,
    proposal: Any = None,
    context: Any = "",
    contexts: Sequence[Any] | None = None,
    context_distribution: Any = None,
    n_contexts: int = 32,
    n_samples: int = 2**12,
    sampling_size: int = 256,
    samples: Sequence[Any] | None = None,
    proposal_log_probs: Any = None,
    tolerance: float = 1e-8,
    max_iterations: int = 100,
    progress: bool = False,
    **original_keywords: Any,
) -> Product:
    """Return the EBM closest to ``base`` in KL whose feature moments are ``moments``.

    Parameters
    ----------
    base:
        The original distribution ``a`` (anything with ``sample`` and ``log_score``).
    features, moments:
        The constraints: ``E_p[features[k]] = moments[k]``. Boolean features with moment 1.0 hold
        on every sample of the target (moment 0.0: on none) and are applied pointwise. Without
        ``moments`` every feature is a factor of the product, ``base * features[0] * ...`` (the
        original disco's default).
    proposal:
        Draws the samples the coefficients are fitted on (default: ``base``).
    context, contexts, context_distribution, n_contexts:
        One context (default), an explicit list, or a context distribution from which
        ``n_contexts`` are drawn (one with a single context, such as a
        ``SingleContextDistribution``, gives that one context). With several contexts one
        coefficient vector is shared and each context's importance weights are normalised
        within that context.
    n_samples, sampling_size:
        Total samples to draw and the batch size to draw them in.
    samples, proposal_log_probs:
        Precomputed samples (one context) and their log-probabilities under the proposal,
        instead of drawing: e.g. a whole enumerated support with a uniform proposal.
    tolerance, max_iterations:
        Newton's stopping rule, ``max_k |E[phi_k] - moments[k]| < tolerance``, and budget.
    progress:
        Show a progress bar while sampling.
    **original_keywords:
        The original disco's names (``n_contexts_per_step``, ``context_sampling_size``,
        ``iterations``, ``learning_rate``), translated by :func:`disco.compat.constrain_arguments`.

    Returns
    -------
    Product
        ``base * pointwise factors * ExponentialScorer(features, lambda)``; its ``fit_report``
        (a :class:`FitReport`) says how the fit went.

    Raises
    ------
    ValueError
        Infeasible or degenerate constraints (named), bad moments or bad samples.
    disco.ConvergenceError
        The solver did not converge within ``max_iterations``.
    """
    if original_keywords:  # the original's names for n_contexts and max_iterations
        translated = constrain_arguments(original_keywords)
        n_contexts = translated.get("n_contexts", n_contexts)
        max_iterations = translated.get("max_iterations", max_iterations)
    if moments is None:
        factors = [as_scorer(f, k) for k, f in enumerate(features)]
        ebm = Product(base, *factors)
        ebm.fit_report = _no_fit([f.name for f in factors])
        return ebm
    distributional, targets, pointwise = _split(features, moments)
    pointwise_names = [p.name for p in pointwise]
    if not distributional:
        ebm = Product(base, *pointwise)
        ebm.fit_report = _no_fit(pointwise_names)
        return ebm

    if samples is not None:
        if proposal_log_probs is None:
            if proposal is None:
                raise ValueError(
                    "samples were given without proposal_log_probs or a proposal to score them"
                )
            proposal_log_probs = proposal.log_score(samples, context)
        groups_data = [
            (
                list(samples),
                torch.as_tensor(numerics.as_vector(proposal_log_probs, "proposal_log_probs")),
            )
        ]
        context_list: list[Any] = [context]
        if len(groups_data[0][0]) != groups_data[0][1].numel():
            raise ValueError(
                f"length mismatch: {len(samples)} samples but {groups_data[0][1].numel()} proposal_log_probs"
            )
    else:
        context_list = resolve_contexts(
            context, contexts, context_distribution, n_contexts, single_once=True
        )
        groups_data = _draw(proposal or base, context_list, n_samples, sampling_size, progress)

    rows, log_weights, group_ids = [], [], []
    exponential = ExponentialScorer(distributional, np.zeros(len(distributional)))
    for g, (ctx, (xs, log_q)) in enumerate(zip(context_list, groups_data)):
        if not xs:
            raise ValueError(f"no samples for context {ctx!r}")
        log_a = base.log_score(xs, ctx).detach().to("cpu", torch.float64)
        log_b = (
            Product(*pointwise).log_score(xs, ctx)
            if pointwise
            else torch.zeros(len(xs), dtype=torch.float64)
        )
        lw = torch.where(
            log_b == -math.inf, torch.full_like(log_a, -math.inf), log_a + log_b - log_q
        )
        rows.append(exponential.feature_matrix(xs, ctx))
        log_weights.append(lw)
        group_ids.append(torch.full((len(xs),), g, dtype=torch.float64))
    phi = torch.cat(rows).numpy()
    lw_all = torch.cat(log_weights).numpy()
    groups = torch.cat(group_ids).numpy().astype(np.int64) if len(context_list) > 1 else None

    names = [f.name for f in distributional]
    fit = numerics.fit_coefficients(
        phi,
        np.asarray(targets),
        log_weights=lw_all,
        groups=groups,
        tolerance=tolerance,
        max_iterations=max_iterations,
        feature_names=names,
    )
    ebm = Product(base, *pointwise, ExponentialScorer(distributional, fit.coefficients))
    ebm.fit_report = FitReport(
        features=[f.name for f in distributional],
        coefficients=np.asarray(fit.coefficients),
        targets=np.asarray(targets, dtype=np.float64),
        moments=np.asarray(fit.moments),
        max_error=float(fit.max_error),
        iterations=int(fit.iterations),
        ess=float(fit.ess),
        log_z=float(fit.log_z),
        n_samples=int(phi.shape[0]),
        pointwise=pointwise_names,
    )
    return ebm
