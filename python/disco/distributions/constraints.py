"""``constrain``: from a base distribution and moment constraints to the EBM that meets them.

The target is the distribution closest in KL to the base ``a`` whose feature moments equal the
requested: ``P(x) = a(x) b(x) exp(lambda . phi(x))`` (docs/design.md §2.2). Boolean features with
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
from disco.distributed import (
    Chunk,
    current_world,
    draw_chunk,
)
from disco.distributions.contexts import plan_over_contexts
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
    """What ``constrain`` fitted and how well, on the samples it used.

    When every constraint is pointwise nothing is fitted: the target is the base times those
    factors. Given ``samples``, ``log_z`` then estimates the log of the base's mass where the
    constraints hold (with ``log_z_stderr``) and ``ess`` counts the samples that carry it;
    otherwise, as without moments, no sample is drawn and both are ``nan`` (not estimated), as
    the printed report says.
    """

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
    log_z_stderr: float = field(
        default=math.nan,
        metadata={"help": "standard error of log_z (pointwise constraints only; else nan)"},
    )

    def __post_init__(self) -> None:
        # A saved report (disco.io) holds the non-finite ones as strings ("nan", "-inf").
        for name in ("max_error", "ess", "log_z", "log_z_stderr"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def __str__(self) -> str:
        if not self.features:
            return "\n".join(self._unfitted_lines())
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

    def _unfitted_lines(self) -> list[str]:
        lines = ["nothing fitted: the target is the base times the factors below"]
        if self.n_samples == 0:
            lines.append(
                "  log Z and ESS not estimated: with nothing to fit no samples were drawn "
                "(give samples= and moments to estimate them)"
            )
        elif self.log_z == -math.inf:
            lines.append(
                f"  log Z -inf: none of the {self.n_samples} samples meets the pointwise constraints"
            )
        else:
            lines.append(
                f"  log Z {self.log_z:.6g} ± {self.log_z_stderr:.2g} (log of the base's mass "
                f"where the constraints hold), ESS {self.ess:.1f} of {self.n_samples} samples"
            )
        if self.pointwise:
            lines.append("  pointwise: " + ", ".join(self.pointwise))
        return lines


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
        original disco's default). When every constraint is pointwise nothing is fitted and no
        sample is drawn; given ``samples``, the report estimates ``log Z`` on them.
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
        Seeds the draws: the contexts taken from ``context_distribution`` and chunk ``j`` of
        context ``c``, drawn from the seed of ``(seed, c, j)``, so the fit is the same on any
        number of processes and whatever torch's generator did before (default: a seed from
        torch's generator). Under ``torch.distributed`` each rank draws and scores its
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
    names = [p.name for p in pointwise]
    if not distributional and samples is None:
        return _unfitted(Product(base, *pointwise), names)
    exponential = (
        ExponentialScorer(distributional, np.zeros(len(targets))) if distributional else None
    )
    weigh = _Weighing(base, pointwise, exponential)
    if samples is not None:
        rows = _given_rows(weigh, samples, proposal_log_probs, proposal, context)
    else:
        draw = _Draw(proposal or base, n_samples, sampling_size, seed, progress)
        rows = draw.rows(weigh, context, contexts, context_distribution, n_contexts)
    if not distributional:
        return _restricted(Product(base, *pointwise), rows.log_weights, names)
    return _fitted(weigh, distributional, targets, rows, tolerance, max_iterations)


def _fitted(
    weigh: _Weighing,
    distributional: list[Scorer],
    targets: list[float],
    rows: _Rows,
    tolerance: float,
    max_iterations: int,
) -> Product:
    """The base and pointwise factors of ``weigh`` times the fitted exponential factor."""
    fit = numerics.fit_coefficients(
        rows.phi,
        np.asarray(targets),
        log_weights=rows.log_weights,
        groups=rows.groups,
        tolerance=tolerance,
        max_iterations=max_iterations,
        feature_names=[f.name for f in distributional],
    )
    exponential = ExponentialScorer(distributional, fit.coefficients)
    ebm = Product(weigh.base, *weigh.pointwise, exponential)
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
        pointwise=[p.name for p in weigh.pointwise],
    )
    return ebm


def _unfitted(ebm: Product, pointwise: list[str]) -> Product:
    """``ebm`` with the report of a target that has pointwise factors only: nothing was fitted."""
    zero = np.zeros(0)
    ebm.fit_report = FitReport([], zero, zero, zero, 0.0, 0, math.nan, math.nan, 0, pointwise)
    return ebm


def _restricted(ebm: Product, log_weights: np.ndarray, pointwise: list[str]) -> Product:
    """``ebm``, the base restricted by pointwise factors, with its ``log Z`` estimated.

    ``Z`` is the base's mass where the factors hold: the mean importance weight (on samples of
    the base, the fraction kept). Its error is the delta method's, ``sd(w) / (sqrt(N) Z)``,
    ``N`` the divisor as everywhere in :mod:`disco.numerics.stderr`.
    """
    n = len(log_weights)
    zero = np.zeros(0)
    if np.all(log_weights == -math.inf):
        log_z, stderr, ess = -math.inf, math.nan, 0.0
    else:
        log_z = numerics.estimate_log_z(log_weights, np.zeros(n))
        ratios = np.exp(log_weights - log_z)  # w_i / Z, of mean 1
        stderr = math.sqrt(math.fsum((ratios - 1.0) ** 2)) / n
        ess = numerics.effective_sample_size(log_weights)
    ebm.fit_report = FitReport(
        [], zero, zero, zero, 0.0, 0, float(ess), float(log_z), n, pointwise, stderr
    )
    return ebm


@dataclass
class _Weighing:
    """Scores samples for the fit: the base ``a``, the pointwise factors ``b`` and the features."""

    base: Any
    pointwise: list[BooleanScorer]
    exponential: ExponentialScorer | None  # None: no distributional feature

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
        if self.exponential is None:
            return np.zeros((len(xs), 0)), lw.numpy()
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

    def rows(
        self,
        weigh: _Weighing,
        context: Any,
        contexts: Sequence[Any] | None,
        context_distribution: Any,
        n_contexts: int,
    ) -> _Rows:
        """The rows of ``n_samples`` draws split over the contexts, in chunk order on every rank.

        The contexts are resolved as everywhere (:func:`resolve_contexts`), those drawn from a
        distribution keyed by the seed like the samples.
        """
        world = current_world()
        _, chunks = plan_over_contexts(
            "constrain",
            self.seed,
            self.n_samples,
            self.sampling_size,
            context=context,
            contexts=contexts,
            context_distribution=context_distribution,
            n_contexts=n_contexts,
            single_once=True,
            world=world,
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
