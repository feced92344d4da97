"""What QRS costs and how exact it is, at any beta, before sampling (docs/design.md §7.3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from disco import numerics
from disco._beta import beta_from_log, check_beta, checked_log_beta
from disco.distributed import (
    Chunk,
    current_world,
    draw_chunk,
)
from disco.distributions.contexts import plan_over_contexts
from disco.samplers._common import (
    FloatArray,
    at_least_one,
    log_ratios,
    log_scores,
    score_target,
)

__all__ = ["QRSEstimator", "QuasiRejectionSamplerEstimator"]

_DIVERGENCES = ("kl", "tv", "js")


def _divergence_kind(divergence: Any) -> str:
    """``"kl"``, ``"tv"`` or ``"js"`` from a string or a class/object named KL, TV or JS."""
    name = divergence if isinstance(divergence, str) else getattr(divergence, "__name__", None)
    if name is None:
        name = type(divergence).__name__
    kind = str(name).lower()
    if kind not in _DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}: expected 'kl', 'tv' or 'js'")
    return kind


@dataclass
class _Group:
    """One context's samples and log-scores, with the sorted index built on first use."""

    context: Any
    samples: list[Any] | None
    log_p: FloatArray
    log_q: FloatArray
    log_w: FloatArray | None
    ratios: FloatArray
    _index: numerics.QRSIndex | None = field(default=None, repr=False)

    @property
    def index(self) -> numerics.QRSIndex:
        if self._index is None:
            self._index = numerics.QRSIndex(self.ratios, self.log_w)
        return self._index


class QRSEstimator:
    """Estimates QRS's acceptance rate, divergence to the target and feature moments at any β.

    With ``N`` samples ``x_i ~ q`` and ``r_i = P(x_i) / q(x_i)``, QRS at ``β`` accepts a fraction
    ``AR(β) = mean min(r, β) / β`` of proposals and outputs ``p_β ∝ min(P, β q)``; its distance to
    the target and its feature moments are importance-sampling estimates over the same samples.
    The log-ratios are sorted once (in Rust), after which any β, a whole curve, or the β that
    gives a wanted acceptance rate costs O(log N) each.

    Build it from a target and a proposal (it draws ``n_samples`` proposals in batches, with a
    progress bar) or with :meth:`from_log_scores` from precomputed log-scores, optionally
    weighted (e.g. a whole enumerated support, each point weighted by its proposal probability,
    gives exact values). With several contexts (a list or a context distribution), each context
    gets its own samples and every estimate is the mean over contexts at a shared β.

    Parameters
    ----------
    target:
        The EBM: ``log_score(samples, context)`` gives ``log P`` (``-inf`` allowed).
    proposal:
        ``sample(context, sampling_size) -> (samples, log_probs)``.
    context, contexts, context_distribution, n_contexts:
        One context (default), an explicit list, or ``n_contexts`` drawn from a context
        distribution (``sample(n) -> (contexts, log_probs)``).
    n_samples:
        Proposals drawn in all (split evenly over the contexts).
    sampling_size:
        Batch size for drawing and for scoring with the target.
    progress:
        Show a progress bar while drawing.
    seed:
        Seeds the draws, chunk by chunk (``sampling_size`` proposals keyed by
        ``(seed, context, chunk)``; default: a seed from torch's generator). Under
        ``torch.distributed`` the ranks share the chunks and gather the log-scores in chunk
        order, so the index, every estimate and the β for a rate are those of one process.
    """

    def __init__(
        self,
        target: Any,
        proposal: Any,
        *,
        context: Any = "",
        contexts: Sequence[Any] | None = None,
        context_distribution: Any = None,
        n_contexts: int = 8,
        n_samples: int = 10_000,
        sampling_size: int = 256,
        progress: bool = True,
        n_estimation_samples: int | None = None,
        seed: int | None = None,
    ) -> None:
        if n_estimation_samples is not None:  # the original disco's name
            n_samples = n_estimation_samples
        world = current_world()
        chosen, chunks = plan_over_contexts(
            "estimate",
            seed,
            n_samples,
            at_least_one(sampling_size, "sampling_size"),
            context=context,
            contexts=contexts,
            context_distribution=context_distribution,
            n_contexts=n_contexts,
            world=world,
        )
        self.target = target
        self.proposal = proposal
        bar = tqdm(
            total=sum(c.size for c in world.mine(chunks)),
            desc="QRS estimator: sampling",
            disable=not (progress and world.is_main),
            leave=False,
        )

        def scored(chunk: Chunk) -> tuple[list[Any], FloatArray, FloatArray]:
            drawn, log_q = draw_chunk(proposal, chunk)
            bar.update(len(drawn))
            return drawn, score_target(target, drawn, chunk.context), log_q

        with bar:
            parts = world.gather_chunks(chunks, scored)  # in chunk order on every rank
        groups = []
        for position, c in enumerate(chosen):
            mine = [part for chunk, part in zip(chunks, parts) if chunk.position == position]
            drawn = [x for part in mine for x in part[0]]
            log_p = np.concatenate([part[1] for part in mine])
            lq = np.concatenate([part[2] for part in mine])
            groups.append(_Group(c, drawn, log_p, lq, None, log_ratios(log_p, lq)))
        self._groups = groups
        self._feature_cache: dict[tuple[int, int], tuple[Any, FloatArray]] = {}

    @classmethod
    def from_log_scores(
        cls,
        target_log_scores: Any,
        proposal_log_scores: Any,
        *,
        log_weights: Any = None,
        samples: Sequence[Any] | None = None,
        context: Any = "",
        contexts: Sequence[Any] | None = None,
    ) -> QRSEstimator:
        """An estimator over precomputed log-scores, without drawing anything.

        One context: 1-D ``target_log_scores`` and ``proposal_log_scores`` (and optional
        ``log_weights``, for samples not drawn from the proposal; ``samples`` when features are
        to be scored later). Several contexts: ``C x N`` arrays or sequences of 1-D arrays, one
        per context (``contexts`` names them).
        """
        targets = _rows(target_log_scores, "target_log_scores")
        proposals = _rows(proposal_log_scores, "proposal_log_scores")
        weights = None if log_weights is None else _rows(log_weights, "log_weights")
        if len(proposals) != len(targets) or (weights is not None and len(weights) != len(targets)):
            raise ValueError(
                f"length mismatch: {len(targets)} groups of target_log_scores but "
                f"{len(proposals)} of proposal_log_scores"
                + ("" if weights is None else f" and {len(weights)} of log_weights")
            )
        names = list(contexts) if contexts is not None else [context] * len(targets)
        if len(names) != len(targets):
            raise ValueError(f"{len(names)} contexts for {len(targets)} groups of log-scores")
        if samples is not None and len(targets) != 1:
            raise ValueError("samples can only be given for one context")
        this = cls.__new__(cls)
        this.target = None
        this.proposal = None
        this._feature_cache = {}
        groups = []
        for g, (c, t, q) in enumerate(zip(names, targets, proposals)):
            n = t.shape[0]
            if n == 0:
                raise ValueError(f"no samples for context {c!r}: the log-scores are empty")
            lp = log_scores(t, "target_log_scores", n, "from_log_scores")
            lq = log_scores(q, "proposal_log_scores", n, "from_log_scores")
            lw = None
            if weights is not None:
                lw = log_scores(weights[g], "log_weights", n, "from_log_scores")
            kept = None if samples is None else list(samples)
            if kept is not None and len(kept) != n:
                raise ValueError(f"length mismatch: {len(kept)} samples for {n} log-scores")
            groups.append(_Group(c, kept, lp, lq, lw, log_ratios(lp, lq)))
        this._groups = groups
        return this

    def __repr__(self) -> str:
        return (
            f"QRSEstimator(contexts={len(self._groups)}, "
            f"samples={[g.ratios.shape[0] for g in self._groups]})"
        )

    # -- data ---------------------------------------------------------------------------------

    @property
    def contexts(self) -> list[Any]:
        """The contexts, one per group of samples."""
        return [g.context for g in self._groups]

    @property
    def log_z(self) -> float:
        """``log Z`` estimated from the samples (the mean over contexts)."""
        return float(np.mean([g.index.log_z for g in self._groups]))

    def log_ratios(self, context_index: int = 0) -> FloatArray:
        """``log P - log q`` of one context's samples."""
        return self._groups[context_index].ratios.copy()

    def for_context(self, context_index: int) -> QRSEstimator:
        """An estimator over one of the contexts only."""
        this = QRSEstimator.__new__(QRSEstimator)
        this.target, this.proposal = self.target, self.proposal
        this._groups = [self._groups[context_index]]
        this._feature_cache = {}
        return this

    # -- estimates ----------------------------------------------------------------------------

    def acceptance_rate_at_beta(
        self, beta: float | None = None, *, log_beta: float | None = None
    ) -> float:
        """Expected fraction of proposals QRS accepts at ``beta`` (or at ``exp(log_beta)``).

        ``log_beta`` serves where β is past float range, e.g. for an EBM whose unnormalised
        scores are far from 1 (see :meth:`log_beta_for_acceptance_rate`).
        """
        at = _at(beta, log_beta)
        return float(np.mean([g.index.acceptance_rate(**at) for g in self._groups]))

    def divergence_at_beta(
        self, beta: float | None = None, divergence: Any = "kl", *, log_beta: float | None = None
    ) -> float:
        """``D(p ‖ p_β)`` between the target and QRS's output: ``"kl"``, ``"tv"`` or ``"js"``."""
        kind = _divergence_kind(divergence)
        at = _at(beta, log_beta)
        return float(np.mean([g.index.divergence(kind, **at) for g in self._groups]))  # type: ignore[arg-type]

    def feature_moment_at_beta(
        self, beta: float | None = None, feature: Any = None, *, log_beta: float | None = None
    ) -> float:
        """``E_{p_β}[feature]``, the feature's mean over QRS's output at ``beta``.

        ``feature`` is a scorer (``score(samples, context)``), a function
        ``f(samples, context)``, or its values on the samples (one array per context).
        """
        if feature is None:
            raise ValueError("give the feature whose moment to estimate")
        at = _at(beta, log_beta)
        return float(
            np.mean(
                [
                    g.index.feature_moments(self._feature_values(g, k, feature), **at)
                    for k, g in enumerate(self._groups)
                ]
            )
        )

    def beta_for_acceptance_rate(self, rate: float) -> float:
        """The β at which QRS accepts ``rate`` of the proposals (exact on the samples).

        One context: solved in closed form on the sorted ratios. Several: the mean acceptance
        rate over contexts is solved for by bisection between the contexts' own solutions.
        """
        return beta_from_log(self.log_beta_for_acceptance_rate(rate))

    def log_beta_for_acceptance_rate(self, rate: float) -> float:
        """``log`` of :meth:`beta_for_acceptance_rate` (no overflow for huge ratios)."""
        rate = float(rate)
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate is {rate}: an acceptance rate must lie in (0, 1]")
        top = float(np.mean([g.index.max_acceptance_rate for g in self._groups]))
        if rate > top * (1 + 1e-14):
            raise ValueError(
                f"rate is {rate}: no beta accepts more than {top}, the share of the samples "
                "where the target is nonzero"
            )
        if len(self._groups) == 1:
            return float(self._groups[0].index.log_beta_for_acceptance_rate(rate))
        # At each context's own solution its rate is `rate` (or its maximum, when lower): the
        # mean is at most `rate` at the largest of them and at its maximum `top >= rate` below
        # every ratio, so the answer lies in between.
        own = [
            g.index.log_beta_for_acceptance_rate(min(rate, g.index.max_acceptance_rate))
            for g in self._groups
        ]
        lo = min(*own, *(g.index.min_log_ratio for g in self._groups))
        hi = max(own)
        mean_ar = lambda b: float(  # noqa: E731
            np.mean([g.index.acceptance_rate(log_betas=b) for g in self._groups])
        )
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if mean_ar(mid) >= rate:
                lo = mid
            else:
                hi = mid
        return lo

    def curve(
        self,
        betas: Any = None,
        *,
        log_betas: Any = None,
        features: Sequence[Any] | Any = None,
        js: bool = False,
    ) -> numerics.QRSCurve:
        """The trade-off at many betas, averaged over contexts, as a table (``rows()``, markdown).

        ``betas`` defaults to 50 points from the smallest to the largest ratio ``P/q`` seen.
        ``features`` (one feature as in :meth:`feature_moment_at_beta`, or a list of them) adds
        their moments: ``B`` values for one feature, ``B x K`` for a list.
        """
        if betas is None and log_betas is None:
            log_betas = self.default_log_betas()
        per = [g.index.curve(betas, log_betas=log_betas, js=js) for g in self._groups]
        moments = None
        if features is not None:
            many = isinstance(features, (list, tuple)) and not _is_one_value(features[0])
            feats = list(features) if many else [features]
            columns = []
            for k, g in enumerate(self._groups):
                values = np.column_stack([self._feature_values(g, k, f) for f in feats])
                columns.append(g.index.feature_moments(values, log_betas=per[k].log_betas))
            moments = np.mean(columns, axis=0)
            if not many:
                moments = moments[:, 0]

        def mean(key: str) -> Any:
            return np.mean([getattr(c, key) for c in per], axis=0)

        return numerics.QRSCurve(
            log_betas=per[0].log_betas,
            acceptance_rate=mean("acceptance_rate"),
            log_z_beta=mean("log_z_beta"),
            kl=mean("kl"),
            tv=mean("tv"),
            js=mean("js") if js else None,
            moments=moments,
            log_z=self.log_z,
        )

    def default_log_betas(self, points: int = 50) -> FloatArray:
        """``points`` values of ``log β`` from the smallest to the largest ratio seen."""
        lo = min(g.index.min_log_ratio for g in self._groups)
        hi = max(g.index.max_log_ratio for g in self._groups)
        if hi - lo < 1e-12:
            lo, hi = lo - 1.0, hi + 1.0
        return np.linspace(lo, hi, int(points))

    def plot(
        self,
        path: str | Path,
        betas: Any = None,
        *,
        divergences: Sequence[str] = ("kl", "tv"),
        title: str | None = None,
    ) -> Path:
        """Write a PNG of acceptance rate (x, log scale) against divergence to ``path``.

        Needs matplotlib (``pip install matplotlib``).
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as err:  # pragma: no cover - exercised with matplotlib hidden
            raise ImportError(
                "QRSEstimator.plot needs matplotlib; install it with pip install matplotlib"
            ) from err
        kinds = [_divergence_kind(d) for d in divergences]
        curve = self.curve(betas, js="js" in kinds)
        figure = Figure(figsize=(6, 4), dpi=120)
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        labels = {"kl": "KL(p ‖ p_β)", "tv": "TV(p, p_β)", "js": "JS(p, p_β)"}
        for kind in kinds:
            ax.plot(curve.acceptance_rate, getattr(curve, kind), marker=".", label=labels[kind])
        ax.set_xscale("log")
        ax.set_xlabel("acceptance rate")
        ax.set_ylabel("divergence to the target")
        ax.set_title(title or "QRS trade-off")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        figure.tight_layout()
        out = Path(path)
        figure.savefig(out, format="png")
        return out

    # -- features -----------------------------------------------------------------------------

    def _feature_values(self, group: _Group, k: int, feature: Any) -> FloatArray:
        key = (k, id(feature))
        cached = self._feature_cache.get(key)
        if cached is not None and cached[0] is feature:
            return cached[1]
        n = group.ratios.shape[0]
        if hasattr(feature, "score") or callable(feature):
            if group.samples is None:
                raise ValueError(
                    "this estimator was built from log-scores without samples: give the "
                    "feature's values on the samples instead of a scorer"
                )
            score: Callable[..., Any] = feature.score if hasattr(feature, "score") else feature
            values = numerics.as_vector(score(group.samples, group.context), "feature values")
        else:
            per_group = feature if len(self._groups) == 1 else feature[k]
            values = numerics.as_vector(per_group, "feature values")
        if values.shape[0] != n:
            raise ValueError(f"length mismatch: {values.shape[0]} feature values for {n} samples")
        self._feature_cache[key] = (feature, values)
        return values


def _is_one_value(x: Any) -> bool:
    """One feature value (so a list of them is one feature's values, not a list of features)."""
    return isinstance(x, (int, float, np.number))


def _at(beta: float | None, log_beta: float | None) -> dict[str, float]:
    """The keyword for a QRSIndex query: ``betas=`` or ``log_betas=``, exactly one given."""
    if beta is not None and log_beta is None:
        return {"betas": check_beta(beta)}
    return {"log_betas": checked_log_beta(beta, log_beta)}


def _rows(values: Any, name: str) -> list[FloatArray]:
    """One 1-D array per context from a 1-D array, a 2-D array or a sequence of 1-D arrays."""
    if isinstance(values, (list, tuple)) and values and np.ndim(_plain(values[0])) == 1:
        return [numerics.as_vector(v, name) for v in values]
    array = np.asarray(_plain(values), dtype=np.float64)
    if array.ndim == 1:
        return [numerics.as_vector(array, name)]
    if array.ndim == 2:
        return [numerics.as_vector(row, name) for row in array]
    raise ValueError(f"{name} must be 1-D (one context) or 2-D (contexts x samples)")


def _plain(x: Any) -> Any:
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else x


QuasiRejectionSamplerEstimator = QRSEstimator
"""The name the original disco used."""
