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
from disco._calls import call_log_score
from disco.distributed import Chunk, current_world, draw_chunk, plan_chunks, shared_seed
from disco.distributions.contexts import resolve_contexts
from disco.scorers.base import (
    BooleanScorer,
    CountMismatchError,
    ExponentialScorer,
    Product,
    Scorer,
    as_list,
    as_scorer,
)

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
        raise CountMismatchError(f"{len(features)} features but {len(moments)} moments")
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
    seed: int | None = None,
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
    seed:
        Seeds the draws: chunk ``j`` of context ``c`` is drawn from the seed of
        ``(seed, c, j)``, so the fit is the same on any number of processes (default: a seed
        from torch's generator). Under ``torch.distributed`` each rank draws and scores its
        share of the chunks and every rank solves on all of them, in chunk order.
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
        from disco.compat import constrain_arguments

        translated = constrain_arguments(original_keywords)
        n_contexts = translated.get("n_contexts", n_contexts)
        max_iterations = translated.get("max_iterations", max_iterations)
    features = as_list(features, "features")
    if moments is None:
        factors = [as_scorer(f, k) for k, f in enumerate(features)]
        return _unfitted(Product(base, *factors), [f.name for f in factors])
    distributional, targets, pointwise = _split(features, as_list(moments, "moments"))
    if not distributional:
        return _unfitted(Product(base, *pointwise), [p.name for p in pointwise])
    weigh = _Weighing(base, pointwise, ExponentialScorer(distributional, np.zeros(len(targets))))
    if samples is not None:
        rows = _given_rows(weigh, samples, proposal_log_probs, proposal, context)
    else:
        contexts = resolve_contexts(
            context, contexts, context_distribution, n_contexts, single_once=True
        )
        draw = _Draw(proposal or base, n_samples, sampling_size, seed, progress)
        rows = draw.rows(weigh, contexts)
    fit = numerics.fit_coefficients(
        rows.phi,
        np.asarray(targets),
        log_weights=rows.log_weights,
        groups=rows.groups,
        tolerance=tolerance,
        max_iterations=max_iterations,
        feature_names=[f.name for f in distributional],
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
        n_samples=int(rows.phi.shape[0]),
        pointwise=[p.name for p in pointwise],
    )
    return ebm


def _unfitted(ebm: Product, pointwise: list[str]) -> Product:
    """``ebm`` with the report of a target that has pointwise factors only: nothing was fitted."""
    zero = np.zeros(0)
    ebm.fit_report = FitReport([], zero, zero, zero, 0.0, 0, math.nan, math.nan, 0, pointwise)
    return ebm


@dataclass
class _Weighing:
    """Scores samples for the fit: the base ``a``, the pointwise factors ``b`` and the features."""

    base: Any
    pointwise: list[BooleanScorer]
    exponential: ExponentialScorer

    def __call__(
        self, xs: list[Any], ctx: Any, log_q: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows and importance log-weights ``log a + log b - log q`` of samples."""
        log_a = call_log_score(self.base, xs, ctx).detach().to("cpu", torch.float64)
        log_b = (
            Product(*self.pointwise).log_score(xs, ctx)
            if self.pointwise
            else torch.zeros(len(xs), dtype=torch.float64)
        )
        lw = torch.where(
            log_b == -math.inf, torch.full_like(log_a, -math.inf), log_a + log_b - log_q
        )
        return self.exponential.feature_matrix(xs, ctx).numpy(), lw.numpy()


@dataclass
class _Rows:
    """The fit's inputs: feature rows, their log-weights, and each row's context (or None)."""

    phi: np.ndarray
    log_weights: np.ndarray
    groups: np.ndarray | None

    @classmethod
    def of(cls, parts: list[tuple[np.ndarray, np.ndarray]], positions: list[int]) -> _Rows:
        """The rows of ``parts`` in order, ``parts[j]`` from the context at ``positions[j]``."""
        groups = (
            np.concatenate(
                [np.full(len(lw), g, dtype=np.int64) for g, (_, lw) in zip(positions, parts)]
            )
            if len(set(positions)) > 1
            else None
        )
        phi = np.concatenate([rows for rows, _ in parts])
        return cls(phi, np.concatenate([lw for _, lw in parts]), groups)


def _given_rows(
    weigh: _Weighing, samples: Sequence[Any], proposal_log_probs: Any, proposal: Any, context: Any
) -> _Rows:
    """The rows of precomputed samples of one context."""
    if proposal_log_probs is None:
        if proposal is None:
            raise ValueError(
                "samples were given without proposal_log_probs or a proposal to score them"
            )
        proposal_log_probs = call_log_score(proposal, samples, context)
    given = torch.as_tensor(numerics.as_vector(proposal_log_probs, "proposal_log_probs"))
    if len(samples) != given.numel():
        raise ValueError(
            f"length mismatch: {len(samples)} samples but {given.numel()} proposal_log_probs"
        )
    if not len(samples):
        raise ValueError(f"no samples for context {context!r}")
    return _Rows.of([weigh(list(samples), context, given)], [0])


@dataclass
class _Draw:
    """Draws the fit's samples in chunks, shared out over the processes of a run."""

    proposal: Any
    n_samples: int
    sampling_size: int
    seed: int | None
    progress: bool

    def rows(self, weigh: _Weighing, contexts: list[Any]) -> _Rows:
        """The rows of ``n_samples`` draws split over ``contexts``, in chunk order on every rank."""
        world = current_world()
        contexts = world.broadcast(contexts)  # every rank fits the same contexts
        chunks = plan_chunks(
            contexts,
            max(1, self.n_samples // len(contexts)),
            self.sampling_size,
            shared_seed(self.seed, world),
            "constrain",
        )
        bar = tqdm(
            total=sum(c.size for c in world.mine(chunks)),
            desc="constrain: sampling",
            disable=not (self.progress and world.is_main),
            leave=False,
        )

        def fit_rows(chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
            xs, log_q = draw_chunk(self.proposal, chunk)
            bar.update(len(xs))
            return weigh(xs, chunk.context, torch.from_numpy(log_q))

        with bar:
            parts = world.gather_chunks(chunks, fit_rows)
        return _Rows.of(parts, [c.position for c in chunks])
